"""The task APIs of two projects users come from, on one task model (`frontend.tasks`): whisperX-FastAPI's
(`whisperx`) and insanely-fast-whisper-api's (`ifw`)."""

from __future__ import annotations

from typing import Any

from frontend.dialects.ifw import ifw_output
from frontend.dialects.whisperx import task_view
from frontend.tasks.records import Task


def webhook_payload(task: Task) -> dict[str, Any]:
    """What a task's webhook says, in the dialect the task was asked in."""
    if task.request.dialect == "ifw":
        payload: dict[str, Any] = {"task_id": task.id, "status": task.status}
        if task.status == "completed":
            payload["output"] = ifw_output(task)
        if task.error is not None:
            payload["error"] = task.error.message
        return payload
    return task_view(task)
