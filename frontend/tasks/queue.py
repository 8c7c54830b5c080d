"""What both task dialects do with tasks: queue them for the runner, find, wait for, delete and cancel them."""

from __future__ import annotations

import asyncio

import msgspec

from frontend.net import FetchError, UnsafeUrlError, UrlPolicy, check_url
from frontend.settings import FrontendSettings
from frontend.tasks.records import TASK_ID, Task, TaskRequest, new_task
from frontend.tasks.runner import TaskRunner
from frontend.tasks.store import TaskStore
from frontend.transcription import served_model
from whisper_triton.errors import ConflictError, InvalidRequestError, NotFoundError, UnavailableError


def task_not_found(task_id: str) -> NotFoundError:
    return NotFoundError(f"No task with id '{task_id[:64]}'.", param="task_id", code="task_not_found")


class TaskQueue:
    def __init__(self, store: TaskStore, runner: TaskRunner, settings: FrontendSettings, policy: UrlPolicy) -> None:
        self.store = store
        self.runner = runner
        self.settings = settings
        self.policy = policy

    async def enqueue(self, request: TaskRequest, source: str, audio: bytes | None, task_id: str | None = None) -> Task:
        """Stores a queued task (first in, first out); refused while the queue is full."""
        request = msgspec.structs.replace(request, model=served_model(self.settings, request.model))
        if task_id is not None:
            if not TASK_ID.match(task_id):
                raise InvalidRequestError("Task ids are 1 to 64 letters, digits, '-' or '_'.", param="managed_task_id")
            if await self.store.get(task_id) is not None:
                raise ConflictError(f"A task with id '{task_id}' exists.", param="managed_task_id", code="task_exists")
        task = new_task(request, source, task_id)
        if not await self.store.create(task, audio, max_queued=self.settings.max_task_queue_size):
            raise UnavailableError(f"The task queue is full ({self.settings.max_task_queue_size} waiting); "
                                   "retry later.")
        self.runner.wake()
        return task

    async def check_url(self, url: str, param: str = "url") -> None:
        """Refuses a URL that will not be fetched (scheme, private address unless allowed, bad host)."""
        try:
            await check_url(url, self.policy)
        except (UnsafeUrlError, FetchError) as exc:
            raise InvalidRequestError(str(exc), param=param, code="invalid_url") from exc

    async def find(self, task_id: str) -> Task:
        task = await self.store.get(task_id)
        if task is None:
            raise task_not_found(task_id)
        return task

    async def wait_for(self, task_id: str, poll_s: float = 0.25) -> Task:
        """Waits until a task ends (for synchronous task requests)."""
        while True:
            task = await self.store.get(task_id)
            if task is None:
                raise NotFoundError("The task was deleted while it ran.", code="task_not_found")
            if task.finished:
                return task
            await asyncio.sleep(poll_s)

    async def delete(self, task_id: str) -> None:
        """Forgets a task (cancelling it first if it has not ended)."""
        task = await self.find(task_id)
        if not task.finished:
            await self.store.request_cancel(task_id)
        await self.store.delete(task_id)

    async def cancel(self, task_id: str) -> None:
        task = await self.store.request_cancel(task_id)
        if task is None:
            raise task_not_found(task_id)
        if task.status in ("completed", "failed"):
            raise ConflictError(f"The task already ended ({task.status}).", param="task_id", code="task_finished")
