"""insanely-fast-whisper-api's task API: URLs transcribed as tasks, waited for or followed by webhook."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath

from frontend.dialects.parsing import iso_time, language, owner_name, webhook
from frontend.errors import APIError, bad_request
from frontend.guards import require_api_key
from frontend.keys import Principal
from frontend.request_bodies import read_json_object
from frontend.settings import FrontendSettings
from frontend.tasks.queue import TaskQueue
from frontend.tasks.records import Task, TaskRequest
from whisper_triton.errors import is_client_fault


class InsanelyFastWhisperController(Controller):
    """insanely-fast-whisper-api's routes."""

    guards = [require_api_key]  # noqa: RUF012
    tags = ["tasks (insanely-fast-whisper-api)"]  # noqa: RUF012

    @post("/", operation_id="ifwCreate", status_code=200)
    async def create(self, request: Request[Any, Any, Any], settings: NamedDependency[FrontendSettings],
                     queue: NamedDependency[TaskQueue], principal: NamedDependency[Principal]) -> dict[str, Any]:
        """`{url, task, language, batch_size, timestamp, diarise_audio, webhook, is_async, managed_task_id}`."""
        body = await read_json_object(request)
        url = body.get("url")
        if not isinstance(url, str) or not url:
            raise bad_request("You must provide the 'url' of the audio.", param="url",
                              code="missing_required_parameter")
        timestamp = body.get("timestamp", "chunk")
        if timestamp not in ("chunk", "word"):
            raise bad_request("timestamp must be 'chunk' or 'word'.", param="timestamp")
        task = body.get("task", "transcribe")
        if task not in ("transcribe", "translate"):
            raise bad_request("task must be 'transcribe' or 'translate'.", param="task")
        hook = body.get("webhook") or {}
        if not isinstance(hook, dict):
            raise bad_request("webhook must be an object {url, header}.", param="webhook")
        await queue.check_url(url)
        if hook.get("url"):
            await queue.check_url(str(hook["url"]), param="webhook")
        task_request = TaskRequest(
            model=str(body.get("model") or settings.served_model), task=task,
            language=language(body.get("language") if isinstance(body.get("language"), str) else None),
            word_timestamps=timestamp == "word", dialect="ifw", url=url, diarize=bool(body.get("diarise_audio")),
            webhook=webhook(hook.get("url"), hook.get("header", hook.get("headers"))),
        )
        managed = body.get("managed_task_id")
        queued = await queue.enqueue(task_request, "url", None, principal,
                                     task_id=str(managed) if managed else None)
        if body.get("is_async", False):
            return {"detail": "Task is being processed in the background", "status": "processing",
                    "task_id": queued.id}
        finished = await queue.wait_for(queued.id)
        if finished.status != "completed":
            error = finished.error
            raise APIError(400 if error and is_client_fault(error.code) else 500,
                           error.message if error else f"The task ended {finished.status}.",
                           code=error.code if error else None)
        return ifw_output(finished)

    @get("/tasks", operation_id="ifwListTasks")
    async def list_tasks(self, queue: NamedDependency[TaskQueue], principal: NamedDependency[Principal],
                         state: State) -> dict[str, list[dict[str, Any]]]:
        """The caller's most recent tasks (every key's for the admin), newest first."""
        tasks = await queue.recent(principal)
        return {"tasks": [ifw_status(task, with_output=False, owner=owner_name(state, task)) for task in tasks]}

    @get("/status/{task_id:str}", operation_id="ifwStatus")
    async def status(self, task_id: FromPath[str], queue: NamedDependency[TaskQueue],
                     principal: NamedDependency[Principal], state: State) -> dict[str, Any]:
        task = await queue.find(task_id, principal)
        return ifw_status(task, owner=owner_name(state, task))

    @delete("/cancel/{task_id:str}", operation_id="ifwCancel", status_code=200)
    async def cancel(self, task_id: FromPath[str], queue: NamedDependency[TaskQueue],
                     principal: NamedDependency[Principal]) -> dict[str, Any]:
        await queue.cancel(task_id, principal)
        return {"status": "cancelled", "task_id": task_id}


def ifw_output(task: Task) -> dict[str, Any]:
    """insanely-fast-whisper's output: `text`, `chunks` of segments (or words), `speakers`."""
    segments = task.result.segments if task.result else []
    if task.request.word_timestamps:
        chunks = [{"timestamp": [w.start, w.end], "text": w.word} for s in segments for w in s.words]
    else:
        chunks = [{"timestamp": [s.start, s.end], "text": s.text} for s in segments]
    speakers = [{"speaker": s.speaker, "timestamp": [s.start, s.end], "text": s.text}
                for s in segments if s.speaker is not None]
    return {"speakers": speakers, "chunks": chunks, "text": task.result.text if task.result else ""}


def ifw_status(task: Task, with_output: bool = True, owner: str | None = None) -> dict[str, Any]:
    """A task's status; `owner` as in `whisperx.task_view`."""
    body: dict[str, Any] = {"task_id": task.id, "status": task.status, "progress": task.progress,
                            "url": task.request.url, "created_at": iso_time(task.created_at),
                            "webhook": task.webhook_delivery}
    if owner is not None:
        body["owner"] = owner
    if task.error is not None:
        body["error"] = task.error.message
    if with_output and task.result is not None:
        body["output"] = ifw_output(task)
    return body
