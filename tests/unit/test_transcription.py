"""The frontend's one transcription use case, with a fake Triton: what is counted and what is recorded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any, cast

import pytest

from frontend.tasks.store import TaskStore
from frontend.transcription import Admission, Recording, Transcriptions
from frontend.triton import TritonClient
from whisper_triton.contract import DoneEvent, Event, SegmentsEvent, TranscriptionRequest
from whisper_triton.errors import InvalidAudioError

DONE = DoneEvent(task="transcribe", language="en", duration=11.0, text="And so.", segments=[])


class FakeTriton:
    def __init__(self, failure: Exception | None = None, delay: float = 0.0) -> None:
        self.failure = failure
        self.delay = delay

    async def transcribe(self, audio: bytes, request: TranscriptionRequest) -> AsyncGenerator[Event, None]:
        yield SegmentsEvent(language="en", progress=0.5, segments=[])
        await asyncio.sleep(self.delay)
        if self.failure is not None:
            raise self.failure
        yield DONE


def use_case(triton: FakeTriton, store: TaskStore, seen: list[tuple[float, str]]) -> Transcriptions:
    return Transcriptions(cast(TritonClient, triton), Admission(2), store,
                          observe=lambda s, t, _key: seen.append((s, t)))


async def recorded(store: TaskStore) -> list[Any]:
    return [(t.source, t.status, t.request.model, t.request.file_name, t.error and t.error.code)
            for t in await store.list_tasks()]


async def test_a_result_is_counted_and_recorded_as_asked(store: TaskStore) -> None:
    seen: list[tuple[float, str]] = []
    transcriptions = use_case(FakeTriton(), store, seen)
    asked = TranscriptionRequest(model="tiny.en", known_speaker_names=("a",), known_speaker_references=(b"clip",))
    assert await transcriptions.result(b"audio", asked, Recording("whisper-1", file_name="a.wav")) == DONE
    assert seen == [(11.0, "transcribe")]
    assert await recorded(store) == [("sync", "completed", "whisper-1", "a.wav", None)]
    (task,) = await store.list_tasks()
    assert task.result == DONE and task.request.known_speaker_references == ()  # no audio in the database
    # Without a recording (chat, tasks), only counted.
    await transcriptions.result(b"audio", TranscriptionRequest(transcript=[{"start": 0, "end": 1, "text": "x"}]))
    assert seen[-1] == (11.0, "align") and len(await store.list_tasks()) == 1


async def test_a_failure_or_a_client_that_left_is_recorded_too(store: TaskStore) -> None:
    failing = use_case(FakeTriton(InvalidAudioError("Not audio.")), store, [])
    with pytest.raises(InvalidAudioError):
        await failing.result(b"x", TranscriptionRequest(), Recording("whisper-1"))
    slow = use_case(FakeTriton(delay=10), store, [])
    work = asyncio.ensure_future(slow.result(b"x", TranscriptionRequest(), Recording("whisper-1")))
    await asyncio.sleep(0.05)
    work.cancel()
    with pytest.raises(asyncio.CancelledError):
        await work
    assert sorted(await recorded(store)) == [("sync", "failed", "whisper-1", None, "client_closed_request"),
                                             ("sync", "failed", "whisper-1", None, "invalid_audio")]


async def test_a_stream_closed_early_records_nothing(store: TaskStore) -> None:
    events = use_case(FakeTriton(delay=10), store, []).events(b"x", TranscriptionRequest(), Recording("m"))
    assert isinstance(await anext(events), SegmentsEvent)
    await events.aclose()
    assert await store.list_tasks() == []
