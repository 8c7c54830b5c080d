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

from frontend.admission import Admission, Slot
from frontend.database import StoreError
from frontend.keys import OPEN, Principal
from frontend.limits import KeyLimiter
from frontend.logs import current_request_id
from frontend.model_admin import ModelAdmin
from frontend.settings import FrontendSettings
from frontend.tasks.records import TaskError, TaskRequest, new_task
from frontend.tasks.store import TaskStore
from frontend.triton import TritonClient
from whisper_triton.contract import DoneEvent, Event, TranscriptionRequest
from whisper_triton.errors import NotFoundError, ServiceError, UnavailableError

log = logging.getLogger("frontend.transcription")
__all__ = ["Admission", "Recording", "Slot", "Transcriptions", "served_model"]

ObserveFn = Callable[[float, str, str], None]  # (seconds of audio transcribed, task, key name)
NameOfFn = Callable[[str], str]  # the name of a key id


def unknown_model(model: str) -> NotFoundError:
    return NotFoundError(f"The model `{model}` does not exist or you do not have access to it.", param="model",
                         code="model_not_found")


def served_model(settings: FrontendSettings, requested: str | None) -> str:
    """The served model a request names (an id, or an alias of the default)."""
    model = settings.resolve_model(requested or "")
    if model is None:
        raise unknown_model(requested or "")
    return model


class Recording(msgspec.Struct, frozen=True):
    """A synchronous request kept as a finished task: how it was asked."""

    model: str  # as the client named it (an alias stays an alias)
    dialect: str = "openai"
    file_name: str | None = None
    owner: str = ""  # the id of the caller's key, whose task the record is


class Transcriptions:
    def __init__(self, triton: TritonClient, admission: Admission, tasks: TaskStore | None = None,
                 observe: ObserveFn | None = None, limiter: KeyLimiter | None = None,
                 name_of: NameOfFn | None = None) -> None:
        self.triton = triton
        self.admission = admission
        self._tasks = tasks
        self._observe = observe
        self.limiter = limiter
        self._name_of = name_of

    async def served_model(self, settings: FrontendSettings, requested: str | None) -> str:
        """The served model a request names: an id, an alias of the default, or a model fetched over HTTP (Triton
        is asked, so that every frontend replica knows what any of them fetched)."""
        if requested and settings.resolve_model(requested) is None and await self._fetched(requested):
            return requested
        return served_model(settings, requested)

    async def _fetched(self, model: str) -> bool:
        return await ModelAdmin(self.triton.grpc).is_served(model)

    async def admit(self, principal: Principal = OPEN) -> Slot:
        """A slot for a transcription the client waits for (tasks wait in their queue instead): refused over
        the key's limits (RateLimitError), else given in the key's turn (UnavailableError when full)."""
        ticket = self.limiter.admit(principal) if self.limiter is not None else None
        try:
            slot = await self.admission.admit(principal.key_id)
        except BaseException:
            if ticket is not None:
                ticket.release()
            raise
        return Slot(slot.release, ticket.release) if ticket is not None else slot

    def owner(self, key_id: str) -> Principal:
        """The caller a stored task's owner (a key id) stands for, whose audio budget its transcription uses."""
        name = self._name_of(key_id) if self._name_of is not None else (key_id or OPEN.name)
        return Principal(key_id=key_id, name=name)

    async def events(self, audio: bytes, request: TranscriptionRequest, record: Recording | None = None,
                     principal: Principal | None = None) -> AsyncGenerator[Event, None]:
        """The entry model's events, the last one `done`. Its audio is counted (to `principal`'s budget); with
        `record`, the outcome (done, failed, or the caller gone) is kept as a finished task."""
        try:
            async with contextlib.aclosing(self.triton.transcribe(audio, request)) as events:
                async for event in events:
                    if isinstance(event, DoneEvent):  # the last event: counted and recorded before it is passed on
                        self._count(event.duration, request, principal)
                        await self._record(record, request, event, None)
                    yield event
        except ServiceError as exc:
            await self._record(record, request, None, TaskError(exc.message, exc.code))
            raise
        except asyncio.CancelledError:  # the caller is gone (a client that left stops its transcription)
            gone = TaskError("The client closed the connection before the answer.", "client_closed_request")
            await self._record(record, request, None, gone)
            raise

    async def result(self, audio: bytes, request: TranscriptionRequest, record: Recording | None = None,
                     principal: Principal | None = None) -> DoneEvent:
        """The `done` event of a transcription."""
        async with contextlib.aclosing(self.events(audio, request, record, principal)) as events:
            async for event in events:
                if isinstance(event, DoneEvent):
                    return event
        raise UnavailableError("The inference server closed the stream early; retry the request.")

    def _count(self, seconds: float, request: TranscriptionRequest, principal: Principal | None) -> None:
        if self._observe is not None:
            task = "align" if request.transcript is not None else request.task
            self._observe(seconds, task, principal.name if principal is not None else "none")
        if self.limiter is not None and principal is not None:
            self.limiter.record_audio(principal, seconds)

    async def _record(self, record: Recording | None, request: TranscriptionRequest, done: DoneEvent | None,
                      error: TaskError | None) -> None:
        if record is None or self._tasks is None:
            return
        # What was asked, without the voices' audio (clips and embeddings stay out of the database).
        fields = msgspec.structs.asdict(msgspec.structs.replace(
            request, model=record.model, stream=False, known_speaker_references=(), known_speaker_embeddings=()))
        asked = TaskRequest(**fields, dialect=record.dialect, file_name=record.file_name,
                            created_by_request=current_request_id())
        task = new_task(asked, "sync", status="completed" if error is None else "failed", owner=record.owner)
        task.completed_at = time.time()
        task.progress = 100.0 if error is None else 0.0
        task.result = done
        task.audio_duration = done.duration if done else None
        task.error = error
        try:
            await self._tasks.create(task)
        except StoreError as exc:
            log.error("recording a synchronous request failed: %s", exc)
