"""Speakers on segments and words, splitting at speaker changes, OpenAI's diarized shapes."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import pytest

from frontend.openai.audio_form import AudioForm
from frontend.openai.render import diarized_text, render
from frontend.request_bodies import UploadedFile
from harness.assets import jfk_wav
from tests.unit.test_transcriber import one_by_one
from whisper_triton.contract import DoneEvent, TranscriptionRequest
from whisper_triton.decoding import Segment, WindowResult
from whisper_triton.models import ModelInfo
from whisper_triton.speakers import (
    KnownSpeaker,
    cosine,
    is_unnamed,
    match_speakers,
    speaker_at,
    speaker_letters,
    split_by_speaker,
)
from whisper_triton.transcriber import SpeakerCount, Transcriber, WindowCall
from whisper_triton.words import Word

TURNS = [{"start": 0.0, "end": 3.0, "speaker": "SPEAKER_01"}, {"start": 3.0, "end": 6.0, "speaker": "SPEAKER_00"}]


def word(text: str, start: float, end: float) -> dict[str, Any]:
    return {"word": text, "start": start, "end": end, "probability": 0.9, "tokens": [len(text)]}


def segment(words: list[dict[str, Any]] | None, start: float, end: float, text: str) -> dict[str, Any]:
    extra = {"words": words} if words else {}
    return {"id": 0, "seek": 0, "start": start, "end": end, "text": text, "tokens": [1, 2, 3], "temperature": 0.0,
            "avg_logprob": -0.1, "compression_ratio": 1.2, "no_speech_prob": 0.01, **extra}


def test_speaker_by_overlap_or_nearest() -> None:
    assert speaker_at(0.5, 2.5, TURNS) == "SPEAKER_01"
    assert speaker_at(2.0, 5.5, TURNS) == "SPEAKER_00"  # 2.5 s of overlap against 1 s
    assert speaker_at(7.0, 8.0, TURNS) == "SPEAKER_00"  # no overlap: nearest turn
    assert speaker_at(0.0, 1.0, []) is None


def test_segments_are_split_where_the_speaker_changes() -> None:
    words = [word(" Hello", 0.2, 0.8), word(" there.", 0.9, 1.6), word(" Hi", 3.4, 3.9), word(" back.", 4.0, 4.6)]
    split = split_by_speaker([segment(words, 0.2, 4.6, " Hello there. Hi back.")], TURNS)
    # Each starts where its speaker's turn does (0.2 and 0.4 s before its first word, within TURN_REACH);
    # the turns end 1.4 s after the last words, too far to be their speech.
    assert [(s["id"], s["speaker"], s["text"], s["start"], s["end"]) for s in split] == [
        (0, "SPEAKER_01", " Hello there.", 0.0, 1.6), (1, "SPEAKER_00", " Hi back.", 3.0, 4.6)]
    assert split[1]["tokens"] == [3, 6] and all(w["speaker"] == "SPEAKER_00" for w in split[1]["words"])
    whole = split_by_speaker([segment(None, 0.0, 2.0, " No words.")], TURNS)
    assert len(whole) == 1 and whole[0]["speaker"] == "SPEAKER_01"


def test_segments_reach_the_edges_of_their_speakers_turns_but_not_past_a_neighbour() -> None:
    turns = [{"start": 0.0, "end": 2.5, "speaker": "A"}, {"start": 2.5, "end": 4.0, "speaker": "B"},
             {"start": 4.0, "end": 8.3, "speaker": "A"}]
    words = [word(" One", 0.5, 0.9), word(" two.", 1.0, 1.8),  # A: turn 0.0-2.5
             word(" Three", 2.9, 3.3), word(" four.", 3.4, 3.6),  # B: turn 2.5-4.0
             word(" Five", 6.5, 7.0), word(" six.", 7.1, 7.5)]  # A again, 2.5 s into its turn
    split = split_by_speaker([segment(words, 0.5, 7.5, " One two. Three four. Five six.")], turns)
    assert [(s["speaker"], s["start"], s["end"]) for s in split] == [
        ("A", 0.0, 2.5), ("B", 2.5, 4.0), ("A", 6.5, 8.3)]  # 6.5: the turn began 2.5 s earlier, beyond reach
    assert [w["start"] for w in split[0]["words"]] == [0.5, 1.0]  # words keep their own timings
    # A neighbour's words bound the reach: B's segment may not start before A's last word.
    close = [word(" Hi", 0.1, 1.0), word(" all.", 1.1, 2.4), word(" Yo", 2.6, 3.0), word(" there.", 3.1, 3.5)]
    turns = [{"start": 0.0, "end": 2.0, "speaker": "A"}, {"start": 2.0, "end": 4.0, "speaker": "B"}]
    split = split_by_speaker([segment(close, 0.1, 3.5, " Hi all. Yo there.")], turns)
    assert [(s["speaker"], s["start"], s["end"]) for s in split] == [("A", 0.0, 2.4), ("B", 2.4, 4.0)]
    # Without word timings a segment keeps Whisper's bounds.
    whole = split_by_speaker([segment(None, 0.5, 1.5, " No words.")], turns)
    assert (whole[0]["start"], whole[0]["end"]) == (0.5, 1.5)


def test_letters_follow_first_appearance() -> None:
    assert speaker_letters(["SPEAKER_01", "SPEAKER_00", "SPEAKER_01"]) == {
        "SPEAKER_01": "A", "SPEAKER_00": "B"}


async def test_transcriber_diarizes_alongside_decoding() -> None:
    calls: list[tuple[int, SpeakerCount]] = []

    async def diarize(samples: np.ndarray, speakers: SpeakerCount, known: list[KnownSpeaker]) -> list[dict[str, Any]]:
        assert known == []
        calls.append((len(samples), speakers))
        return [{"start": 0.0, "end": 5.0, "speaker": "SPEAKER_00"},
                {"start": 5.0, "end": 11.0, "speaker": "SPEAKER_01"}]

    async def decode(job: WindowCall) -> WindowResult:
        assert job.options.word_timestamps  # diarization splits segments by word
        words = [Word(" one", 1.0, 2.0, 0.9, [1]), Word(" two", 7.0, 8.0, 0.9, [2])]
        return WindowResult("en", 1.0, [Segment(1.0, 8.0, " one two", [1, 2], 0.0, -0.1, 1.0, 0.0, words)])

    info = ModelInfo(n_mels=80, multilingual=False, num_languages=1)
    transcriber = Transcriber(info, one_by_one(decode), diarize=diarize)
    request = TranscriptionRequest(diarize=True, max_speakers=2)
    events = [msgspec.to_builtins(e) async for e in transcriber.events(jfk_wav().read_bytes(), request)]
    assert [e["type"] for e in events] == ["segments", "done"]  # segments only once speakers are known
    done = events[-1]
    assert calls == [(176000, SpeakerCount(max=2))]
    assert [(s["speaker"], s["text"]) for s in done["segments"]] == [("SPEAKER_00", " one"), ("SPEAKER_01", " two")]
    assert "words" not in done["segments"][0]  # not asked for
    assert done["speakers"][1]["speaker"] == "SPEAKER_01"
    only = [msgspec.to_builtins(e) async for e in transcriber.events(jfk_wav().read_bytes(),
                                                                     TranscriptionRequest(task="diarize"))]
    assert only[-1]["segments"] == [] and len(only[-1]["speakers"]) == 2
    with pytest.raises(Exception, match="not enabled"):
        [e async for e in Transcriber(info, one_by_one(decode)).events(jfk_wav().read_bytes(), request)]


def _form(fmt: str) -> AudioForm:
    return AudioForm(file=UploadedFile("a.wav", "audio/wav", b""), model="m", response_format=fmt,
                     timestamp_granularities=("segment",), request=TranscriptionRequest(model="m", diarize=True))


DONE = {"type": "done", "task": "transcribe", "language": "en", "duration": 6.2, "text": "Hello there. Hi back.",
        "speakers": TURNS, "segments": [
            {**segment(None, 0.2, 1.6, " Hello there."), "id": 0, "speaker": "SPEAKER_01"},
            {**segment(None, 3.4, 4.6, " Hi back."), "id": 1, "speaker": "SPEAKER_00"}]}


def _done(event: dict[str, Any]) -> DoneEvent:
    return msgspec.convert(event, DoneEvent)


def test_diarized_json_verbose_and_text_formats() -> None:
    import json

    body = json.loads(render(_done(DONE), _form("diarized_json")).content)
    assert body["task"] == "transcribe" and body["duration"] == 6.2 and body["usage"]["seconds"] == 7
    assert body["segments"] == [
        {"id": "seg_001", "start": 0.2, "end": 1.6, "text": "Hello there.", "speaker": "A",
         "type": "transcript.text.segment"},
        {"id": "seg_002", "start": 3.4, "end": 4.6, "text": "Hi back.", "speaker": "B",
         "type": "transcript.text.segment"}]
    assert body["text"] == diarized_text(_done(DONE)) == "A: Hello there.\nB: Hi back."
    verbose = json.loads(render(_done(DONE), _form("verbose_json")).content)
    assert [s["speaker"] for s in verbose["segments"]] == ["A", "B"]
    assert "1\n00:00:00,200 --> 00:00:01,600\nA: Hello there.\n" in str(render(_done(DONE), _form("srt")).content)
    plain = {k: v for k, v in DONE.items() if k != "speakers"}
    plain["segments"] = [{k: v for k, v in s.items() if k != "speaker"} for s in DONE["segments"]]
    assert "speaker" not in json.loads(render(_done(plain), _form("verbose_json")).content)["segments"][0]


def _unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def test_match_speakers_is_one_to_one_and_keeps_only_close_voices() -> None:
    centroids = {"SPEAKER_00": _unit(1, 0, 0), "SPEAKER_01": _unit(0, 1, 0), "SPEAKER_02": _unit(0, 0, 1)}
    known = [KnownSpeaker("ann", _unit(0.1, 1, 0)), KnownSpeaker("bob", _unit(1, 0.2, 0)),
             KnownSpeaker("cy", _unit(1, 1, 1))]  # cy is 0.58 from every cluster: below the threshold
    assert match_speakers(centroids, known) == {"SPEAKER_01": "ann", "SPEAKER_00": "bob"}
    assert match_speakers(centroids, known, threshold=0.5) == {"SPEAKER_01": "ann", "SPEAKER_00": "bob",
                                                               "SPEAKER_02": "cy"}
    assert match_speakers(centroids, []) == {} and match_speakers({}, known) == {}


def test_match_speakers_maximises_the_total_not_the_first_pick() -> None:
    # Greedy would pair SPEAKER_00 with ann (0.995) and leave bob SPEAKER_01 (0.54); the assignment
    # of highest total pairs SPEAKER_00 with bob (0.93) and SPEAKER_01 with ann (0.86).
    centroids = {"SPEAKER_00": _unit(1, 0.1), "SPEAKER_01": _unit(1, -0.6)}
    known = [KnownSpeaker("ann", _unit(1, 0.0)), KnownSpeaker("bob", _unit(1, 0.5))]
    named = match_speakers(centroids, known, threshold=0.5)
    assert named == {"SPEAKER_00": "bob", "SPEAKER_01": "ann"}


def test_cosine() -> None:
    assert cosine(np.array([1.0, 0.0]), np.array([2.0, 0.0])) == pytest.approx(1.0)
    assert cosine(np.array([1.0, 0.0]), np.array([0.0, 3.0])) == pytest.approx(0.0)
    assert cosine(np.array([1.0, 1.0]), np.array([-1.0, -1.0])) == pytest.approx(-1.0)
    assert cosine(np.zeros(2), np.array([1.0, 0.0])) == 0.0


def test_known_names_are_kept_and_the_rest_lettered() -> None:
    segments = [{"speaker": "SPEAKER_01"}, {"speaker": "agent"}, {"speaker": "SPEAKER_00"}, {"speaker": "SPEAKER_01"}]
    assert speaker_letters(s["speaker"] for s in segments) == {"SPEAKER_01": "A", "agent": "agent", "SPEAKER_00": "B"}
    assert is_unnamed("SPEAKER_07") and not is_unnamed("SPEAKER_ann") and not is_unnamed("Dana")
