"""The transcription orchestration with a fake engine call: order, offsets, language, resumes."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from tests.assets import jfk_wav, long_recording, wav_bytes
from whisper_triton.audio import decode_audio
from whisper_triton.decoding import Segment, WindowJob, WindowResult, unfinished_from
from whisper_triton.errors import AudioTooShortError, InvalidRequestError
from whisper_triton.models import ModelInfo, read_model_info, resolve_model
from whisper_triton.text import WhisperTokenizer
from whisper_triton.transcriber import Transcriber, TranscribeRequest, temperature_schedule

MULTILINGUAL = ModelInfo(n_mels=80, multilingual=True, num_languages=99)
ENGLISH = ModelInfo(n_mels=80, multilingual=False, num_languages=1)


def segment(start: float, end: float, text: str) -> Segment:
    return Segment(start, end, text, [1, 2], 0.0, -0.2, 1.3, 0.01)


class FakeDecode:
    """Answers each window with one segment spanning its audio; records the jobs it got."""

    def __init__(self, resume_once_at: float | None = None, language: str = "de") -> None:
        self.jobs: list[WindowJob] = []
        self.resume_once_at = resume_once_at
        self.language = language
        self.in_flight = 0
        self.max_in_flight = 0

    async def __call__(self, job: WindowJob) -> WindowResult:
        self.jobs.append(job)
        number = len(self.jobs)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(0.3)  # long enough for the other windows' features to be ready
        self.in_flight -= 1
        duration = job.num_frames / 100
        resume = None
        if self.resume_once_at is not None and number == 1:
            resume, duration = self.resume_once_at, self.resume_once_at
        language = job.options.language or self.language
        return WindowResult(language, 0.9, [segment(0.0, duration, f" window {number}")], resume)


async def collect(transcriber: Transcriber, audio: bytes, request: TranscribeRequest) -> list[dict[str, Any]]:
    return [event async for event in transcriber.events(audio, request)]


async def test_windows_in_order_with_absolute_times_and_one_detected_language() -> None:
    recording = long_recording(2.0)
    fake = FakeDecode(language="de")
    events = await collect(Transcriber(MULTILINGUAL, fake), recording.path.read_bytes(), TranscribeRequest())
    done = events[-1]
    assert done["type"] == "done" and done["language"] == "de"
    assert done["duration"] == pytest.approx(recording.duration, abs=0.01)
    assert [e["type"] for e in events[:-1]] == ["segments"] * (len(events) - 1) == ["segments"] * len(fake.jobs)
    # The first window is detected alone; every later one is sent with its language.
    assert fake.jobs[0].options.language is None
    assert all(job.options.language == "de" for job in fake.jobs[1:])
    segments = done["segments"]
    assert [s["id"] for s in segments] == list(range(len(segments)))
    assert len(segments) == len(fake.jobs) and len({s["text"] for s in segments}) == len(segments)
    starts = [s["start"] for s in segments]
    assert starts == sorted(starts) and starts[-1] > 60
    assert all(abs(s["seek"] - s["start"] * 100) < 1 for s in segments)  # seek: mel frames
    assert fake.max_in_flight > 1  # the windows after the first are sent together


async def test_an_unfinished_window_is_resumed_from_where_it_stopped() -> None:
    fake = FakeDecode(resume_once_at=4.0)
    events = await collect(Transcriber(ENGLISH, fake), jfk_wav().read_bytes(), TranscribeRequest())
    done = events[-1]
    assert len(fake.jobs) == 2
    assert fake.jobs[1].num_frames == fake.jobs[0].num_frames - 400
    assert [(s["start"], s["text"]) for s in done["segments"]] == [(0.0, " window 1"), (4.0, " window 2")]
    assert done["segments"][1]["end"] == pytest.approx(11.0, abs=0.01)


async def test_no_resume_into_silence() -> None:
    """Whisper stopping where only silence is left is not an early stop: the rest is not decoded."""
    jfk = decode_audio(jfk_wav().read_bytes()).samples
    audio = wav_bytes(np.concatenate([jfk, np.zeros(16000 * 8, dtype=np.float32)]))
    fake = FakeDecode(resume_once_at=11.5)
    events = await collect(Transcriber(ENGLISH, fake), audio, TranscribeRequest())
    assert len(fake.jobs) == 1
    assert [s["text"] for s in events[-1]["segments"]] == [" window 1"]


async def test_validation() -> None:
    transcriber = Transcriber(ENGLISH, FakeDecode())
    with pytest.raises(InvalidRequestError) as info:
        await collect(transcriber, jfk_wav().read_bytes(), TranscribeRequest(task="translate"))
    assert info.value.param == "model"
    with pytest.raises(InvalidRequestError):
        await collect(transcriber, jfk_wav().read_bytes(), TranscribeRequest(task="summarize"))
    with pytest.raises(AudioTooShortError):
        await collect(transcriber, jfk_wav().read_bytes()[:44 + 1000], TranscribeRequest())
    with pytest.raises(InvalidRequestError) as info:
        await collect(transcriber, jfk_wav().read_bytes(), TranscribeRequest(language="de"))
    assert info.value.param == "language" and "English-only" in info.value.message
    english = await collect(transcriber, jfk_wav().read_bytes(), TranscribeRequest(language="en-GB"))
    assert english[-1]["language"] == "en"


def test_temperature_schedule() -> None:
    assert temperature_schedule(0.0) == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    assert temperature_schedule(0.5) == (0.5, 0.7, 0.9)
    assert temperature_schedule(1.0) == (1.0,)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(InvalidRequestError):
            temperature_schedule(bad)


def test_unfinished_from() -> None:
    path = resolve_model("tiny.en").path
    info = read_model_info(path)
    tokenizer = WhisperTokenizer(path / "tokenizer.json", info.multilingual, info.num_languages)
    begin = tokenizer.timestamp_begin
    text = tokenizer.encode(" Hello there.")
    closed_then_opened = [begin, *text, begin + 100, begin + 110, tokenizer.eot]
    assert unfinished_from(tokenizer, closed_then_opened, num_frames=2800) == pytest.approx(2.0)
    # Near the end of the audio nothing was left out.
    assert unfinished_from(tokenizer, closed_then_opened, num_frames=250) is None
    # A closed last segment well before the end: the model may have stopped early (checked by VAD later).
    assert unfinished_from(tokenizer, [begin, *text, begin + 100, tokenizer.eot], num_frames=2800) == 2.0
    assert unfinished_from(tokenizer, [begin, *text, begin + 100, tokenizer.eot], num_frames=250) is None
    assert unfinished_from(tokenizer, [begin, *text], num_frames=2800) is None


async def test_align_packs_given_segments_into_windows_with_relative_times() -> None:
    fake = FakeDecode()
    transcript = [{"start": 0.5, "end": 4.0, "text": "first"}, {"start": 5.0, "end": 9.0, "text": "second"},
                  {"start": 40.0, "end": 45.0, "text": "third"}]
    audio = long_recording(1.0).path.read_bytes()
    events = [e async for e in Transcriber(ENGLISH, fake).align(audio, transcript)]
    assert len(fake.jobs) == 2  # 0.5-9 s in one window, 40-45 s in another
    first, second = (job.options for job in fake.jobs)
    assert first.word_timestamps and first.given == (("first", 0.5, 4.0), ("second", 5.0, 9.0))
    assert second.given is not None and second.given[0][0] == "third"
    assert second.given[0][1] == pytest.approx(0.5, abs=0.01)  # 40 s, relative to a window from 39.5 s
    assert events[-1]["type"] == "done" and events[-1]["task"] == "align"
    with pytest.raises(InvalidRequestError):
        [e async for e in Transcriber(ENGLISH, fake).align(audio, [{"text": "no times"}])]
