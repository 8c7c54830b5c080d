"""What both task dialects do with tasks: queue them for the runner, find, list, wait for, delete and cancel them.

Every call names its caller (a `Principal`): what it queues is its key's, and it finds, lists, cancels and
deletes its key's tasks only; another key's task is not found, exactly as one that does not exist (404, so
ids cannot be probed). The admin (and everyone when no key is configured) sees every task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import msgspec

from frontend.database import owner_scope
from frontend.keys import ADMIN, Principal
from frontend.logs import current_request_id
from frontend.net import FetchError, UnsafeUrlError, UrlPolicy, check_url
from frontend.settings import FrontendSettings
from frontend.tasks.records import TASK_ID, Task, TaskRequest, new_task, short_id
from frontend.tasks.runner import TaskRunner
from frontend.tasks.store import TaskStore
from whisper_triton.errors import ConflictError, InvalidRequestError, NotFoundError, RateLimitError, UnavailableError

log = logging.getLogger("frontend.tasks")


def task_not_found(task_id: str) -> NotFoundError:
    return NotFoundError(f"No task with id '{task_id[:64]}'.", param="task_id", code="task_not_found")


QueuedLimitFn = Callable[[Principal], int]  # how many tasks a caller's key may have queued (0: no limit)


def default_queued_limit(settings: FrontendSettings) -> QueuedLimitFn:
    """A key's `max_queued_tasks` in `key_limits`, else `key_max_queued_tasks`; the admin's own: no limit."""
    default = int(getattr(settings, "key_max_queued_tasks", 0) or 0)
    per_key: dict[str, dict[str, float]] = getattr(settings, "key_limits", None) or {}

    def limit(principal: Principal) -> int:
        if principal.key_id == ADMIN.key_id:
            return 0
        return int(per_key.get(principal.name, {}).get("max_queued_tasks", default))

    return limit


class TaskQueue:
    def __init__(self, store: TaskStore, runner: TaskRunner, settings: FrontendSettings, policy: UrlPolicy,
                 queued_limit: QueuedLimitFn | None = None) -> None:
        self.store = store
        self.runner = runner
        self.settings = settings
        self.policy = policy
        self.queued_limit = queued_limit or default_queued_limit(settings)

    async def enqueue(self, request: TaskRequest, source: str, audio: bytes | None, principal: Principal,
                      task_id: str | None = None) -> Task:
        """Stores a queued task owned by the caller's key; refused while the queue is full (503), while the
        key has as many tasks queued as `queued_limit` allows it, or is over its requests per minute or its
        audio budget (429)."""
        model = await self.runner.transcriptions.served_model(self.settings, request.model)
        request = msgspec.structs.replace(request, model=model,
                                          created_by_request=current_request_id())
        limiter = self.runner.transcriptions.limiter
        if limiter is not None:
            limiter.count_request(principal)
        if task_id is not None:
            if not TASK_ID.match(task_id):
                raise InvalidRequestError("Task ids are 1 to 64 letters, digits, '-' or '_'.", param="managed_task_id")
            if await self.store.get(task_id) is not None:
                raise ConflictError(f"A task with id '{task_id}' exists.", param="managed_task_id", code="task_exists")
        task = new_task(request, source, task_id, owner=principal.key_id)
        per_key = self.queued_limit(principal)
        if not await self.store.create(task, audio, max_queued=self.settings.max_task_queue_size,
                                       max_queued_per_owner=per_key or None):
            if per_key and await self.store.count_queued(task.owner) >= per_key:
                raise RateLimitError(f"This API key has {per_key} tasks queued, its limit; retry when one has "
                                     "started.", retry_after=self.settings.retry_after_s, limit="queued_tasks",
                                     headers={})
            raise UnavailableError(f"The task queue is full ({self.settings.max_task_queue_size} waiting); "
                                   "retry later.")
        log.info("task %s queued", short_id(task.id), extra={"task_id": task.id})
        self.runner.wake()
        return task

    async def check_url(self, url: str, param: str = "url") -> None:
        """Refuses a URL that will not be fetched (scheme, private address unless allowed, bad host)."""
        try:
            await check_url(url, self.policy)
        except (UnsafeUrlError, FetchError) as exc:
            raise InvalidRequestError(str(exc), param=param, code="invalid_url") from exc

    async def find(self, task_id: str, principal: Principal) -> Task:
        task = await self.store.get(task_id, owner_scope(principal))
        if task is None:
            raise task_not_found(task_id)
        return task

    async def recent(self, principal: Principal, limit: int = 100) -> list[Task]:
        """The caller's most recent tasks (everyone's for the admin), newest first."""
        return await self.store.list_tasks(limit=limit, owner=owner_scope(principal))

    async def wait_for(self, task_id: str, poll_s: float = 0.25) -> Task:
        """Waits until a task ends (for synchronous task requests)."""
        while True:
            task = await self.store.get(task_id)
            if task is None:
                raise NotFoundError("The task was deleted while it ran.", code="task_not_found")
            if task.finished:
                return task
            await asyncio.sleep(poll_s)

    async def delete(self, task_id: str, principal: Principal) -> None:
        """Forgets a task (cancelling it first if it has not ended)."""
        task = await self.find(task_id, principal)
        if not task.finished:
            await self.store.request_cancel(task_id, owner_scope(principal))
        if not await self.store.delete(task_id, owner_scope(principal)):
            raise task_not_found(task_id)

    async def cancel(self, task_id: str, principal: Principal) -> None:
        task = await self.store.request_cancel(task_id, owner_scope(principal))
        if task is None:
            raise task_not_found(task_id)
        if task.status in ("completed", "failed"):
            raise ConflictError(f"The task already ended ({task.status}).", param="task_id", code="task_finished")
