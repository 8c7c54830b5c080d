"""The one task model under every API dialect: state, request, progress, timings, result, error."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Literal

import msgspec

from whisper_triton.contract import DoneEvent, TranscriptionRequest

Status = Literal["queued", "processing", "completed", "failed", "cancelled"]
FINISHED: tuple[Status, ...] = ("completed", "failed", "cancelled")
TASK_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class Webhook(msgspec.Struct, frozen=True):
    url: str
    headers: dict[str, str] = msgspec.field(default_factory=dict)


class TaskRequest(TranscriptionRequest, frozen=True, omit_defaults=True):
    """What was asked: enough to run (or re-run after a crash) the task from the stored audio or URL.

    The transcription request itself (task "align": a transcription of a given `transcript`), and where the
    task came from and goes to.
    """

    dialect: str = "whisperx"  # whisperx | ifw | openai | service
    file_name: str | None = None
    url: str | None = None
    webhook: Webhook | None = None
    created_by_request: str | None = None  # the x-request-id of the request that created it, for its log lines

    def transcription(self) -> TranscriptionRequest:
        """The request for the entry model."""
        fields = {name: getattr(self, name) for name in TranscriptionRequest.__struct_fields__}
        if self.transcript is not None:
            fields["task"] = "transcribe"
        return TranscriptionRequest(**fields)


class TaskError(msgspec.Struct, frozen=True):
    message: str
    code: str | None = None


class Task(msgspec.Struct):
    id: str
    status: Status
    source: str  # upload | url | sync
    request: TaskRequest
    created_at: float
    progress: float = 0.0  # percent
    started_at: float | None = None
    completed_at: float | None = None
    audio_duration: float | None = None
    result: DoneEvent | None = None
    error: TaskError | None = None
    webhook_delivery: dict[str, Any] | None = None
    attempts: int = 0
    cancel_requested: bool = False
    owner: str = ""  # the id of the API key that created it ("" with no keys configured)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def processing_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        return round((self.completed_at or time.time()) - self.started_at, 3)


def new_task(request: TaskRequest, source: str, task_id: str | None = None,
             status: Status = "queued", owner: str = "") -> Task:
    return Task(id=task_id or uuid.uuid4().hex, status=status, source=source, request=request,
                created_at=time.time(), started_at=time.time() if status == "processing" else None, owner=owner)


def short_id(task_id: str) -> str:
    """Task ids in logs are shortened: enough to correlate, not to address the task."""
    return task_id[:8]
