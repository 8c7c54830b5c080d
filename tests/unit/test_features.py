"""window_features against faster-whisper's FeatureExtractor, the reference it replaces, in both padding modes."""

from __future__ import annotations

import wave
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from faster_whisper.audio import pad_or_trim
from faster_whisper.feature_extractor import FeatureExtractor

from harness.assets import jfk_wav
from whisper_triton.audio import SAMPLE_RATE
from whisper_triton.features import FRAMES, HOP_LENGTH, WINDOW_SAMPLES, window_features

TOLERANCE = 1e-4  # float32 FFT and sparse filterbank against faster-whisper's float64 FFT and dense product


def reference(samples: np.ndarray, n_mels: int, pad: str) -> np.ndarray:
    extractor = FeatureExtractor(feature_size=n_mels)
    if pad == "audio":  # OpenAI's Whisper on one window: the audio zero-padded to 30 s first
        padded = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
        padded[: len(samples)] = samples
        return np.asarray(extractor(padded, padding=0)[:, :FRAMES])
    # faster-whisper's batched pipeline (transcribe.py): features of the chunk, then padded to 3000 frames
    return np.asarray(pad_or_trim(extractor(samples)[..., :-1]))


def jfk() -> np.ndarray:
    with wave.open(str(jfk_wav()), "rb") as wav:
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return (pcm / 32768).astype(np.float32)


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Voiced harmonics with a wandering pitch and formants, pauses and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    formant = 700 + 400 * np.sin(2 * np.pi * 1.3 * t)
    voiced = sum(np.sin(k * phase) * np.exp(-(((k * pitch - formant) / 500) ** 2)) / k for k in range(1, 30))
    envelope = (np.sin(2 * np.pi * 0.4 * t) > -0.3).astype(np.float64)
    return (0.3 * voiced * envelope + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


CLIPS = {
    "jfk_11s": jfk,
    "speech_like_30s": lambda: speech_like(30.0),
    "speech_like_17s": lambda: speech_like(17.34, seed=1),
    "speech_like_0.1s": lambda: speech_like(0.1, seed=2),
    "loud_short": lambda: np.clip(speech_like(0.3, seed=3) * 4, -1, 1),
    "silence_5s": lambda: np.zeros(5 * SAMPLE_RATE, dtype=np.float32),
    "five_samples": lambda: speech_like(0.1, seed=4)[:5],
    "empty": lambda: np.zeros(0, dtype=np.float32),
}


@pytest.mark.parametrize("pad", ["audio", "features"])
@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("clip", sorted(CLIPS))
def test_equals_faster_whisper(clip: str, n_mels: int, pad: str) -> None:
    samples = CLIPS[clip]()
    features, _ = window_features(samples, n_mels, pad=pad)  # type: ignore[arg-type]
    assert features.dtype == np.float32
    assert features.shape == (n_mels, FRAMES)
    assert features.flags.c_contiguous
    np.testing.assert_allclose(features, reference(samples, n_mels, pad), rtol=0, atol=TOLERANCE)


def test_padding_modes_differ_where_they_should() -> None:
    samples = speech_like(12.0)
    audio, _ = window_features(samples, 80, pad="audio")
    features, _ = window_features(samples, 80, pad="features")
    assert np.all(features[:, 1200:] == 0.0)  # padded in feature space
    assert np.all(audio[:, 1202:] == audio[0, 2999])  # padded audio: one floor value, not 0.0
    assert audio[0, 2999] != 0.0


def test_a_full_window_differs_between_modes_only_in_its_last_frame() -> None:
    """The last frame reaches past the audio: into its reflection, or into faster-whisper's 160 zeros."""
    samples = speech_like(30.0, seed=5)
    audio, _ = window_features(samples, 80, pad="audio")
    features, _ = window_features(samples, 80, pad="features")
    np.testing.assert_allclose(audio[:, :-1], features[:, :-1], rtol=0, atol=TOLERANCE)


def test_digital_silence_is_the_log_floor() -> None:
    for pad in ("audio", "features"):
        features, frames = window_features(np.zeros(SAMPLE_RATE, dtype=np.float32), 80, pad=pad)  # type: ignore[arg-type]
        assert frames == 100
        assert np.all(features[:, :100] == np.float32(-1.5))  # (log10(1e-10) + 4) / 4


@pytest.mark.parametrize(
    ("length", "frames"),
    [(0, 1), (1, 1), (HOP_LENGTH, 1), (HOP_LENGTH + 1, 2), (SAMPLE_RATE, 100), (WINDOW_SAMPLES - 1, FRAMES),
     (WINDOW_SAMPLES, FRAMES)],
)
def test_num_frames_counts_frames_holding_audio(length: int, frames: int) -> None:
    for pad in ("audio", "features"):
        _, num_frames = window_features(np.full(length, 0.1, dtype=np.float32), 80, pad=pad)  # type: ignore[arg-type]
        assert num_frames == frames


def test_more_than_30_seconds_is_refused() -> None:
    with pytest.raises(ValueError, match="30 s"):
        window_features(np.zeros(WINDOW_SAMPLES + 1, dtype=np.float32), 80)


def test_unknown_padding_is_refused() -> None:
    with pytest.raises(ValueError, match="pad"):
        window_features(np.zeros(100, dtype=np.float32), 80, pad="zeros")  # type: ignore[arg-type]


def test_float64_input_is_accepted() -> None:
    samples = speech_like(2.0)
    as_float64, _ = window_features(samples.astype(np.float64), 80)
    as_float32, _ = window_features(samples, 80)
    np.testing.assert_allclose(as_float64, as_float32, rtol=0, atol=TOLERANCE)


def test_results_do_not_share_buffers_across_calls_or_threads() -> None:
    """window_features reuses per-thread scratch buffers: no result may alias them or another thread's."""
    clips = [speech_like(seconds, seed=seed) for seed, seconds in enumerate((3.0, 29.5, 0.2, 30.0, 12.0, 7.7))]
    expected = [window_features(clip, 80, pad=pad)[0] for clip in clips for pad in ("audio", "features")]
    first = expected[0].copy()
    window_features(clips[1], 80)
    np.testing.assert_array_equal(expected[0], first)
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            results = list(pool.map(lambda job: window_features(job[0], 80, pad=job[1])[0],
                                    [(clip, pad) for clip in clips for pad in ("audio", "features")]))
            for got, want in zip(results, expected, strict=True):
                np.testing.assert_array_equal(got, want)
