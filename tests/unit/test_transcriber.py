"""The transcription orchestration with a fake engine call: order, offsets, language, cancellation."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import numpy as np
import pytest

from harness.assets import jfk_wav, long_recording, wav_bytes
from harness.nonspeech import nonspeech
from whisper_triton.audio import decode_audio
from whisper_triton.contract import SegmentsEvent, TranscriptionRequest
from whisper_triton.decoding import Segment, WindowResult, last_timestamp
from whisper_triton.errors import AudioTooShortError, InvalidRequestError
from whisper_triton.models import ModelInfo, read_model_info, resolve_model
from whisper_triton.text import WhisperTokenizer
from whisper_triton.transcriber import (
    Transcriber,
    TranscriberSettings,
    WindowCall,
    call_sizes,
    temperature_schedule,
)
from whisper_triton.words import Word

MULTILINGUAL = ModelInfo(n_mels=80, multilingual=True, num_languages=99)
ENGLISH = ModelInfo(n_mels=80, multilingual=False, num_languages=1)


def segment(start: float, end: float, text: str) -> Segment:
    return Segment(start, end, text, [1, 2], 0.0, -0.2, 1.3, 0.01)


class FakeDecode:
    """Answers each window with one segment spanning its audio (in the request's language, as the engine
    does once it detected it); records the calls it got."""

    def __init__(self, language: str = "de", delay: float = 0.3) -> None:
        self.jobs: list[WindowCall] = []
        self.calls: list[int] = []  # windows per engine call
        self.language = language
        self.delay = delay
        self.in_flight = 0
        self.max_in_flight = 0

    async def __call__(self, calls: list[WindowCall]) -> AsyncIterator[tuple[int, WindowResult | Exception]]:
        self.calls.append(len(calls))
        self.jobs += calls
        self.in_flight += len(calls)
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(self.delay)
        for position in reversed(range(len(calls))):  # in any order, as the engine finishes them
            job = calls[position]
            self.in_flight -= 1
            duration = len(job.samples) / 16000
            language = job.options.language or self.language
            yield position, WindowResult(language, 0.9, [segment(0.0, duration, f" window {job.options.window}")],
                                         window=job.options.window,
                                         timings={"encode": 0.5, "batch": 2.0, "queue": 0.01, "transfer": 0.02})


async def collect(transcriber: Transcriber, audio: bytes, request: TranscriptionRequest) -> list[dict[str, Any]]:
    """The events as the entry model sends them (JSON objects)."""
    return [msgspec.to_builtins(event) async for event in transcriber.events(audio, request)]


async def test_windows_in_order_with_absolute_times_and_one_detected_language() -> None:
    recording = long_recording(2.0)
    fake = FakeDecode(language="de")
    events = await collect(Transcriber(MULTILINGUAL, fake), recording.path.read_bytes(), TranscriptionRequest())
    done = events[-1]
    assert done["type"] == "done" and done["language"] == "de" and done["language_probability"] == 0.9
    assert done["duration"] == pytest.approx(recording.duration, abs=0.01)
    assert [e["type"] for e in events[:-1]] == ["segments"] * (len(events) - 1) == ["segments"] * len(fake.jobs)
    # Every window goes out at once, with one request id and its index; the engine resolves the language.
    assert all(job.options.language is None for job in fake.jobs)
    assert len({job.options.request for job in fake.jobs}) == 1 and fake.jobs[0].options.request
    assert sorted(job.options.window for job in fake.jobs) == list(range(len(fake.jobs)))
    # All at once, the first ones in small calls (they reach the engine first).
    assert fake.max_in_flight == len(fake.jobs) == 5 and fake.calls == [1, 2, 2]
    # Each window carries the speech VAD found in it (window seconds), for the engine's resume decisions.
    for job in fake.jobs:
        duration = len(job.samples) / 16000
        assert job.options.speech and all(0 <= a < b <= duration + 0.01 for a, b in job.options.speech)
    segments = done["segments"]
    assert [s["id"] for s in segments] == list(range(len(segments)))
    assert [s["text"] for s in segments] == [f" window {i}" for i in range(len(segments))]
    starts = [s["start"] for s in segments]
    assert starts == sorted(starts) and starts[-1] > 60
    assert all(abs(s["seek"] - s["start"] * 100) < 1 for s in segments)  # seek: mel frames
    assert [e["progress"] for e in events[:-1]][-1] == 1.0


async def test_the_profile_sums_the_stages_when_asked() -> None:
    fake = FakeDecode(delay=0.05)
    plain = await collect(Transcriber(ENGLISH, fake), jfk_wav().read_bytes(), TranscriptionRequest())
    assert "profile" not in plain[-1]
    events = await collect(Transcriber(ENGLISH, fake), jfk_wav().read_bytes(), TranscriptionRequest(profile=True))
    profile = events[-1]["profile"]
    assert profile["windows"] == 1 and profile["mean_batch"] == 2.0
    assert {"decode", "vad", "engine_encode", "engine_queue", "transfer"} <= set(profile["seconds"])
    assert profile["seconds"]["engine_encode"] == 0.5
    assert profile["seconds"]["transfer"] == 0.02
    assert profile["audio_seconds"] == pytest.approx(11.0, abs=0.01) and profile["wall"] > 0


async def test_a_consumer_that_stops_cancels_the_requests_queued_windows() -> None:
    recording = long_recording(2.0)
    cancelled: list[str] = []

    async def cancel(request: str) -> None:
        cancelled.append(request)

    fake = FakeDecode(delay=0.2)
    transcriber = Transcriber(MULTILINGUAL, fake, cancel=cancel)
    events = transcriber.events(recording.path.read_bytes(), TranscriptionRequest())
    first = await anext(events)
    assert isinstance(first, SegmentsEvent)
    await events.aclose()
    await asyncio.sleep(0.05)
    assert cancelled == [fake.jobs[0].options.request]
    # A transcription that runs to its end cancels nothing.
    cancelled.clear()
    await collect(Transcriber(ENGLISH, FakeDecode(delay=0.01), cancel=cancel), jfk_wav().read_bytes(),
                  TranscriptionRequest())
    await asyncio.sleep(0.05)
    assert cancelled == []


async def test_a_short_clip_is_one_window_with_its_speech() -> None:
    jfk = decode_audio(jfk_wav().read_bytes()).samples
    audio = wav_bytes(np.concatenate([jfk, np.zeros(16000 * 8, dtype=np.float32)]))
    fake = FakeDecode()
    await collect(Transcriber(ENGLISH, fake), audio, TranscriptionRequest())
    (job,) = fake.jobs
    assert job.options.speech and job.options.speech[-1][1] < 11.5  # no speech in the trailing silence


class Inventing(FakeDecode):
    """Answers with the real words, then "Thank you." over the window's trailing silence."""

    async def __call__(self, calls: list[WindowCall]) -> AsyncIterator[tuple[int, WindowResult | Exception]]:
        self.jobs += calls
        for position, job in enumerate(calls):
            yield position, WindowResult("en", 0.9, [segment(0.0, 11.0, " And so my fellow Americans..."),
                                                     segment(16.0, 18.0, " Thank you.")], window=job.options.window)


