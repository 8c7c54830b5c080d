"""Silero VAD v6, as faster-whisper runs it, at a fraction of its CPU cost.

faster-whisper feeds every 512-sample frame through the whole ONNX model in onnxruntime and then walks
the probabilities in Python, one frame at a time. Here the encoder (a windowed STFT and four small
convolutions) runs over many frames at once as a real FFT plus a few matrix products, and the speech
spans are found by jumping from one threshold crossing to the next. Only the LSTM stays sequential: its
state remembers about a minute of audio, so the audio cannot be cut into chunks that run side by side,
and onnxruntime steps it about three times faster than NumPy can; it runs as a one-node graph cut
from the same file. Weights come straight from the file's protobuf, without the `onnx` package.
"""

from __future__ import annotations

import collections
import functools
import importlib.util
import math
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import as_strided


@dataclass(frozen=True)
class VadOptions:
    """Same meaning and defaults as faster_whisper.vad.VadOptions."""

    threshold: float = 0.5
    neg_threshold: float | None = None
    min_speech_duration_ms: int = 0
    max_speech_duration_s: float = float("inf")
    min_silence_duration_ms: int = 2000
    speech_pad_ms: int = 400


FRAME_SAMPLES = 512
CONTEXT_SAMPLES = 64  # each frame is preceded by the last samples of the frame before it
_WINDOW = 256  # STFT window and hop, in samples
_HOP = 128
# Frames per encoder pass (its buffers stay in cache).
_ENCODE_FRAMES = 512
# Silero's LSTM, run over a long stretch without speech, grows deaf: speech after 20 s of room tone was
# found 3.5 s late, after 45 s 12 s late or not at all. Every CHUNK_FRAMES (8.2 s) it starts afresh
# from the audio WARM_FRAMES (1 s) before; the chunks then run side by side, GROUP_CHUNKS to a batch
# (matrix products instead of one frame's vector at a time: faster too).
LstmState = tuple[np.ndarray, np.ndarray]  # the LSTM's (h, c), each (1, batch, 128)
CHUNK_FRAMES = 256
WARM_FRAMES = 32
GROUP_CHUNKS = 32
THREADS = 2  # groups computed at once for one request (its wall time; the CPU time is the same)


