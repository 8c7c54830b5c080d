"""Log-mel features of one window, as Whisper's encoder expects them (n_mels x 3000)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from faster_whisper.feature_extractor import FeatureExtractor

from whisper_triton.audio import SAMPLE_RATE
from whisper_triton.windows import WINDOW_SAMPLES

HOP_LENGTH = 160
FRAMES = WINDOW_SAMPLES // HOP_LENGTH


@lru_cache(maxsize=4)
def _extractor(n_mels: int) -> FeatureExtractor:
    return FeatureExtractor(feature_size=n_mels, sampling_rate=SAMPLE_RATE, hop_length=HOP_LENGTH)


def window_features(samples: np.ndarray, n_mels: int) -> tuple[np.ndarray, int]:
    """Features of up to 30 s of audio, zero-padded to 30 s as in OpenAI's Whisper.

    Returns the (n_mels, 3000) float32 array and the number of frames that hold audio.
    """
    if len(samples) > WINDOW_SAMPLES:
        raise ValueError("a window holds at most 30 s of audio")
    padded = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
    padded[: len(samples)] = samples
    features = _extractor(n_mels)(padded, padding=0)[:, :FRAMES]
    num_frames = max(1, min(FRAMES, (len(samples) + HOP_LENGTH - 1) // HOP_LENGTH))
    return np.ascontiguousarray(features, dtype=np.float32), num_frames