async def test_nothing_is_decoded_where_nobody_speaks_and_segments_away_from_speech_are_dropped() -> None:
    jfk = decode_audio(jfk_wav().read_bytes()).samples
    audio = wav_bytes(np.concatenate([jfk, nonspeech("room_tone", 9.0)]))
    inventing = Inventing()
    events = await collect(Transcriber(ENGLISH, inventing), audio, TranscriptionRequest())
    assert [s["text"] for s in events[-1]["segments"]] == [" And so my fellow Americans..."]
    assert events[-1]["text"] == "And so my fellow Americans..."
    # With VAD off, Whisper alone decides: its segments are kept as they are.
    events = await collect(Transcriber(ENGLISH, inventing), audio, TranscriptionRequest(vad=False))
    assert [s["text"] for s in events[-1]["segments"]] == [" And so my fellow Americans...", " Thank you."]
    for kind in ("silence", "white_noise", "music"):
        silent = Inventing()
        audio = wav_bytes(nonspeech(kind, 5.0))
        done = (await collect(Transcriber(ENGLISH, silent), audio, TranscriptionRequest()))[-1]
        assert silent.jobs == [] and done["text"] == "" and done["segments"] == [] and done["duration"] == 5.0


async def test_validation() -> None:
    transcriber = Transcriber(ENGLISH, FakeDecode())
    with pytest.raises(InvalidRequestError) as info:
        await collect(transcriber, jfk_wav().read_bytes(), TranscriptionRequest(task="translate"))
    assert info.value.param == "model"
    with pytest.raises(InvalidRequestError):
        await collect(transcriber, jfk_wav().read_bytes(), TranscriptionRequest(task="summarize"))
    with pytest.raises(AudioTooShortError):
        await collect(transcriber, jfk_wav().read_bytes()[:44 + 1000], TranscriptionRequest())
    with pytest.raises(InvalidRequestError) as info:
        await collect(transcriber, jfk_wav().read_bytes(), TranscriptionRequest(language="de"))
    assert info.value.param == "language" and "English-only" in info.value.message
    english = await collect(transcriber, jfk_wav().read_bytes(), TranscriptionRequest(language="en-GB"))
    assert english[-1]["language"] == "en" and "language_probability" not in english[-1]  # given, not detected


