"""Log-mel features of one window, as Whisper's encoder expects them (n_mels x 3000).

The same numbers as faster-whisper's FeatureExtractor (and OpenAI's log_mel_spectrogram), within
float32 rounding, at a quarter of its cost: a float32 STFT without per-frame Python, the mel filterbank
as the sparse matrix it is (each FFT bin feeds at most two filters, and BLAS threads would bill their
spinning), frames that see only padding skipped, reused buffers, and the log in the natural base, which
numpy vectorises (log10 it does not).
"""

from __future__ import annotations

import math
import threading
from functools import lru_cache
from typing import Literal

import numpy as np
import scipy.fft
import scipy.sparse
from faster_whisper.feature_extractor import FeatureExtractor
from numpy.lib.stride_tricks import sliding_window_view

from whisper_triton.audio import SAMPLE_RATE

WINDOW_SECONDS = 30
WINDOW_SAMPLES = WINDOW_SECONDS * SAMPLE_RATE
HOP_LENGTH = 160
FRAMES = WINDOW_SAMPLES // HOP_LENGTH  # 3000, what the encoder takes
N_FFT = 400

_EDGE = N_FFT // 2  # the STFT's centring pad on each side
_HANN = np.hanning(N_FFT + 1)[:-1].astype(np.float32)  # periodic, as torch.hann_window
# (log10(x) + 4) / 4 == ln(x * 1e4) / (4 ln 10): the filterbank carries the 1e4, the log's scale is one multiply.
_POWER_SCALE = 1e4
_LOG_SCALE = np.float32(1 / (4 * math.log(10)))
_FRAME_BLOCK = 128  # frames per FFT call


@lru_cache(maxsize=4)
def _mel_filters(n_mels: int) -> scipy.sparse.csr_matrix:
    """faster-whisper's (librosa's Slaney) filterbank, stored sparse, times _POWER_SCALE."""
    filters = FeatureExtractor.get_mel_filters(SAMPLE_RATE, N_FFT, n_mels) * _POWER_SCALE
    return scipy.sparse.csr_matrix(filters.astype(np.float32))


def window_features(
    samples: np.ndarray, n_mels: int, pad: Literal["audio", "features"] = "audio"
) -> tuple[np.ndarray, int]:
    """Features of up to 30 s of audio.

    pad="audio" zero-pads the audio to 30 s before the STFT, as OpenAI's Whisper does for one
    window and as the encoder was trained. pad="features" is what OpenAI's transcribe() and
    faster-whisper do instead: the log-mel of the audio alone, normalised over its own frames, then
    padded with 0.0 up to 3000 frames.

    Returns the (n_mels, 3000) float32 array and the number of frames that hold audio.
    """
    if len(samples) > WINDOW_SAMPLES:
        raise ValueError("a window holds at most 30 s of audio")
    samples = np.asarray(samples, dtype=np.float32)
    num_frames = max(1, min(FRAMES, -(-len(samples) // HOP_LENGTH)))
    if pad == "audio":
        return _audio_padded(samples, n_mels), num_frames
    if pad == "features":
        return _feature_padded(samples, n_mels), num_frames
    raise ValueError(f"pad must be 'audio' or 'features', not {pad!r}")


def _audio_padded(samples: np.ndarray, n_mels: int) -> np.ndarray:
    # Frames past the audio see only zeros (mel power 0): their value is known without an FFT.
    active = min(FRAMES, (len(samples) + _EDGE + HOP_LENGTH - 1) // HOP_LENGTH)
    mel = _mel_power(_reflect_padded(samples, WINDOW_SAMPLES), active, n_mels)
    silence = _normalize(mel)
    if active == FRAMES:
        return mel
    features = np.empty((n_mels, FRAMES), dtype=np.float32)
    features[:, :active] = mel
    features[:, active:] = silence
    return features


def _feature_padded(samples: np.ndarray, n_mels: int) -> np.ndarray:
    # As FeatureExtractor(padding=160) and transcribe.py's [..., :-1]: the frames of the audio plus one
    # (the STFT's last frame, dropped by both) set the normalisation; then one more frame is dropped.
    frames = len(samples) // HOP_LENGTH + 1
    mel = _mel_power(_reflect_padded(samples, len(samples) + HOP_LENGTH), frames, n_mels)
    _normalize(mel)
    features = np.zeros((n_mels, FRAMES), dtype=np.float32)
    kept = min(FRAMES, frames - 1)
    features[:, :kept] = mel[:, :kept]
    return features


class _Scratch(threading.local):
    """Per-thread buffers for the padded audio and the power spectrum, reused from call to call.

    Fresh pages of their size (when malloc takes them from mmap) cost more in page faults than the
    whole FFT.
    """

    def __init__(self) -> None:
        self.padded = np.empty(WINDOW_SAMPLES + HOP_LENGTH + 2 * _EDGE, dtype=np.float32)
        self.power = np.empty((N_FFT // 2 + 1) * (FRAMES + 1), dtype=np.float32)


_scratch = _Scratch()


def _reflect_padded(samples: np.ndarray, length: int) -> np.ndarray:
    """`samples` zero-extended to `length`, then edge-padded as np.pad(mode="reflect") does."""
    if length <= _EDGE:  # np.pad reflects again and again when the signal is shorter than the pad
        return np.pad(np.pad(samples, (0, length - len(samples))), _EDGE, mode="reflect")
    padded = _scratch.padded[: length + 2 * _EDGE]
    padded[_EDGE : _EDGE + len(samples)] = samples
    padded[_EDGE + len(samples) : _EDGE + length] = 0.0
    padded[:_EDGE] = padded[2 * _EDGE : _EDGE : -1]
    padded[_EDGE + length :] = padded[_EDGE + length - 2 : length - 2 : -1]
    return padded


def _mel_power(padded: np.ndarray, frames: int, n_mels: int) -> np.ndarray:
    """Mel power (n_mels, frames), times _POWER_SCALE, of the first `frames` Hann-windowed frames of `padded`.

    A block of frames at a time, so that each block's temporaries stay in the CPU cache and below
    malloc's mmap threshold: on the whole window at once, the same work took a third longer.
    """
    windows = sliding_window_view(padded, N_FFT)[::HOP_LENGTH]
    power = _scratch.power[: (N_FFT // 2 + 1) * frames].reshape(N_FFT // 2 + 1, frames)
    for start in range(0, frames, _FRAME_BLOCK):
        end = min(frames, start + _FRAME_BLOCK)
        spectrum = scipy.fft.rfft(windows[start:end] * _HANN, axis=-1, overwrite_x=True)  # complex64
        block = np.square(spectrum.real)
        block += np.square(spectrum.imag)
        power[:, start:end] = block.T
    mel: np.ndarray = _mel_filters(n_mels) @ power
    return mel


def _normalize(mel: np.ndarray) -> float:
    """In place: Whisper's log10, clamped at 1e-10 and at 8 below the maximum, then (x + 4) / 4.

    `mel` is the power times _POWER_SCALE. Clamps before the log (the same, as the log is monotonic).
    Returns what a silent frame (mel power 0) becomes under the same normalisation.
    """
    floor = max(1e-10 * _POWER_SCALE, float(mel.max(initial=0.0)) * 1e-8)
    np.maximum(mel, np.float32(floor), out=mel)
    np.log(mel, out=mel)
    mel *= _LOG_SCALE
    return math.log(floor) * float(_LOG_SCALE)
