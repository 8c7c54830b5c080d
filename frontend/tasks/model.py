"""The one task model under every API dialect: state, request, progress, timings, result, error."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Literal

import msgspec

Status = Literal["queued", "processing", "completed", "failed", "cancelled"]
FINISHED: tuple[Status, ...] = ("completed", "failed", "cancelled")
TASK_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class Webhook(msgspec.Struct, frozen=True):
    url: str
    headers: dict[str, str] = msgspec.field(default_factory=dict)


class TaskRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    """What was asked: enough to run (or re-run after a crash) the task from the stored audio or URL."""

    model: str
    task: str = "transcribe"
    language: str | None = None
    prompt: str | None = None
    temperature: float = 0.0
    word_timestamps: bool = False
    dialect: str = "whisperx"  # whisperx | ifw | openai | service
    file_name: str | None = None
    url: str | None = None
    webhook: Webhook | None = None
    transcript: list[dict[str, Any]] | None = None  # task "align": segments whose words are timed
    diarize: bool = False
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None


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
    result: dict[str, Any] | None = None
    error: TaskError | None = None
    webhook_delivery: dict[str, Any] | None = None
    attempts: int = 0
    cancel_requested: bool = False

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def processing_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        return round((self.completed_at or time.time()) - self.started_at, 3)


def new_task(request: TaskRequest, source: str, task_id: str | None = None,
             status: Status = "queued") -> Task:
    return Task(id=task_id or uuid.uuid4().hex, status=status, source=source, request=request,
                created_at=time.time(), started_at=time.time() if status == "processing" else None)


def short_id(task_id: str) -> str:
    """Task ids in logs are shortened: enough to correlate, not to address the task."""
    return task_id[:8]
