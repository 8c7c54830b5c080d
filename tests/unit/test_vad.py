"""Silero VAD in NumPy: the probabilities and speech spans of faster-whisper's onnxruntime VAD."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from unittest import mock

import faster_whisper.vad as fw
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from harness.assets import jfk_wav
from whisper_triton import vad
from whisper_triton.audio import decode_audio
from whisper_triton.vad import (
    CHUNK_FRAMES,
    CONTEXT_SAMPLES,
    FRAME_SAMPLES,
    WARM_FRAMES,
    SileroVad,
    VadOptions,
    get_speech_timestamps,
    speech_timestamps,
)

RATE = 16_000
MAX_PROB_ERROR = 1e-4  # observed: about 5e-6

# The service's options (see windows.py), faster-whisper's defaults, and tighter ones.
OPTION_SETS = [
    VadOptions(min_silence_duration_ms=160, speech_pad_ms=200, max_speech_duration_s=29),
    VadOptions(min_silence_duration_ms=160, speech_pad_ms=0, max_speech_duration_s=29),
    VadOptions(),
    VadOptions(threshold=0.3, min_speech_duration_ms=250, max_speech_duration_s=3, min_silence_duration_ms=100),
    VadOptions(max_speech_duration_s=1.024, speech_pad_ms=0, min_silence_duration_ms=0),
]


@pytest.fixture(scope="module")
def jfk() -> np.ndarray:
    return decode_audio(jfk_wav().read_bytes()).samples


def _tone(jfk: np.ndarray) -> np.ndarray:
    return 0.5 * np.sin(2 * np.pi * 440 * np.arange(5 * RATE) / RATE)


def _noise(seconds: float, level: float) -> np.ndarray:
    return np.random.default_rng(7).normal(0, level, int(seconds * RATE))


SIGNALS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "speech": lambda jfk: jfk,
    "speech with long silence": lambda jfk: np.concatenate([jfk, _noise(25, 1e-3), jfk[: 5 * RATE]]),
    "white noise": lambda jfk: _noise(10, 0.1),
    "tone": _tone,
    "digital silence": lambda jfk: np.zeros(3 * RATE),
    # Ends 500 samples into a frame: faster-whisper zeroes the last 64 of them.
    "ragged length": lambda jfk: jfk[: 100 * FRAME_SAMPLES + 500],
    "whole frames": lambda jfk: jfk[: 200 * FRAME_SAMPLES],  # still gets a frame of padding
    "empty": lambda jfk: np.zeros(0),
}


def signal(name: str, jfk: np.ndarray) -> np.ndarray:
    return np.asarray(SIGNALS[name](jfk), dtype=np.float32)


def onnx_probabilities(samples: np.ndarray) -> np.ndarray:
    """faster-whisper's model output, on the audio padded as get_speech_timestamps pads it."""
    padded = np.pad(samples, (0, FRAME_SAMPLES - len(samples) % FRAME_SAMPLES))
    return np.asarray(fw.get_vad_model()(padded)).reshape(-1)


def reference_spans(
    probs: np.ndarray, num_samples: int, options: VadOptions, rate: int = RATE
) -> list[tuple[int, int]]:
    """faster-whisper's get_speech_timestamps, its model replaced by `probs`."""
    with mock.patch.object(fw, "get_vad_model", return_value=lambda audio: probs):
        spans = fw.get_speech_timestamps(
            np.zeros(num_samples, np.float32), fw.VadOptions(**dataclasses.asdict(options)), sampling_rate=rate
        )
    return [(span["start"], span["end"]) for span in spans]


