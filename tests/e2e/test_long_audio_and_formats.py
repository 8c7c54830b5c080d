"""Long recordings come back complete with correct timestamps; every container decodes by content."""

from __future__ import annotations

import difflib
import itertools

import openai
import pytest

from harness.assets import FORMATS, JFK_TEXT, encoded, long_recording, long_recording_mp3
from harness.speech import long_speech
from harness.stack import Served
from harness.text import english_normalize, english_wer, normalize, wer, words


@pytest.fixture(scope="module")
def sdk(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.base_url}/v1", api_key="unused", max_retries=0, timeout=900)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_container_is_sniffed_not_named(sdk: openai.OpenAI, name: str) -> None:
    path = encoded(name)
    # A lying name and a generic type, as Open WebUI and the SDK's BytesIO uploads send.
    result = sdk.audio.transcriptions.create(
        model="whisper-1", file=("recording.wav", path.read_bytes(), "application/octet-stream")
    )
    assert wer(JFK_TEXT, result.text) < 0.25, (name, result.text)


def test_ten_minute_recording_is_complete_with_monotonic_correct_timestamps(sdk: openai.OpenAI) -> None:
    recording = long_recording(10.0)
    with long_recording_mp3(10.0).path.open("rb") as audio:
        result = sdk.audio.transcriptions.create(
            model="whisper-1", file=audio, response_format="verbose_json", timestamp_granularities=["segment"]
        )
    assert result.duration == pytest.approx(recording.duration, abs=0.5)
    # Complete: nothing lost or duplicated at window borders (tiny.en on synthetic voices: modest WER).
    error = wer(recording.text, result.text)
    assert error < 0.2, error
    assert len(words(result.text)) == pytest.approx(len(words(recording.text)), rel=0.1)
    segments = result.segments or []
    assert [s.id for s in segments] == list(range(len(segments)))
    for before, after in itertools.pairwise(segments):
        assert before.start <= before.end <= after.start + 0.01, (before, after)
    assert segments[-1].end <= recording.duration + 0.5
    # Correct: each piece's words are found in segments that overlap the piece's true time span.
    missed = []
    for piece in recording.pieces:
        near = " ".join(s.text for s in segments if s.end > piece.start - 1.0 and s.start < piece.end + 1.0)
        piece_words = words(piece.text)
        found = sum(1 for w in piece_words if w in set(words(near)))
        if found < 0.6 * len(piece_words):
            missed.append((piece, near))
    assert len(missed) <= len(recording.pieces) // 20, missed[:3]


def test_json_answers_keep_every_sentence_of_long_real_speech(sdk: openai.OpenAI) -> None:
    """`json` (text only, no times) is decoded like `verbose_json`: where Whisper ends a window early,
    the window is decoded on, so no sentence is dropped at window ends (text-only decoding dropped them).
    The two texts need not be equal: the windows of each request share batches with whatever else runs,
    and a batch's composition may change tiny.en's guesses where the audio is unclear."""
    recording = long_speech("report", 4.0, seed=3)
    with recording.path.open("rb") as audio:
        plain = sdk.audio.transcriptions.create(model="whisper-1", file=audio, response_format="json")
    with recording.path.open("rb") as audio:
        timed = sdk.audio.transcriptions.create(model="whisper-1", file=audio, response_format="verbose_json",
                                                timestamp_granularities=["segment"])
    assert english_wer(recording.text, plain.text) < 0.15
    assert english_wer(recording.text, timed.text) < 0.15
    # Every sentence is in the json text: aligned word by word with the reference, piece by piece (a
    # piece is missing when most of it and at least three words are: "H.323" may be heard as "H 3 2 3").
    said = [english_normalize(piece.text).split() for piece in recording.pieces]
    heard = english_normalize(plain.text).split()
    matcher = difflib.SequenceMatcher(None, [w for piece in said for w in piece], heard, autojunk=False)
    matched = {block.a + i for block in matcher.get_matching_blocks() for i in range(block.size)}
    missing, first = [], 0
    for piece, piece_words in zip(recording.pieces, said, strict=True):
        found = sum(1 for i in range(first, first + len(piece_words)) if i in matched)
        if found < 0.6 * len(piece_words) and len(piece_words) - found >= 3:
            missing.append((piece.start, piece.text))
        first += len(piece_words)
    assert len(missing) <= 1, missing  # (one lost to a hallucination where tiny.en cannot follow the audio)
    missing = []
    # And in the verbose_json segments, where it was spoken (tiny.en may lose one where a prompt's audio
    # makes it hallucinate: one in twenty).
    segments = timed.segments or []
    for piece in recording.pieces:
        near = " ".join(s.text for s in segments if s.end > piece.start - 1.0 and s.start < piece.end + 1.0)
        near_words, piece_words = set(english_normalize(near).split()), english_normalize(piece.text).split()
        found = sum(word in near_words for word in piece_words)
        if found < 0.6 * len(piece_words) and len(piece_words) - found >= 3:
            missing.append((piece.start, piece.text, near))
    assert len(missing) <= len(recording.pieces) // 20, missing


def test_long_recording_segments_stream_in_order(sdk: openai.OpenAI) -> None:
    recording = long_recording(2.0)
    with recording.path.open("rb") as audio:
        events = list(sdk.audio.transcriptions.create(model="whisper-1", file=audio, stream=True))
    deltas = "".join(e.delta for e in events if e.type == "transcript.text.delta")
    assert normalize(deltas) == normalize(events[-1].text)
    assert wer(recording.text, deltas) < 0.2
