"""The one way the frontend transcribes: admission, the call to Triton, the audio counted, the outcome recorded.

The OpenAI routes, chat completions and the task runner all go through `Transcriptions`. It raises domain
errors only (`whisper_triton.errors`); the HTTP edge (`frontend.errors`) turns them into statuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable

import msgspec

from frontend.database import StoreError
from frontend.settings import FrontendSettings
from frontend.tasks.records import TaskError, TaskRequest, new_task
from frontend.tasks.store import TaskStore
from frontend.triton import TritonClient
from whisper_triton.contract import DoneEvent, Event, TranscriptionRequest
from whisper_triton.errors import NotFoundError, ServiceError, UnavailableError

log = logging.getLogger("frontend.transcription")

ObserveFn = Callable[[float, str], None]  # (seconds of audio transcribed, task)


def unknown_model(model: str) -> NotFoundError:
    return NotFoundError(f"The model `{model}` does not exist or you do not have access to it.", param="model",
                         code="model_not_found")


def served_model(settings: FrontendSettings, requested: str | None) -> str:
    """The served model a request names (an id, or an alias of the default)."""
    model = settings.resolve_model(requested or "")
    if model is None:
        raise unknown_model(requested or "")
    return model


class Slot:
    """One admitted transcription; `release` frees it (once, however often it is called)."""

    def __init__(self, admission: Admission) -> None:
        self._admission: Admission | None = admission

    def release(self) -> None:
        admission, self._admission = self._admission, None
        if admission is not None:
            admission.in_flight = max(0, admission.in_flight - 1)


class Admission:
    """Bounds the transcriptions in flight; beyond the bound, requests are refused (retry later)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    def admit(self) -> Slot:
        if self.in_flight >= self.limit:
            raise UnavailableError("The server is busy with other transcriptions; retry shortly.")
        self.in_flight += 1
        return Slot(self)


class Recording(msgspec.Struct, frozen=True):
    """A synchronous request kept as a finished task: how it was asked."""

    model: str  # as the client named it (an alias stays an alias)
    dialect: str = "openai"
    file_name: str | None = None


class Transcriptions:
    def __init__(self, triton: TritonClient, admission: Admission, tasks: TaskStore | None = None,
                 observe: ObserveFn | None = None) -> None:
        self.triton = triton
        self.admission = admission
        self._tasks = tasks
        self._observe = observe

    def admit(self) -> Slot:
        """A slot for a transcription the client waits for (tasks wait in their queue instead)."""
        return self.admission.admit()

    async def events(self, audio: bytes, request: TranscriptionRequest,
                     record: Recording | None = None) -> AsyncGenerator[Event, None]:
        """The entry model's events, the last one `done`. Its audio is counted; with `record`, the outcome
        (done, failed, or the caller gone) is kept as a finished task."""
        try:
            async with contextlib.aclosing(self.triton.transcribe(audio, request)) as events:
                async for event in events:
                    if isinstance(event, DoneEvent):  # the last event: counted and recorded before it is passed on
                        if self._observe is not None:
                            self._observe(event.duration, "align" if request.transcript is not None else request.task)
                        await self._record(record, request, event, None)
                    yield event
        except ServiceError as exc:
            await self._record(record, request, None, TaskError(exc.message, exc.code))
            raise
        except asyncio.CancelledError:  # the caller is gone (a client that left stops its transcription)
            gone = TaskError("The client closed the connection before the answer.", "client_closed_request")
            await self._record(record, request, None, gone)
            raise

    async def result(self, audio: bytes, request: TranscriptionRequest, record: Recording | None = None) -> DoneEvent:
        """The `done` event of a transcription."""
        async with contextlib.aclosing(self.events(audio, request, record)) as events:
            async for event in events:
                if isinstance(event, DoneEvent):
                    return event
        raise UnavailableError("The inference server closed the stream early; retry the request.")

    async def _record(self, record: Recording | None, request: TranscriptionRequest, done: DoneEvent | None,
                      error: TaskError | None) -> None:
        if record is None or self._tasks is None:
            return
        # What was asked, without the voices' audio (clips and embeddings stay out of the database).
        fields = msgspec.structs.asdict(msgspec.structs.replace(
            request, model=record.model, stream=False, known_speaker_references=(), known_speaker_embeddings=()))
        asked = TaskRequest(**fields, dialect=record.dialect, file_name=record.file_name)
        task = new_task(asked, "sync", status="completed" if error is None else "failed")
        task.completed_at = time.time()
        task.progress = 100.0 if error is None else 0.0
        task.result = done
        task.audio_duration = done.duration if done else None
        task.error = error
        try:
            await self._tasks.create(task)
        except StoreError as exc:
            log.error("recording a synchronous request failed: %s", exc)
