"""The task store on SQLite and PostgreSQL: FIFO claims, exclusivity, leases, cancel, expiry."""

from __future__ import annotations

import asyncio
import time

from frontend.tasks.records import TaskError, TaskRequest, new_task
from frontend.tasks.store import TaskStore
from whisper_triton.contract import DoneEvent


def result_of(text: str) -> DoneEvent:
    """A transcription's result."""
    return DoneEvent(task="transcribe", language="en", duration=1.0, text=text, segments=[])


def request_() -> TaskRequest:
    return TaskRequest(model="tiny.en", file_name="a.wav")


async def test_fifo_claim_with_audio_and_finish(store: TaskStore) -> None:
    first, second = new_task(request_(), "upload"), new_task(request_(), "upload")
    assert await store.create(first, b"one")
    assert await store.create(second, b"two")
    assert await store.count_queued() == 2
    claimed = await store.claim("w1")
    assert claimed is not None and claimed.id == first.id and claimed.status == "processing"
    assert claimed.attempts == 1 and claimed.started_at is not None
    assert await store.audio(first.id) == b"one"
    assert await store.heartbeat(first.id, "w1", 50.0)
    assert not await store.heartbeat(first.id, "other-worker", 60.0)
    await store.finish(first.id, "completed", result=result_of("hi"), audio_duration=1.5)
    done = await store.get(first.id)
    assert done is not None and done.status == "completed" and done.progress == 100
    assert done.result == result_of("hi") and done.audio_duration == 1.5 and done.completed_at
    assert await store.audio(first.id) is None  # audio is deleted when the task ends
    assert [t.id for t in await store.list_tasks()] == [second.id, first.id]


async def test_concurrent_claims_never_share_a_task(store: TaskStore) -> None:
    ids = set()
    for _ in range(12):
        task = new_task(request_(), "upload")
        ids.add(task.id)
        await store.create(task)
    claimed = await asyncio.gather(*(store.claim(f"w{i}") for i in range(16)))
    got = [t.id for t in claimed if t is not None]
    assert sorted(got) == sorted(ids)  # each exactly once, the extra claimers get nothing


async def test_queue_bound(store: TaskStore) -> None:
    assert await store.create(new_task(request_(), "upload"), max_queued=2)
    assert await store.create(new_task(request_(), "upload"), max_queued=2)
    assert not await store.create(new_task(request_(), "upload"), max_queued=2)
    assert await store.count_queued() == 2


async def test_cancel_queued_and_running(store: TaskStore) -> None:
    queued, running = new_task(request_(), "upload"), new_task(request_(), "upload")
    await store.create(running, b"x")
    await store.create(queued, b"y")
    assert (await store.claim("w")).id == running.id  # type: ignore[union-attr]
    cancelled = await store.request_cancel(queued.id)
    assert cancelled is not None and cancelled.status == "cancelled"
    assert await store.audio(queued.id) is None
    flagged = await store.request_cancel(running.id)
    assert flagged is not None and flagged.status == "processing" and flagged.cancel_requested
    assert not await store.heartbeat(running.id, "w", 10.0)  # the worker learns it must stop
    assert await store.request_cancel("no-such-task") is None
    # Its work finished before the worker noticed: the task still ends as the client was told, cancelled.
    assert await store.finish(running.id, "completed", result=result_of("late"), audio_duration=1.0) == "cancelled"
    ended = await store.get(running.id)
    assert ended is not None and ended.status == "cancelled" and ended.result is None
    assert ended.error is not None and ended.error.code == "cancelled" and await store.audio(running.id) is None
    assert await store.finish(queued.id, "completed", result=result_of("late")) == "cancelled"
    assert (await store.get(queued.id)).status == "cancelled"  # type: ignore[union-attr]


async def test_expired_leases_are_requeued_then_failed(store: TaskStore) -> None:
    task = new_task(request_(), "upload")
    await store.create(task, b"audio")
    await store.claim("crashed-worker")
    assert await store.recover(lease_s=60, max_attempts=2) == []
    await asyncio.sleep(0.05)
    assert await store.recover(lease_s=0.01, max_attempts=2) == [task.id]
    again = await store.claim("w2")
    assert again is not None and again.id == task.id and again.attempts == 2
    await asyncio.sleep(0.05)
    assert await store.recover(lease_s=0.01, max_attempts=2) == []
    failed = await store.get(task.id)
    assert failed is not None and failed.status == "failed"
    assert failed.error is not None and failed.error.code == "interrupted"
    assert await store.audio(task.id) is None


async def test_expiry_deletes_only_old_finished_tasks(store: TaskStore) -> None:
    old, fresh, queued = (new_task(request_(), "upload") for _ in range(3))
    for task in (old, fresh, queued):
        await store.create(task)
    await store.finish(old.id, "failed", error=TaskError("boom", "x"))
    await store.db.execute("UPDATE tasks SET completed_at = ? WHERE id = ?", (time.time() - 3600, old.id))
    await store.finish(fresh.id, "completed", result=result_of(""))
    assert await store.expire(older_than_s=600) == 1
    assert await store.get(old.id) is None
    assert await store.get(fresh.id) is not None and await store.get(queued.id) is not None


async def test_webhook_state_and_delete(store: TaskStore) -> None:
    task = new_task(request_(), "upload")
    await store.create(task, b"a")
    await store.set_webhook(task.id, {"state": "delivered", "attempts": 2})
    stored = await store.get(task.id)
    assert stored is not None and stored.webhook_delivery == {"state": "delivered", "attempts": 2}
    assert await store.delete(task.id)
    assert not await store.delete(task.id)
    assert await store.audio(task.id) is None


async def test_ping(store: TaskStore) -> None:
    assert await store.db.ping()


async def test_undelivered_webhooks_are_found(store: TaskStore) -> None:
    from frontend.tasks.records import Webhook

    hooked = TaskRequest(model="tiny.en", webhook=Webhook(url="https://hooks.example.com/x"))
    pending, delivered, no_hook, running = (new_task(hooked, "url"), new_task(hooked, "url"),
                                            new_task(request_(), "upload"), new_task(hooked, "url"))
    for task in (pending, delivered, no_hook, running):
        await store.create(task)
    for task in (pending, delivered, no_hook):
        await store.finish(task.id, "completed", result=result_of(""))
    await store.set_webhook(pending.id, {"state": "pending", "attempts": 1})
    await store.set_webhook(delivered.id, {"state": "delivered", "attempts": 1})
    assert [t.id for t in await store.undelivered()] == [pending.id]