@pytest.mark.parametrize("name", SIGNALS)
def test_probabilities_match_onnxruntime_over_the_first_chunk(name: str, jfk: np.ndarray) -> None:
    """The first CHUNK_FRAMES are faster-whisper's exactly (later ones start afresh: see below)."""
    samples = signal(name, jfk)
    probs = SileroVad.load().probabilities(samples)
    expected = onnx_probabilities(samples)
    assert probs.dtype == np.float32
    assert probs.shape == expected.shape == (len(samples) // FRAME_SAMPLES + 1,)
    assert np.abs(probs - expected)[:CHUNK_FRAMES].max() < MAX_PROB_ERROR


@pytest.mark.parametrize("name", [name for name in SIGNALS if len(SIGNALS[name](np.zeros(RATE * 11))) < RATE * 8])
def test_spans_of_short_audio_match_faster_whisper(name: str, jfk: np.ndarray) -> None:
    samples = signal(name, jfk)
    probs = SileroVad.load().probabilities(samples)
    for options in OPTION_SETS:
        fw_spans = fw.get_speech_timestamps(samples, fw.VadOptions(**dataclasses.asdict(options)))
        assert speech_timestamps(probs, len(samples), options) == [(s["start"], s["end"]) for s in fw_spans]


def test_each_chunk_hears_only_its_warm_up_before_it(jfk: np.ndarray) -> None:
    """Audio more than WARM_FRAMES before a chunk changes nothing in it: the LSTM starts afresh."""
    samples = signal("speech with long silence", jfk)
    other = samples.copy()
    cut = (CHUNK_FRAMES - WARM_FRAMES) * FRAME_SAMPLES - CONTEXT_SAMPLES
    other[:cut] = _noise(cut / RATE, 0.05)[:cut]
    probs, changed = SileroVad.load().probabilities(samples), SileroVad.load().probabilities(other)
    assert np.abs(probs - changed)[:CHUNK_FRAMES].max() > 0.1  # (the change is heard where it is)
    assert np.abs(probs - changed)[CHUNK_FRAMES:].max() < 1e-6


def test_speech_after_a_long_stretch_without_it_is_heard_at_once(jfk: np.ndarray) -> None:
    """A continuous LSTM grew deaf over long silence: JFK after 45 s of room tone was found 2 s late
    (and a quiet talk 12 s late, or never)."""
    from harness.nonspeech import nonspeech

    lead = nonspeech("room_tone", 45.0, seed=14)
    probs = SileroVad.load().probabilities(np.concatenate([lead, jfk]).astype(np.float32))
    spans = speech_timestamps(probs, len(lead) + len(jfk), VadOptions(min_silence_duration_ms=160, speech_pad_ms=0))
    assert spans and abs((spans[0][0] - len(lead)) / RATE - 0.32) < 0.2, spans


def test_spans_match_faster_whisper_on_the_same_probabilities(jfk: np.ndarray) -> None:
    for name in SIGNALS:
        samples = signal(name, jfk)
        probs = SileroVad.load().probabilities(samples)
        for options in OPTION_SETS:
            assert speech_timestamps(probs, len(samples), options) == reference_spans(probs, len(samples), options)


def test_get_speech_timestamps_finds_speech_only_in_speech(jfk: np.ndarray) -> None:
    assert get_speech_timestamps(jfk) == [(0, len(jfk))]
    assert get_speech_timestamps(signal("white noise", jfk)) == []
    assert get_speech_timestamps(signal("digital silence", jfk)) == []


def test_groups_and_encoder_passes_change_nothing(monkeypatch: pytest.MonkeyPatch, jfk: np.ndarray) -> None:
    samples = signal("speech with long silence", jfk)
    whole = SileroVad.load().probabilities(samples)
    monkeypatch.setattr(vad, "GROUP_CHUNKS", 1)
    monkeypatch.setattr(vad, "_ENCODE_FRAMES", 3)
    assert np.abs(SileroVad.load().probabilities(samples) - whole).max() < 1e-5


def test_the_model_loads_once() -> None:
    default = SileroVad.load()
    assert SileroVad.load() is default
    assert SileroVad.load(vad._default_path()) is default


def test_concurrent_calls_agree(jfk: np.ndarray) -> None:
    expected = SileroVad.load().probabilities(jfk)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(SileroVad.load().probabilities, [jfk] * 8))
    assert max(np.abs(probs - expected).max() for probs in results) < 1e-5


# --------------------------------------------------------------------------------------------------
# Span logic against faster-whisper's, on given probabilities

F32_NEG = float(np.float32(0.35))  # the default neg_threshold rounded to float32: compared in float64
LEVELS = [0.0, 0.1, 0.2, 0.34, 0.35, F32_NEG, 0.36, 0.49, 0.5, 0.51, 0.7, 1.0]


def frames(*runs: tuple[float, int]) -> np.ndarray:
    return np.concatenate([np.full(length, level, np.float32) for level, length in runs])


EDGE_CASES = [
    ("empty audio", frames((0.9, 1)), 0),
    ("all speech", frames((1.0, 300)), 300 * FRAME_SAMPLES - 100),
    ("all silence", frames((0.0, 300)), 299 * FRAME_SAMPLES),
    ("speech running to the end", frames((0.0, 50), (0.9, 100)), 149 * FRAME_SAMPLES + 1),
    ("speech from the first frame", frames((0.9, 40), (0.0, 200)), 239 * FRAME_SAMPLES),
    ("short blips", frames(*[(0.9, 1), (0.0, 3)] * 30), 119 * FRAME_SAMPLES),
    ("hysteresis", frames((0.0, 10), (0.6, 20), (0.4, 80), (0.2, 10), (0.6, 5), (0.0, 100)), 224 * FRAME_SAMPLES),
    ("float32 neg threshold", frames((0.9, 20), (F32_NEG, 100), (0.9, 5)), 124 * FRAME_SAMPLES),
    ("long speech with pauses", frames(*[(0.9, 300), (0.1, 4), (0.4, 2)] * 12, (0.9, 2000)), 5671 * FRAME_SAMPLES),
    ("long speech without pauses", frames((0.0, 5), (0.95, 4000)), 4004 * FRAME_SAMPLES),
]


@pytest.mark.parametrize(("probs", "num_samples"), [case[1:] for case in EDGE_CASES], ids=[c[0] for c in EDGE_CASES])
@pytest.mark.parametrize("options", OPTION_SETS)
def test_span_edge_cases(probs: np.ndarray, num_samples: int, options: VadOptions) -> None:
    assert speech_timestamps(probs, num_samples, options) == reference_spans(probs, num_samples, options)