def test_temperature_schedule() -> None:
    assert temperature_schedule(0.0) == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    assert temperature_schedule(0.5) == (0.5, 0.7, 0.9)
    assert temperature_schedule(1.0) == (1.0,)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(InvalidRequestError):
            temperature_schedule(bad)


def test_last_timestamp() -> None:
    path = resolve_model("tiny.en").path
    info = read_model_info(path)
    tokenizer = WhisperTokenizer(path / "tokenizer.json", info.multilingual, info.num_languages)
    begin = tokenizer.timestamp_begin
    text = tokenizer.encode(" Hello there.")
    # A closed segment and an opened one without text: the audio is transcribed up to the closing time.
    assert last_timestamp(tokenizer, [begin, *text, begin + 100, begin + 110, tokenizer.eot]) == pytest.approx(2.0)
    assert last_timestamp(tokenizer, [begin, *text, begin + 100, tokenizer.eot]) == 2.0
    assert last_timestamp(tokenizer, [begin, *text]) is None  # text runs to the end


async def test_align_packs_given_segments_into_windows_with_relative_times() -> None:
    fake = FakeDecode()
    transcript = [{"start": 0.5, "end": 4.0, "text": "first"}, {"start": 5.0, "end": 9.0, "text": "second"},
                  {"start": 40.0, "end": 45.0, "text": "third"}]
    audio = long_recording(1.0).path.read_bytes()
    events = [msgspec.to_builtins(e) async for e in Transcriber(ENGLISH, fake).align(audio, transcript)]
    assert len(fake.jobs) == 2  # 0.5-9 s in one window, 40-45 s in another
    first, second = (job.options for job in fake.jobs)
    assert first.word_timestamps and first.given == (("first", 0.5, 4.0), ("second", 5.0, 9.0))
    assert second.given is not None and second.given[0][0] == "third"
    assert second.given[0][1] == pytest.approx(0.5, abs=0.01)  # 40 s, relative to a window from 39.5 s
    assert events[-1]["type"] == "done" and events[-1]["task"] == "align"
    with pytest.raises(InvalidRequestError):
        [e async for e in Transcriber(ENGLISH, fake).align(audio, [{"text": "no times"}])]


