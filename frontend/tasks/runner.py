"""Runs queued tasks: claims them from the store, transcribes through Triton, records the outcome.

Each replica runs `workers` loops; Triton batches the windows of all of them. While a task runs,
a heartbeat renews its lease, saves progress and notices cancellation (the gRPC stream is then
cancelled, which stops the work inside Triton). Triton being unavailable re-queues the task;
a client fault (bad audio) fails it with the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import msgspec

from frontend.database import StoreError
from frontend.logs import request_context
from frontend.net import FetchError, UnsafeUrlError, UrlPolicy, fetch
from frontend.tasks.records import Task, TaskError, short_id
from frontend.tasks.store import TaskStore
from frontend.transcription import Transcriptions
from whisper_triton.contract import DoneEvent, SegmentsEvent
from whisper_triton.errors import FetchFailedError, ServiceError, UnavailableError

log = logging.getLogger("frontend.tasks")

FetchFn = Callable[[str], Awaitable[bytes]]
NotifyFn = Callable[[Task], Coroutine[Any, Any, None]]


def url_fetcher(policy: UrlPolicy) -> FetchFn:
    """The audio of a URL task; what cannot be fetched is the task's fault."""

    async def fetch_audio(url: str) -> bytes:
        try:
            return await fetch(url, policy)
        except (UnsafeUrlError, FetchError) as exc:
            raise FetchFailedError(f"Could not fetch the audio: {exc}", param="url") from exc

    return fetch_audio


@dataclass(frozen=True)
class RunnerSettings:
    workers: int = 4
    lease_s: float = 30.0
    max_attempts: int = 3
    heartbeat_s: float = 2.0
    poll_s: float = 1.0
    retry_delay_s: float = 2.0
    results_ttl_s: float = 24 * 3600.0