class SileroVad:
    """The model's weights, with the encoder in NumPy and the LSTM in onnxruntime."""

    def __init__(self, path: Path) -> None:
        model = _OnnxModel(path.read_bytes())
        w = model.initializers
        _check_stft(model)
        self._conv0 = _taps(w["encoder.conv_layers.0.weight"])
        self._conv1 = _taps(w["encoder.conv_layers.1.weight"])
        # The last two convolutions see one position padded with zeros: the zero taps drop out.
        self._conv2 = _taps(w["encoder.conv_layers.2.weight"])[64:]
        self._conv3 = np.ascontiguousarray(w["encoder.conv_layers.3.weight"][:, :, 1].T)
        self._bias = [w[f"encoder.conv_layers.{i}.bias"] for i in range(4)]
        self._decoder = np.ascontiguousarray(w["decoder.conv1d.weight"][0, :, 0])
        self._decoder_bias = np.float32(w["decoder.conv1d.bias"][0])
        self._lstm = _LstmSession(model)

    @classmethod
    def load(cls, path: Path | None = None) -> SileroVad:
        """The model in `path` (default: faster-whisper's silero_vad_v6.onnx), loaded once per process."""
        return _load(path or _default_path())

    def probabilities(self, samples: np.ndarray, gains: np.ndarray | None = None) -> np.ndarray:
        """Speech probability of each 512-sample frame, as faster-whisper computes them (float32).

        Like faster-whisper, the audio is padded with 1 to 512 zeros to whole frames, and the last 64
        samples of the padded audio are zeroed (a side effect of its context handling). `gains` (one per
        frame, see `frame_count`) scale the frames as if the audio had been amplified (the model's input
        is the STFT magnitude, linear in the audio), without a copy of the audio.
        """
        _, probs = collections.deque(self.probability_prefixes(samples, gains), maxlen=1).pop()
        return probs

    def probability_prefixes(self, samples: np.ndarray,
                             gains: np.ndarray | None = None) -> Generator[tuple[int, np.ndarray], None, None]:
        """`probabilities` as they are computed: yields `(frames, probs)` each time more of the audio is
        done, where `probs[:frames]` are final (the same array each time); the last has every frame.

        So that the windows of the start of a long file can be decoded while VAD runs on the rest.
        Closing the iterator early stops the computation.
        """
        num_frames = frame_count(len(samples))
        if gains is not None and len(gains) != num_frames:
            raise ValueError(f"{len(gains)} gains for {num_frames} frames")
        probs = np.empty(num_frames, dtype=np.float32)
        # The first chunk from the initial state, as faster-whisper does; each later one from the initial
        # state WARM_FRAMES before it, GROUP_CHUNKS of them in one batched LSTM call. The groups are
        # independent: THREADS of them are computed at once (NumPy, SciPy and onnxruntime release the GIL).
        first_stop = min(CHUNK_FRAMES, num_frames)
        starts = list(range(CHUNK_FRAMES, num_frames, CHUNK_FRAMES))
        groups = [starts[i : i + GROUP_CHUNKS] for i in range(0, len(starts), GROUP_CHUNKS)]

        def first_chunk() -> None:
            hidden = self._lstm.run(self._features(samples, 0, first_stop, num_frames, gains)[:, None, :])
            probs[:first_stop] = self._decode(hidden[:, 0])

        def group(chunk_starts: list[int]) -> None:
            hidden = self._lstm.run(self._batch(samples, chunk_starts, num_frames, gains))
            for column, first in enumerate(chunk_starts):
                stop = min(first + CHUNK_FRAMES, num_frames)
                probs[first:stop] = self._decode(hidden[WARM_FRAMES : WARM_FRAMES + stop - first, column])

        if not groups:
            first_chunk()
            yield num_frames, probs
            return
        pool = ThreadPoolExecutor(min(THREADS, len(groups) + 1))
        try:
            done = [pool.submit(first_chunk), *(pool.submit(group, chunk_starts) for chunk_starts in groups)]
            stops = [first_stop, *(min(g[-1] + CHUNK_FRAMES, num_frames) for g in groups)]
            for future, stop in zip(done, stops, strict=True):  # submitted in order, so done about in order
                future.result()
                yield stop, probs
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def encode_frames(self, audio: np.ndarray, gains: np.ndarray | None = None) -> np.ndarray:
        """LSTM inputs (n, 128) of whole frames: `audio` holds the context of the first frame
        (CONTEXT_SAMPLES), then n frames; `gains` one per frame. For audio that arrives as it is spoken."""
        n = max(0, (len(audio) - CONTEXT_SAMPLES) // FRAME_SAMPLES)
        features = np.empty((n, 128), dtype=np.float32)
        for start in range(0, n, _ENCODE_FRAMES):
            end = min(start + _ENCODE_FRAMES, n)
            piece = np.ascontiguousarray(audio[start * FRAME_SAMPLES : end * FRAME_SAMPLES + CONTEXT_SAMPLES],
                                         dtype=np.float32)
            self._encode(piece, features[start:end], None if gains is None else gains[start:end])
        return features

    def run_lstm(self, features: np.ndarray, state: LstmState | None = None) -> tuple[np.ndarray, LstmState]:
        """Speech probabilities of `features` (frames, 128) from `state` (None: the initial state), and the
        state after the last frame."""
        hidden, after = self._lstm.run_from(features[:, None, :], state)
        return self._decode(hidden[:, 0]), after

    def _batch(self, samples: np.ndarray, starts: list[int], num_frames: int,
               gains: np.ndarray | None) -> np.ndarray:
        """LSTM inputs (WARM_FRAMES + CHUNK_FRAMES, chunks, 128) of the chunks starting at `starts`, each
        preceded by its warm-up frames; zeros after the audio's end (the LSTM is causal: they change
        nothing before them)."""
        base, stop = starts[0] - WARM_FRAMES, min(starts[-1] + CHUNK_FRAMES, num_frames)
        features = self._features(samples, base, stop, num_frames, gains)
        batch = np.zeros((WARM_FRAMES + CHUNK_FRAMES, len(starts), 128), dtype=np.float32)
        for column, first in enumerate(starts):
            rows = features[first - WARM_FRAMES - base : first + CHUNK_FRAMES - base]
            batch[: len(rows), column] = rows
        return batch

    def _features(self, samples: np.ndarray, first: int, stop: int, num_frames: int,
                  gains: np.ndarray | None = None) -> np.ndarray:
        """The LSTM inputs of frames [first, stop)."""
        features = np.empty((stop - first, 128), dtype=np.float32)
        for start in range(first, stop, _ENCODE_FRAMES):
            end = min(start + _ENCODE_FRAMES, stop)
            self._encode(_frame_audio(samples, start, end, num_frames), features[start - first : end - first],
                         None if gains is None else gains[start:end])
        return features

    def _encode(self, audio: np.ndarray, out: np.ndarray, gains: np.ndarray | None = None) -> None:
        """LSTM inputs of the frames in `audio` (the context of the first frame, then whole frames)."""
        n = len(out)
        stft = _stft_windows(audio, n)
        magnitudes = np.abs(scipy.fft.rfft(stft, axis=-1, overwrite_x=True)).reshape(n, -1)
        if gains is not None:
            magnitudes *= gains[:, None]
        # Each conv reads a frame's neighbouring positions as one strided row: no im2col copies.
        bins = magnitudes.shape[1] // 4
        hidden0 = np.empty((n, 4, 128), dtype=np.float32)
        np.matmul(magnitudes[:, : 2 * bins], self._conv0[bins:], out=hidden0[:, 0])
        np.matmul(magnitudes[:, : 3 * bins], self._conv0, out=hidden0[:, 1])
        np.matmul(magnitudes[:, bins:], self._conv0, out=hidden0[:, 2])
        np.matmul(magnitudes[:, 2 * bins :], self._conv0[: 2 * bins], out=hidden0[:, 3])
        _relu(hidden0, self._bias[0])
        flat0 = hidden0.reshape(n, -1)
        hidden1 = np.empty((n, 2, 64), dtype=np.float32)
        np.matmul(flat0[:, :256], self._conv1[128:], out=hidden1[:, 0])
        np.matmul(flat0[:, 128:], self._conv1, out=hidden1[:, 1])
        _relu(hidden1, self._bias[1])
        hidden2 = _relu(hidden1.reshape(n, -1) @ self._conv2, self._bias[2])
        np.matmul(hidden2, self._conv3, out=out)
        _relu(out, self._bias[3])

    def _decode(self, hidden: np.ndarray) -> np.ndarray:
        logits = np.maximum(hidden, 0) @ self._decoder + self._decoder_bias
        with np.errstate(over="ignore"):
            return (1 / (1 + np.exp(-logits))).astype(np.float32)


def _stft_windows(audio: np.ndarray, n: int) -> np.ndarray:
    """Hann-windowed STFT frames, 4 per VAD frame, as (n, 4, 256) float32.

    The ONNX graph reflect-pads each 576-sample frame by 128 on both sides and drops the first STFT
    position, so its positions start at 0, 128, 256 and 384 of the frame; the last one runs 64 samples
    past the frame's end, into its mirror image.
    """
    frame = FRAME_SAMPLES * 4  # bytes between frames
    windows = np.empty((n, 4, _WINDOW), dtype=np.float32)
    inside = as_strided(audio, shape=(n, 3, _WINDOW), strides=(frame, _HOP * 4, 4), writeable=False)
    np.multiply(inside, _HANN, out=windows[:, :3])
    frames = as_strided(audio, shape=(n, FRAME_SAMPLES + CONTEXT_SAMPLES), strides=(frame, 4), writeable=False)
    last = 3 * _HOP
    np.multiply(frames[:, last:], _HANN[:-CONTEXT_SAMPLES], out=windows[:, 3, :-CONTEXT_SAMPLES])
    mirror = frames[:, -2 : -2 - CONTEXT_SAMPLES : -1]
    np.multiply(mirror, _HANN[-CONTEXT_SAMPLES:], out=windows[:, 3, -CONTEXT_SAMPLES:])
    return windows


def frame_count(num_samples: int) -> int:
    """Frames of `probabilities` for audio of `num_samples` (padded to whole frames, at least one)."""
    return num_samples // FRAME_SAMPLES + 1


_HANN = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(_WINDOW) / _WINDOW)).astype(np.float32)