async def test_windows_go_to_the_engine_a_few_per_call_and_a_failed_call_fails_the_request() -> None:
    recording = long_recording(2.0)
    fake = FakeDecode(delay=0.01)
    settings = TranscriberSettings(windows_per_call=2, max_windows_in_flight=4)
    events = await collect(Transcriber(ENGLISH, fake, settings=settings), recording.path.read_bytes(),
                           TranscriptionRequest())
    assert fake.calls == [1, 2, 2] and sorted(job.options.window for job in fake.jobs) == list(range(5))
    assert fake.max_in_flight <= 4
    assert list(itertools.islice(call_sizes(16), 7)) == [1, 2, 4, 8, 16, 16, 16]
    assert list(itertools.islice(call_sizes(2), 4)) == [1, 2, 2, 2]
    assert [s["text"] for s in events[-1]["segments"]] == [f" window {i}" for i in range(len(fake.jobs))]

    async def broken(calls: list[WindowCall]) -> AsyncIterator[tuple[int, WindowResult | Exception]]:
        raise RuntimeError("BLS failed")
        yield  # an async generator

    with pytest.raises(RuntimeError, match="BLS failed"):
        await collect(Transcriber(ENGLISH, broken), recording.path.read_bytes(), TranscriptionRequest())


def one_by_one(decode: Callable[[WindowCall], Awaitable[WindowResult]]) -> Callable[
        [list[WindowCall]], AsyncIterator[tuple[int, WindowResult | Exception]]]:
    """A decode function of several windows per call, from one of a single window (for tests)."""
    async def many(calls: list[WindowCall]) -> AsyncIterator[tuple[int, WindowResult | Exception]]:
        for position, call in enumerate(calls):
            yield position, await decode(call)

    return many


class Scripted(FakeDecode):
    """Answers window i with `answers[i]` (none past them): (start, end, text) segments, with words when
    `probability` is set (one per piece of text, spread over the segment)."""

    def __init__(self, answers: list[list[tuple[float, float, str]]], probability: float | None = None) -> None:
        super().__init__()
        self.answers, self.probability = answers, probability

    async def __call__(self, calls: list[WindowCall]) -> AsyncIterator[tuple[int, WindowResult | Exception]]:
        self.jobs += calls
        for position, job in enumerate(calls):
            answer = self.answers[job.options.window] if job.options.window < len(self.answers) else []
            segments = [segment(start, end, text) for start, end, text in answer]
            for s in segments if self.probability is not None else []:
                pieces = s.text.split()
                step = (s.end - s.start) / len(pieces)
                s.words = [Word(f" {p}", s.start + k * step, s.start + (k + 1) * step, self.probability, [1])
                           for k, p in enumerate(pieces)]
            yield position, WindowResult("en", 0.9, segments, window=job.options.window)


NEW_ONE = " We need to find a new one."


async def test_a_window_that_starts_by_saying_the_previous_ones_last_segment_again_loses_it() -> None:
    audio = long_recording(1.0).path.read_bytes()  # VAD off: windows of 30 s, back to back
    answers = [[(0.0, 28.0, " Hello there."), (28.0, 30.0, NEW_ONE)], [(0.0, 2.0, NEW_ONE), (2.0, 5.0, " Bye.")]]
    request = TranscriptionRequest(vad=False, profile=True)
    done = (await collect(Transcriber(ENGLISH, Scripted(answers)), audio, request))[-1]
    assert [s["text"] for s in done["segments"]] == [" Hello there.", NEW_ONE, " Bye."]
    assert [s["id"] for s in done["segments"]] == [0, 1, 2] and done["profile"]["loops"] == 1
    # Said again later on: speech, kept (VAD off: nothing tells it from silence).
    later = [answers[0], [(10.0, 12.0, NEW_ONE), (12.0, 15.0, " Bye.")]]
    done = (await collect(Transcriber(ENGLISH, Scripted(later)), audio, TranscriptionRequest(vad=False)))[-1]
    assert [s["text"] for s in done["segments"]] == [" Hello there.", NEW_ONE, NEW_ONE, " Bye."]
    # The check off.
    unchecked = Transcriber(ENGLISH, Scripted(answers), settings=TranscriberSettings(loop_check=False))
    done = (await collect(unchecked, audio, TranscriptionRequest(vad=False)))[-1]
    assert [s["text"] for s in done["segments"]] == [" Hello there.", NEW_ONE, NEW_ONE, " Bye."]
    assert all(job.options.loop_check is False for job in unchecked._decode.jobs)  # type: ignore[attr-defined]