class TaskRunner:
    def __init__(
        self,
        store: TaskStore,
        transcriptions: Transcriptions,
        settings: RunnerSettings,
        fetch: FetchFn,
        notify: NotifyFn | None = None,
        on_queue_depth: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.transcriptions = transcriptions
        self.settings = settings
        self.worker_id = secrets.token_hex(6)
        self._fetch = fetch
        self._notify = notify
        self._on_queue_depth = on_queue_depth
        self._wake = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self.running: dict[str, asyncio.Task[None]] = {}
        self._notifications: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._loops = [asyncio.create_task(self._work(), name=f"task-worker-{i}")
                       for i in range(self.settings.workers)]
        self._loops.append(asyncio.create_task(self._maintain(), name="task-maintenance"))

    def wake(self) -> None:
        """A task was queued: a sleeping worker takes it now rather than at its next poll."""
        self._wake.set()

    async def stop(self) -> None:
        """Stops the loops; tasks running here go back to the queue for this or another replica."""
        running = list(self.running)
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        for task_id in running:
            with contextlib.suppress(StoreError):
                await self.store.requeue(task_id)
        self._loops = []

    async def _work(self) -> None:
        while True:
            try:
                task = await self.store.claim(self.worker_id)
            except StoreError as exc:
                log.error("claiming a task failed: %s", exc)
                task = None
            if task is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.poll_s)
                continue
            runner = asyncio.create_task(self._run(task))
            self.running[task.id] = runner
            try:
                await runner
            finally:
                self.running.pop(task.id, None)

    async def _maintain(self) -> None:
        await self._redeliver()
        while True:
            try:
                requeued = await self.store.recover(self.settings.lease_s, self.settings.max_attempts)
                for task_id in requeued:
                    log.warning("task %s was interrupted (lease expired); queued again", short_id(task_id))
                if requeued:
                    self.wake()
                await self.store.expire(self.settings.results_ttl_s)
                if self._on_queue_depth is not None:
                    self._on_queue_depth(await self.store.count_queued())
            except StoreError as exc:
                log.error("task maintenance failed: %s", exc)
            await asyncio.sleep(min(5.0, max(1.0, self.settings.lease_s / 3)))

    async def _redeliver(self) -> None:
        """Webhooks interrupted by a stop are sent again at start (at least once, never lost)."""
        if self._notify is None:
            return
        try:
            pending = await self.store.undelivered()
        except StoreError as exc:
            log.error("looking for undelivered webhooks failed: %s", exc)
            return
        for task in pending:
            log.info("delivering the webhook of task %s again", short_id(task.id))
            self._spawn_notification(task)

    def _spawn_notification(self, task: Task) -> None:
        assert self._notify is not None
        notification = asyncio.create_task(self._notify(task))
        self._notifications.add(notification)
        notification.add_done_callback(self._notifications.discard)

    async def _run(self, task: Task) -> None:
        """Runs a task; its lines (and its Triton request) carry its id and the id of the request that made it."""
        with request_context(task.request.created_by_request, task.id):
            await self._run_task(task)

    async def _run_task(self, task: Task) -> None:
        log.info("task %s started (attempt %d)", short_id(task.id), task.attempts)
        progress = [task.progress]
        work = asyncio.create_task(self._transcribe(task, progress))
        beat = asyncio.create_task(self._heartbeat(task, work, progress))
        try:
            result = await work
        except asyncio.CancelledError:
            if not work.cancelled() or not beat.done():
                raise
            await self._end(task, "cancelled", error=TaskError("The task was cancelled.", "cancelled"))
            return
        except ServiceError as exc:
            await self._failed(task, exc)
            return
        finally:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
        await self._end(task, "completed", result=result, audio_duration=result.duration)

    async def _transcribe(self, task: Task, progress: list[float]) -> DoneEvent:
        audio = await self.store.audio(task.id)
        if audio is None:
            if task.request.url is None:
                raise ServiceError("The task's audio is gone; submit it again.")
            audio = await self._fetch(task.request.url)
        request = msgspec.structs.replace(task.request.transcription(), stream=True)
        owner = self.transcriptions.owner(task.owner)  # the audio counts to the budget of the task's key
        async with contextlib.aclosing(self.transcriptions.events(audio, request, principal=owner)) as events:
            async for event in events:
                if isinstance(event, SegmentsEvent):
                    progress[0] = round(100 * event.progress, 1)
                else:
                    return event
        raise UnavailableError("The inference server closed the stream early; retry the request.")

    async def _heartbeat(self, task: Task, work: asyncio.Task[Any], progress: list[float]) -> None:
        """Renews the lease; cancels the work when the task was cancelled or taken over."""
        while not work.done():
            await asyncio.sleep(self.settings.heartbeat_s)
            try:
                keep = await self.store.heartbeat(task.id, self.worker_id, progress[0])
            except StoreError as exc:
                log.error("heartbeat of task %s failed: %s", short_id(task.id), exc)
                continue
            if not keep:
                log.info("task %s cancelled", short_id(task.id))
                work.cancel()
                return

    async def _failed(self, task: Task, exc: ServiceError) -> None:
        if isinstance(exc, StoreError):
            await self._store_failed(task, exc)
            return
        if isinstance(exc, UnavailableError):
            # Triton is unavailable (restarting): not the task's fault. Queue the task again without
            # counting the attempt, and wait for Triton before this worker claims more.
            log.warning("task %s: inference server unavailable; queued again", short_id(task.id))
            with contextlib.suppress(StoreError):
                await self.store.requeue(task.id, refund_attempt=True)
            await self._wait_for_triton()  # before this worker claims anything again
            self.wake()
            return
        await self._end(task, "failed", error=TaskError(exc.message, exc.code))

    async def _store_failed(self, task: Task, exc: StoreError) -> None:
        """The database failed under a running task (busy, full): queued again, or failed after its attempts.

        If even that cannot be written, the task stays `processing` until its lease expires and
        `recover` queues it again: it is never marked completed without its result.
        """
        if task.attempts < self.settings.max_attempts:
            log.warning("task %s: %s; queued again", short_id(task.id), exc)
            await asyncio.sleep(self.settings.retry_delay_s)
            with contextlib.suppress(StoreError):
                await self.store.requeue(task.id)
            self.wake()
            return
        await self._end(task, "failed", error=TaskError(exc.message, exc.code))

    async def _wait_for_triton(self, timeout_s: float = 120.0) -> None:
        for _ in range(max(1, int(timeout_s / self.settings.retry_delay_s))):
            if await self.transcriptions.triton.is_ready():
                return
            await asyncio.sleep(self.settings.retry_delay_s)

    async def _end(self, task: Task, status: str, **outcome: Any) -> None:
        try:
            status = await self.store.finish(task.id, status, **outcome)
        except StoreError as exc:
            log.error("recording the end of task %s failed: %s", short_id(task.id), exc)
            return
        log.info("task %s %s", short_id(task.id), status)
        if self._notify is not None and status in ("completed", "failed"):
            ended = await self.store.get(task.id)
            if ended is not None:
                self._spawn_notification(ended)