def _frame_audio(samples: np.ndarray, start: int, stop: int, num_frames: int) -> np.ndarray:
    """Frames [start, stop) of the padded audio, preceded by the context of frame `start`."""
    begin, end = start * FRAME_SAMPLES - CONTEXT_SAMPLES, stop * FRAME_SAMPLES
    # faster-whisper zeroes the last 64 samples of the padded audio, real ones included.
    audible = min(len(samples), num_frames * FRAME_SAMPLES - CONTEXT_SAMPLES)
    if begin >= 0 and end <= audible:
        return np.ascontiguousarray(samples[begin:end], dtype=np.float32)
    audio = np.zeros(end - begin, dtype=np.float32)
    low, high = max(begin, 0), min(end, audible)
    if high > low:
        audio[low - begin : high - begin] = samples[low:high]
    return audio


def _taps(weight: np.ndarray) -> np.ndarray:
    """A (out, in, 3) kernel as a (3 * in, out) matrix, rows ordered by tap, then input channel."""
    out_channels = weight.shape[0]
    return np.ascontiguousarray(weight.transpose(2, 1, 0).reshape(-1, out_channels))


def _relu(x: np.ndarray, bias: np.ndarray) -> np.ndarray:
    x += bias
    return np.maximum(x, 0, out=x)