async def test_a_doubtful_segment_over_a_blip_in_long_silence_is_dropped() -> None:
    # Speech, 10 s of room tone, half a second of JFK, 10 s of room tone, speech: one window (it fits 30 s)
    # from the first speech to the last; VAD finds the blip at about 12.0-12.7 s.
    jfk = decode_audio(jfk_wav().read_bytes()).samples
    audio = wav_bytes(np.concatenate([jfk[:32000], nonspeech("room_tone", 10.0), jfk[4800:16000],
                                      nonspeech("room_tone", 10.0), jfk[112000:144000]]))
    answers = [[(0.3, 2.0, " And so my"), (11.5, 13.6, " Thank you for watching."), (22.7, 24.7, " ask not")]]
    doubtful = Scripted(answers, probability=0.05)
    done = (await collect(Transcriber(ENGLISH, doubtful), audio, TranscriptionRequest(profile=True)))[-1]
    (job,) = doubtful.jobs
    assert any(11.9 < start < 12.2 for start, _ in job.options.speech or ()), job.options.speech
    assert [s["text"] for s in done["segments"]] == [" And so my", " ask not"]
    assert done["profile"]["dropped_in_silence"] == 1
    # Words Whisper was sure of, no words, the check off, or VAD off: kept.
    for transcriber, request in [
        (Transcriber(ENGLISH, Scripted(answers, probability=0.9)), TranscriptionRequest()),
        (Transcriber(ENGLISH, Scripted(answers)), TranscriptionRequest()),
        (Transcriber(ENGLISH, Scripted(answers, probability=0.05),
                     settings=TranscriberSettings(hallucination_silence_threshold=0.0)), TranscriptionRequest()),
        (Transcriber(ENGLISH, Scripted(answers, probability=0.05)), TranscriptionRequest(vad=False)),
    ]:
        done = (await collect(transcriber, audio, request))[-1]
        assert [s["text"] for s in done["segments"]] == [" And so my", " Thank you for watching.", " ask not"]


async def test_windows_go_to_the_engine_while_vad_plans_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first windows are decoded before VAD has seen the end of the audio (an hour takes VAD about a
    second), and progress follows the audio; every window is decoded once, in order."""
    import threading

    from whisper_triton import transcriber as module
    from whisper_triton.windows import plan_windows

    recording = long_recording(2.0)
    first_call = threading.Event()
    waited: list[bool] = []

    def planned(samples: np.ndarray, use_vad: bool = True) -> Any:
        plan = plan_windows(samples, use_vad)
        yield plan[:2]
        waited.append(first_call.wait(timeout=10))  # VAD "still running" until the engine has work
        yield plan[2:]

    class Recording(FakeDecode):
        async def __call__(self, calls: list[WindowCall]) -> AsyncIterator[tuple[int, WindowResult | Exception]]:
            first_call.set()
            async for item in super().__call__(calls):
                yield item

    monkeypatch.setattr(module, "planned_windows", planned)
    fake = Recording(delay=0.05)
    events = await collect(Transcriber(MULTILINGUAL, fake), recording.path.read_bytes(), TranscriptionRequest())
    assert waited == [True]
    assert sorted(job.options.window for job in fake.jobs) == list(range(5)) and fake.calls[:2] == [1, 1]
    progress = [e["progress"] for e in events[:-1]]
    assert progress == sorted(progress) and progress[-1] == 1.0 and 0 < progress[0] < 0.5
    assert [s["text"] for s in events[-1]["segments"]] == [f" window {i}" for i in range(5)]


async def test_a_failure_of_vad_fails_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    from whisper_triton import transcriber as module

    def planned(samples: np.ndarray, use_vad: bool = True) -> Any:
        raise ValueError("VAD broke")
        yield []  # a generator, like planned_windows

    monkeypatch.setattr(module, "planned_windows", planned)
    with pytest.raises(ValueError, match="VAD broke"):
        await collect(Transcriber(MULTILINGUAL, FakeDecode(delay=0.01)), long_recording(2.0).path.read_bytes(),
                      TranscriptionRequest())