runs = st.lists(
    st.tuples(st.sampled_from(LEVELS) | st.floats(0, 1, width=32), st.integers(1, 120)), min_size=1, max_size=30
)
options = st.builds(
    VadOptions,
    threshold=st.sampled_from([0.5, 0.3, 0.7]) | st.floats(0.05, 0.95),
    neg_threshold=st.none() | st.sampled_from([0.35, 0.5]) | st.floats(0, 0.9),
    min_speech_duration_ms=st.sampled_from([0, 250]) | st.integers(0, 2000),
    # 1.024 and 2.048 s make the limit a whole number of frames: the comparison's strictness matters.
    max_speech_duration_s=st.sampled_from([float("inf"), 29.0, 1.0, 2.5, 1.024, 2.048]) | st.floats(0.05, 40),
    min_silence_duration_ms=st.sampled_from([2000, 160, 100, 0]) | st.integers(0, 3000),
    speech_pad_ms=st.sampled_from([0, 200, 400]) | st.integers(0, 1000),
)


def test_span_scan_skips_the_frames_in_between(monkeypatch: pytest.MonkeyPatch) -> None:
    steps = []
    step = vad._SpanScan.step
    monkeypatch.setattr(vad._SpanScan, "step", lambda scan, i: (steps.append(i), step(scan, i)))
    probs = frames(*[(0.9, 5_000), (0.4, 1_000), (0.0, 5_000)] * 3)
    spans = speech_timestamps(probs, len(probs) * FRAME_SAMPLES, VadOptions(max_speech_duration_s=29))
    assert spans == reference_spans(probs, len(probs) * FRAME_SAMPLES, VadOptions(max_speech_duration_s=29))
    assert len(steps) < 200


@settings(max_examples=100, deadline=None)
@given(runs, options, st.integers(0, FRAME_SAMPLES - 1), st.sampled_from([16_000, 8_000]))
@example([(0.9, 20), (F32_NEG, 100), (0.9, 5)], VadOptions(), 0, 16_000)
@example(
    [(0.9, 900), (0.1, 5), (0.9, 900)], VadOptions(max_speech_duration_s=29, min_silence_duration_ms=160), 0, 16_000
)
def test_spans_match_faster_whisper_on_any_probabilities(
    runs: list[tuple[float, int]], options: VadOptions, tail: int, rate: int
) -> None:
    probs = frames(*runs)
    num_samples = (len(probs) - 1) * FRAME_SAMPLES + tail
    assert speech_timestamps(probs, num_samples, options, rate) == reference_spans(probs, num_samples, options, rate)


# --------------------------------------------------------------------------------------------------
# Speech settled while the probabilities are still being computed


@settings(max_examples=150, deadline=None)
@given(runs, options, st.lists(st.integers(1, 4000), max_size=8))
@example([(0.9, 300), (0.1, 4), (0.9, 300), (0.0, 30)], OPTION_SETS[0], [305, 306, 604])
def test_settled_speech_is_what_the_whole_audio_gives(
    runs: list[tuple[float, int]], options: VadOptions, cuts: list[int]
) -> None:
    """However the probabilities arrive, what is settled is the start of the whole audio's spans, every span
    that starts before the frontier is among it, and the frontier only moves on."""
    probs = frames(*runs)
    num_samples = len(probs) * FRAME_SAMPLES - 100
    whole = speech_timestamps(probs, num_samples, options)
    settled = vad.SettledSpeech(num_samples, options)
    frontier = 0
    for frames_known in [*sorted(c for c in cuts if c < len(probs)), len(probs)]:
        spans, known_until = settled.settled(probs, frames_known)
        assert spans == whole[: len(spans)]
        assert len([s for s in whole if s[0] < known_until]) <= len(spans) or known_until == num_samples
        assert known_until >= frontier
        frontier = known_until
    assert spans == whole and frontier == num_samples
    stepped = vad.SettledSpeech(num_samples, options)  # finished from where it stood: the same regions
    for frames_known in sorted(c for c in cuts if c < len(probs)):
        stepped.settled(probs, frames_known)
    assert stepped.finish(probs) == whole


def test_probabilities_arrive_in_order_and_equal_the_whole(monkeypatch: pytest.MonkeyPatch, jfk: np.ndarray) -> None:
    samples = signal("speech with long silence", jfk)
    whole = SileroVad.load().probabilities(samples)
    monkeypatch.setattr(vad, "GROUP_CHUNKS", 1)
    known = [frames_known for frames_known, _ in SileroVad.load().probability_prefixes(samples)]
    assert known == sorted(known) and known[0] == CHUNK_FRAMES and known[-1] == len(whole) and len(known) > 2
    prefixes = SileroVad.load().probability_prefixes(samples)
    first, probs = next(prefixes)
    assert np.abs(probs[:first] - whole[:first]).max() < 1e-5
    prefixes.close()  # stops early without waiting for the rest of the audio
