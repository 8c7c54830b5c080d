"""The task database locked by someone else or full: a quick 503, and nothing half-written."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from frontend.database import SQLiteDatabase, StoreError, open_database
from frontend.errors import api_error
from frontend.tasks.records import TaskRequest, new_task
from frontend.tasks.store import TaskStore
from whisper_triton.contract import DoneEvent


@contextmanager
def write_lock(path: Path) -> Iterator[None]:
    """Another connection holding the database's write lock."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


def result_of(text: str) -> DoneEvent:
    """A transcription's result."""
    return DoneEvent(task="transcribe", language="en", duration=1.0, text=text, segments=[])


def request() -> TaskRequest:
    return TaskRequest(model="tiny.en", file_name="a.wav")


async def test_a_locked_database_gives_a_503_after_the_busy_timeout_and_stores_nothing(tmp_path: Path) -> None:
    store = TaskStore(await open_database(f"sqlite:///{tmp_path / 'tasks.db'}?timeout=0.3", tmp_path))
    try:
        task = new_task(request(), "upload")
        with write_lock(tmp_path / "tasks.db"):
            started = time.monotonic()
            with pytest.raises(StoreError) as raised:
                await store.create(task, b"audio bytes")
            assert 0.2 < time.monotonic() - started < 5
        error = raised.value
        answer = api_error(error)  # what the client gets
        assert answer.status == 503 and answer.retry_after and answer.code == "database_unavailable"
        assert "locked" in str(error) and "locked" not in error.message  # details go to the log only
        assert await store.get(task.id) is None and await store.audio(task.id) is None
        assert await store.create(task, b"audio bytes")  # the lock is gone: it works again
        assert await store.audio(task.id) == b"audio bytes"
    finally:
        await store.db.close()


async def test_a_task_whose_end_cannot_be_written_is_not_completed(tmp_path: Path) -> None:
    store = TaskStore(SQLiteDatabase(tmp_path / "tasks.db", busy_timeout_s=0.2))
    try:
        task = new_task(request(), "upload")
        await store.create(task, b"audio")
        claimed = await store.claim("worker-1")
        assert claimed is not None
        with write_lock(tmp_path / "tasks.db"), pytest.raises(StoreError):
            await store.finish(task.id, "completed", result=result_of("hello"), audio_duration=1.0)
        unfinished = await store.get(task.id)
        assert unfinished is not None and unfinished.status == "processing" and unfinished.result is None
        assert await store.audio(task.id) == b"audio"  # kept for the next attempt
        # Its lease runs out, it is queued again and runs to the end.
        assert await store.recover(lease_s=-1, max_attempts=3) == [task.id]
        assert await store.claim("worker-2") is not None
        await store.finish(task.id, "completed", result=result_of("hello"), audio_duration=1.0)
        done = await store.get(task.id)
        assert done is not None and done.status == "completed" and done.result == result_of("hello")
        assert await store.audio(task.id) is None
    finally:
        await store.db.close()


async def test_a_bad_sqlite_timeout_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        await open_database(f"sqlite:///{tmp_path / 'tasks.db'}?timeout=soon", tmp_path)


async def test_concurrent_submissions_respect_the_queue_bound(store: TaskStore) -> None:
    """Each used to count the queue, all saw room, and all were stored."""
    tasks = [new_task(request(), "upload") for _ in range(20)]
    stored = await asyncio.gather(*(store.create(task, b"audio", max_queued=3) for task in tasks))
    assert sum(stored) == 3 and await store.count_queued() == 3
    for task, kept in zip(tasks, stored, strict=True):
        assert (await store.audio(task.id) is not None) == kept  # no audio without its task