def _check_stft(model: _OnnxModel) -> None:
    """Fails on a model whose STFT is not the one `_stft_windows` hard-codes."""
    basis = model.initializers["encoder.feature_extractor.forward_basis_buffer"][:, 0]
    angles = 2 * np.pi * np.outer(np.arange(_WINDOW // 2 + 1), np.arange(_WINDOW)) / _WINDOW
    expected = np.concatenate([np.cos(angles), -np.sin(angles)]) * _HANN
    pad = model.node("Pad")
    if (
        basis.shape != expected.shape
        or not np.allclose(basis, expected, atol=1e-5)
        or model.attribute(pad, "mode") != b"reflect"
        or model.initializers[pad.inputs[1]].tolist() != [0, _HOP, 0, _HOP]
    ):
        raise ValueError("unexpected Silero VAD feature extractor")


class _LstmSession:
    """The model's LSTM node alone, in onnxruntime: a graph cut from the same file."""

    def __init__(self, model: _OnnxModel) -> None:
        import onnxruntime

        node = model.node("LSTM")
        self._input = node.inputs[0]
        self._state = node.inputs[5:7]
        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = 1
        options.log_severity_level = 4
        self._session = onnxruntime.InferenceSession(
            model.subgraph(node, {self._input: ("frames", "batch", 128), self._state[0]: (1, "batch", 128),
                                  self._state[1]: (1, "batch", 128)},
                           {node.outputs[0]: ("frames", 1, "batch", 128)}),
            providers=["CPUExecutionProvider"],
            sess_options=options,
        )

    def run(self, features: np.ndarray) -> np.ndarray:
        """Hidden states (frames, batch, 128) after each frame of `features` (frames, batch, 128), each
        sequence from the initial (zero) state."""
        return self.run_from(features)[0]

    def run_from(self, features: np.ndarray, state: LstmState | None = None) -> tuple[np.ndarray, LstmState]:
        """`run` from a given state (h, c), each (1, batch, 128); also the state after the last frame."""
        if state is None:
            zeros = np.zeros((1, features.shape[1], 128), dtype=np.float32)
            state = (zeros, zeros)
        feeds = {self._input: features, self._state[0]: state[0], self._state[1]: state[1]}
        hidden, h, c = self._session.run(None, feeds)
        return hidden[:, 0], (h, c)


def _default_path() -> Path:
    # find_spec locates the package without importing it (and ctranslate2 with it).
    spec = importlib.util.find_spec("faster_whisper")
    if spec is None or spec.origin is None:
        raise RuntimeError("faster-whisper, which ships the Silero VAD model, is not installed")
    return Path(spec.origin).parent / "assets" / "silero_vad_v6.onnx"


@functools.lru_cache(maxsize=4)
def _load(path: Path) -> SileroVad:
    return SileroVad(path)


# --------------------------------------------------------------------------------------------------
# Speech spans


def speech_timestamps(
    probs: np.ndarray, num_samples: int, options: VadOptions, sampling_rate: int = 16000
) -> list[tuple[int, int]]:
    """Speech regions [start, end) in samples: exactly what faster_whisper.vad.get_speech_timestamps returns
    (its dicts' start/end) for audio of `num_samples` samples whose model output is `probs`."""
    scan = _SpanScan(probs, num_samples, options, sampling_rate)
    frame = scan.next_event(0)
    while frame < len(probs):
        scan.step(frame)
        frame = scan.next_event(frame + 1)
    return scan.finish()


class SettledSpeech:
    """What `speech_timestamps` will return for the whole audio, known from the probabilities of its first
    frames as they arrive (`settled`): faster-whisper's state machine run on, frame by frame."""

    def __init__(self, num_samples: int, options: VadOptions, sampling_rate: int = 16000) -> None:
        self._scan = _SpanScan(np.empty(0, dtype=np.float32), num_samples, options, sampling_rate)
        self._options, self._rate = options, sampling_rate
        self._from = 0  # the frame after the last one stepped

    def settled(self, probs: np.ndarray, frames: int) -> tuple[list[tuple[int, int]], int]:
        """The regions no later frame can change (the first ones of the whole audio's, exactly), and the
        sample before which nothing can change any more, once `probs[:frames]` are known.

        The state machine is causal: a region it has closed stays closed. Only its padding looks ahead (a
        region's end depends on where the next one starts), so the last closed region is not settled.
        """
        scan = self._scan
        if frames >= len(probs):  # the whole audio: everything is settled
            return speech_timestamps(probs, scan.num_samples, self._options, self._rate), scan.num_samples
        self._run_to(probs, frames)
        padded = _padded([list(s) for s in scan.speeches], scan.speech_pad, scan.num_samples)
        pad = int(scan.speech_pad)
        frontier = frames * FRAME_SAMPLES - pad
        if scan.triggered:
            frontier = min(frontier, scan.start - pad)
        if padded:
            frontier = min(frontier, padded[-1][0])
        return padded[:-1], max(0, frontier)

    def finish(self, probs: np.ndarray) -> list[tuple[int, int]]:
        """The whole audio's regions once every probability is known: `speech_timestamps(probs, ...)`, from
        the frames already stepped on (the scan is over after it)."""
        self._run_to(probs, len(probs))
        return self._scan.finish()

    def _run_to(self, probs: np.ndarray, frames: int) -> None:
        """Steps the state machine on to frame `frames` (exclusive) of `probs`, whose earlier frames it saw."""
        scan = self._scan
        known = len(scan.probs)
        if frames > known:
            more = np.asarray(probs[known:frames], dtype=np.float64)
            scan.high = np.concatenate([scan.high, known + np.flatnonzero(more >= scan.threshold)])
            scan.low = np.concatenate([scan.low, known + np.flatnonzero(more < scan.neg_threshold)])
            scan.probs = probs[:frames]
        frame = scan.next_event(self._from)
        while frame < frames:
            scan.step(frame)
            self._from = frame + 1
            frame = scan.next_event(frame + 1)


def get_speech_timestamps(samples: np.ndarray, options: VadOptions | None = None) -> list[tuple[int, int]]:
    """Speech regions [start, end) of 16 kHz `samples`, as faster-whisper's VAD finds them."""
    probs = SileroVad.load().probabilities(samples)
    return speech_timestamps(probs, len(samples), options or VadOptions())


class _SpanScan:
    """faster-whisper's per-frame state machine, run only on the frames where something can change.

    `step` is its loop body, statement for statement; `next_event` finds the next frame whose
    probability or position can change the state, so the frames in between are skipped.
    """

    def __init__(self, probs: np.ndarray, num_samples: int, options: VadOptions, rate: int) -> None:
        self.probs, self.num_samples = probs, num_samples
        self.threshold = options.threshold
        neg = options.neg_threshold
        self.neg_threshold = max(self.threshold - 0.15, 0.01) if neg is None else neg
        self.min_speech = rate * options.min_speech_duration_ms / 1000
        self.speech_pad = rate * options.speech_pad_ms / 1000
        self.max_speech = rate * options.max_speech_duration_s - FRAME_SAMPLES - 2 * self.speech_pad
        self.min_silence = rate * options.min_silence_duration_ms / 1000
        self.min_silence_at_max_speech = rate * 98 / 1000
        # faster-whisper compares each float32 probability, as a scalar, with a Python float: in float64.
        probs64 = np.asarray(probs, dtype=np.float64)
        self.high = np.flatnonzero(probs64 >= self.threshold)
        self.low = np.flatnonzero(probs64 < self.neg_threshold)
        self.triggered = False
        self.start = self.temp_end = self.prev_end = self.next_start = 0
        self.speeches: list[list[int]] = []

    def step(self, i: int) -> None:
        """One iteration of faster-whisper's loop, on frame i."""
        prob, pos = float(self.probs[i]), FRAME_SAMPLES * i
        if prob >= self.threshold and self.temp_end:
            self.temp_end = 0
            if self.next_start < self.prev_end:
                self.next_start = pos
        if prob >= self.threshold and not self.triggered:
            self.triggered, self.start = True, pos
            return
        if self.triggered and pos - self.start > self.max_speech:
            if self.prev_end:
                self.speeches.append([self.start, self.prev_end])
                # previously reached silence (< neg_threshold) and is still not speech (< threshold)
                if self.next_start < self.prev_end:
                    self.triggered = False
                else:
                    self.start = self.next_start
                self.prev_end = self.next_start = self.temp_end = 0
            else:
                self.speeches.append([self.start, pos])
                self.prev_end = self.next_start = self.temp_end = 0
                self.triggered = False
                return
        if prob < self.neg_threshold and self.triggered:
            if not self.temp_end:
                self.temp_end = pos
            if pos - self.temp_end > self.min_silence_at_max_speech:
                self.prev_end = self.temp_end
            if pos - self.temp_end < self.min_silence:
                return
            if self.temp_end - self.start > self.min_speech:
                self.speeches.append([self.start, self.temp_end])
            self.prev_end = self.next_start = self.temp_end = 0
            self.triggered = False

    def next_event(self, i: int) -> int:
        """The first frame from i on at which `step` can change the state (len(probs) if none)."""
        if not self.triggered:
            return _next(self.high, i)
        events = [self._first_frame(self.start, self.max_speech, strict=True)]
        if not self.temp_end:
            events.append(_next(self.low, i))
        else:
            events.append(_next(self.high, i))
            ends = self._first_frame(self.temp_end, self.min_silence, strict=False)
            events.append(_next(self.low, max(i, ends)))
            if self.prev_end != self.temp_end:
                marks = self._first_frame(self.temp_end, self.min_silence_at_max_speech, strict=True)
                events.append(_next(self.low, max(i, marks)))
        return max(i, min(events))

    def _first_frame(self, origin: int, margin: float, strict: bool) -> int:
        """The first frame k with FRAME_SAMPLES * k - origin > margin (>= unless strict)."""
        if math.isnan(margin) or margin == math.inf:
            return len(self.probs)
        if margin == -math.inf:
            return 0

        def holds(k: int) -> bool:
            gap = FRAME_SAMPLES * k - origin
            return gap > margin if strict else gap >= margin

        # A guess in floats, then the exact comparison faster-whisper makes.
        k = max(0, math.floor((origin + margin) / FRAME_SAMPLES))
        if k > len(self.probs) + 1:
            return len(self.probs)
        while not holds(k):
            k += 1
        while k > 0 and holds(k - 1):
            k -= 1
        return k

    def finish(self) -> list[tuple[int, int]]:
        """The open speech closed at the end of the audio, then the padding, as faster-whisper does it."""
        speeches = self.speeches
        if self.triggered and (self.num_samples - self.start) > self.min_speech:
            speeches.append([self.start, self.num_samples])
        return _padded(speeches, self.speech_pad, self.num_samples)


def _padded(speeches: list[list[int]], pad: float, length: int) -> list[tuple[int, int]]:
    """faster-whisper's padding of the regions (in place): half the silence to each side when it is short."""
    for i, speech in enumerate(speeches):
        if i == 0:
            speech[0] = int(max(0, speech[0] - pad))
        if i != len(speeches) - 1:
            silence = speeches[i + 1][0] - speech[1]
            if silence < 2 * pad:
                speech[1] += int(silence // 2)
                speeches[i + 1][0] = int(max(0, speeches[i + 1][0] - silence // 2))
            else:
                speech[1] = int(min(length, speech[1] + pad))
                speeches[i + 1][0] = int(max(0, speeches[i + 1][0] - pad))
        else:
            speech[1] = int(min(length, speech[1] + pad))
    return [(int(start), int(end)) for start, end in speeches]


def _next(frames: np.ndarray, i: int) -> int:
    """The first frame >= i in the sorted `frames`, or one past the last frame."""
    k = int(np.searchsorted(frames, i))
    return int(frames[k]) if k < len(frames) else _END


_END = 1 << 62


# --------------------------------------------------------------------------------------------------
# ONNX protobuf: just enough of the wire format to read initializers and nodes and to cut out one node


@dataclass(frozen=True)
class _Node:
    op_type: str
    inputs: list[str]
    outputs: list[str]
    attributes: dict[str, bytes]  # name -> serialized AttributeProto
    raw: bytes


class _OnnxModel:
    """A ModelProto's float/int64 initializers, nodes, inputs and outputs (onnx.proto field numbers)."""

    def __init__(self, data: bytes) -> None:
        self._header = b""  # ModelProto fields other than the graph: ir_version, opset_import, ...
        graph = b""
        for number, value, raw in _raw_fields(data):
            if number == 7:
                graph = _as_bytes(value)
            else:
                self._header += raw
        self.initializers: dict[str, np.ndarray] = {}
        self._raw_initializers: dict[str, bytes] = {}
        self.nodes: list[_Node] = []
        self._values: dict[str, bytes] = {}  # graph inputs and outputs: name -> ValueInfoProto
        for number, value in _fields(graph):
            if number == 1:
                self.nodes.append(_parse_node(_as_bytes(value)))
            elif number == 5:
                name, array = _parse_tensor(_as_bytes(value))
                self.initializers[name] = array
                self._raw_initializers[name] = _as_bytes(value)
            elif number in (11, 12):
                self._values[_string(_as_bytes(value), 1)] = _as_bytes(value)

    def node(self, op_type: str) -> _Node:
        """The graph's only node of this type."""
        (node,) = [n for n in self.nodes if n.op_type == op_type]
        return node

    def attribute(self, node: _Node, name: str) -> Any:
        """A string (bytes) or int attribute of `node`."""
        fields = dict(_fields(node.attributes[name]))
        return fields.get(4, fields.get(3))

    def subgraph(self, node: _Node, inputs: dict[str, tuple[Any, ...]], outputs: dict[str, tuple[Any, ...]]) -> bytes:
        """A model holding only `node`; `inputs`/`outputs` give the float tensors the graph lacks (name -> shape)."""
        graph = _encode(1, node.raw) + _encode(2, b"subgraph")
        graph += b"".join(_encode(5, self._raw_initializers[name]) for name in node.inputs if name in self.initializers)
        for number, names, extra in ((11, node.inputs, inputs), (12, node.outputs, outputs)):
            for name in names:
                if name in extra:
                    graph += _encode(number, _value_info(name, extra[name]))
                elif name in self._values:
                    graph += _encode(number, self._values[name])
        return self._header + _encode(7, graph)


def _parse_node(data: bytes) -> _Node:
    inputs, outputs, attributes, op_type = [], [], {}, ""
    for number, value in _fields(data):
        if number == 1:
            inputs.append(_as_bytes(value).decode())
        elif number == 2:
            outputs.append(_as_bytes(value).decode())
        elif number == 4:
            op_type = _as_bytes(value).decode()
        elif number == 5:
            attributes[_string(_as_bytes(value), 1)] = _as_bytes(value)
    return _Node(op_type, inputs, outputs, attributes, data)


_DTYPES = {1: np.float32, 7: np.int64}  # TensorProto.DataType


def _parse_tensor(data: bytes) -> tuple[str, np.ndarray]:
    dims: list[int] = []
    name, dtype, raw, floats, ints = "", 0, b"", b"", b""
    for number, value in _fields(data):
        if number == 1:
            dims.extend(_packed_varints(value))
        elif number == 2:
            dtype = _as_int(value)
        elif number == 8:
            name = _as_bytes(value).decode()
        elif number == 9:
            raw = _as_bytes(value)
        elif number == 4:
            floats += _as_bytes(value)
        elif number == 7:
            ints += _as_bytes(value)
    if dtype not in _DTYPES:
        return name, np.empty(0)
    if not raw:
        raw = floats if dtype == 1 else np.array(list(_packed_varints(ints)), dtype=np.int64).tobytes()
    return name, np.frombuffer(raw, dtype=_DTYPES[dtype]).reshape(dims).copy()


def _value_info(name: str, shape: tuple[Any, ...]) -> bytes:
    """A ValueInfoProto for a float tensor; str dims are symbolic."""
    dims = b"".join(_encode(1, _encode(2 if isinstance(d, str) else 1, d)) for d in shape)
    tensor_type = _encode(1, 1) + _encode(2, dims)  # elem_type FLOAT, shape
    return _encode(1, name) + _encode(2, _encode(1, tensor_type))


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of a message: ints for varints and fixed-size fields, bytes for the rest."""
    for number, value, _ in _raw_fields(data):
        yield number, value


def _raw_fields(data: bytes) -> Iterator[tuple[int, int | bytes, bytes]]:
    """Like `_fields`, with each field's encoding (key included) to copy it unchanged."""
    view, pos = memoryview(data), 0
    while pos < len(view):
        begin = pos
        key, pos = _varint(view, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(view, pos)
        elif wire == 2:
            size, pos = _varint(view, pos)
            value, pos = bytes(view[pos : pos + size]), pos + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = int.from_bytes(view[pos : pos + size], "little"), pos + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(view):
            raise ValueError("truncated protobuf message")
        yield number, value, bytes(view[begin:pos])


def _varint(view: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = view[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, pos


def _packed_varints(value: int | bytes) -> Iterator[int]:
    if isinstance(value, int):
        yield value
        return
    view, pos = memoryview(value), 0
    while pos < len(view):
        item, pos = _varint(view, pos)
        yield item


def _encode(number: int, value: int | bytes | str) -> bytes:
    """One field: a varint for ints, length-delimited otherwise."""
    if isinstance(value, int):
        return _encode_varint(number << 3) + _encode_varint(value)
    payload = value.encode() if isinstance(value, str) else value
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def _as_int(value: int | bytes) -> int:
    if not isinstance(value, int):
        raise ValueError("malformed ONNX model: expected a number")
    return value


def _as_bytes(value: int | bytes) -> bytes:
    if not isinstance(value, bytes):
        raise ValueError("malformed ONNX model: expected a length-delimited field")
    return value


def _string(message: bytes, number: int) -> str:
    """The first string field `number` of a message."""
    for n, value in _fields(message):
        if n == number:
            return _as_bytes(value).decode()
    return ""
