"""Durable tasks in the frontend's database (`frontend.database`: SQLite, or PostgreSQL for several replicas).

Queued tasks are claimed atomically (PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite serialises
writers), so no task runs twice. A running task holds a lease renewed by heartbeats; a task whose
lease expired (its replica crashed) is queued again, or failed once it used its attempts.
Uploaded audio is stored in the database so any replica can run the task; it is deleted when the
task ends.

Each task has an owner (the id of the API key that created it). Reads, cancels and deletes take an
`owner`: given, they see that owner's tasks only (another owner's task is as absent as an unknown one);
None sees all (the admin, the runner). Claims are fair across owners: the next task is the oldest queued
one of the owner with the fewest tasks processing now, so one key's backlog does not hold up the others.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from frontend.database import Database
from frontend.tasks.records import FINISHED, Task, TaskError, TaskRequest
from whisper_triton.contract import DoneEvent

_COLUMNS = ("id, status, source, request, progress, result, error, webhook, attempts, cancel_requested, "
            "created_at, started_at, completed_at, audio_duration, owner")
# A queued task's turn: its owner's tasks processing now plus its owner's tasks queued before it. The first
# is the oldest queued task of the owner with the fewest processing (ties: the owner waiting longest); the
# ones after it are the claims that follow, round robin, when a concurrent claim holds the first
# (PostgreSQL's SKIP LOCKED takes the next in this order).
_CLAIM_NEXT = ("SELECT t.id FROM tasks t WHERE t.status = 'queued' ORDER BY "
               "(SELECT COUNT(*) FROM tasks p WHERE p.owner = t.owner "
               "AND (p.status = 'processing' OR (p.status = 'queued' AND p.seq < t.seq))), t.seq LIMIT 1")
_QUEUED = "SELECT COUNT(*) FROM tasks WHERE status = 'queued'"
_encoder = msgspec.json.Encoder()


class TaskStore:
    """The `tasks` and `task_audio` tables."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, task: Task, audio: bytes | None = None, max_queued: int | None = None,
                     max_queued_per_owner: int | None = None) -> bool:
        """Stores a new task; False (nothing stored) when `max_queued` tasks are already waiting, or
        `max_queued_per_owner` of its owner's (`count_queued` tells which).

        The lengths are checked inside the insert's transaction, so concurrent requests cannot all see
        room for one more.
        """
        values = ", ".join("?" * len(_row(task)))
        bounds: list[tuple[str, tuple[Any, ...]]] = []
        if task.status == "queued" and max_queued is not None:
            bounds.append((f"({_QUEUED}) < ?", (max_queued,)))
        if task.status == "queued" and max_queued_per_owner:
            bounds.append((f"({_QUEUED} AND owner = ?) < ?", (task.owner, max_queued_per_owner)))
        if not bounds:
            statements = [(f"INSERT INTO tasks ({_COLUMNS}) VALUES ({values})", _row(task))]
        else:
            statements = [(f"INSERT INTO tasks ({_COLUMNS}) SELECT {values} "
                           f"WHERE {' AND '.join(sql for sql, _ in bounds)}",
                           (*_row(task), *(arg for _, args in bounds for arg in args)))]
            if self.db.queue_lock:
                statements.insert(0, (self.db.queue_lock, ()))
        inserted = len(statements) - 1
        if audio is not None:
            statements.append(("INSERT INTO task_audio (task_id, data) SELECT ?, ? WHERE EXISTS "
                               "(SELECT 1 FROM tasks WHERE id = ?)", (task.id, audio, task.id)))
        changed = await self.db.transaction(statements)
        return changed[inserted] == 1

    async def count_queued(self, owner: str | None = None) -> int:
        where, args = _owned(owner)
        rows = await self.db.execute(f"{_QUEUED}{where}", args, fetch=True)
        return int(rows[0][0])

    async def claim(self, worker: str) -> Task | None:
        """Takes the next queued task for `worker`, fairly across owners (see `_CLAIM_NEXT`), or None."""
        now = time.time()
        rows = await self.db.execute(
            f"UPDATE tasks SET status = 'processing', worker = ?, heartbeat_at = ?, attempts = attempts + 1, "
            f"started_at = COALESCE(started_at, ?) WHERE id = ({_CLAIM_NEXT}{self.db.claim_suffix}) "
            f"AND status = 'queued' RETURNING {_COLUMNS}",
            (worker, now, now),
            fetch=True,
        )
        return _task(rows[0]) if rows else None

    async def heartbeat(self, task_id: str, worker: str, progress: float) -> bool:
        """Renews the lease; False when the task was cancelled or taken over (stop working on it)."""
        rows = await self.db.execute(
            "UPDATE tasks SET heartbeat_at = ?, progress = ? WHERE id = ? AND worker = ? "
            "AND status = 'processing' RETURNING cancel_requested",
            (time.time(), progress, task_id, worker),
            fetch=True,
        )
        return bool(rows) and not rows[0][0]

    async def audio(self, task_id: str) -> bytes | None:
        rows = await self.db.execute("SELECT data FROM task_audio WHERE task_id = ?", (task_id,), fetch=True)
        return bytes(rows[0][0]) if rows else None

    async def finish(
        self,
        task_id: str,
        status: str,
        *,
        result: DoneEvent | None = None,
        error: TaskError | None = None,
        audio_duration: float | None = None,
    ) -> str:
        """Ends a task (completed, failed or cancelled) and deletes its audio; on failure nothing changed.

        Returns the status recorded: a task whose cancellation was asked for (and answered `cancelled`)
        while it ran ends cancelled, even when its work finished before its worker noticed.
        """
        now, cancelled = time.time(), _json(TaskError("The task was cancelled.", "cancelled"))
        changed = await self.db.transaction([
            ("UPDATE tasks SET status = 'cancelled', error = ?, completed_at = ?, worker = NULL "
             "WHERE id = ? AND cancel_requested = 1 AND status = 'processing'", (cancelled, now, task_id)),
            ("UPDATE tasks SET status = ?, result = ?, error = ?, completed_at = ?, worker = NULL, "
             "progress = CASE WHEN ? = 'completed' THEN 100 ELSE progress END, "
             "audio_duration = COALESCE(?, audio_duration) WHERE id = ? AND status <> 'cancelled'",
             (status, _json(result), _json(error), now, status, audio_duration, task_id)),
            ("DELETE FROM task_audio WHERE task_id = ?", (task_id,)),
        ])
        if changed[0]:
            return "cancelled"
        if changed[1]:
            return status
        ended = await self.get(task_id)  # cancelled while queued, or gone
        return status if ended is None else ended.status

    async def requeue(self, task_id: str, refund_attempt: bool = False) -> None:
        """Back to the queue; `refund_attempt` when the failure was not the task's (Triton restarting)."""
        await self.db.execute(
            "UPDATE tasks SET status = 'queued', worker = NULL, heartbeat_at = NULL, "
            "attempts = attempts - ? WHERE id = ? AND status = 'processing'",
            (1 if refund_attempt else 0, task_id),
        )

    async def request_cancel(self, task_id: str, owner: str | None = None) -> Task | None:
        """Cancels a queued task at once; flags a running one (its worker stops it). None if unknown (or
        not `owner`'s)."""
        where, args = _owned(owner)
        await self.db.execute(
            f"UPDATE tasks SET status = 'cancelled', completed_at = ? WHERE id = ? AND status = 'queued'{where}",
            (time.time(), task_id, *args),
        )
        await self.db.execute(f"UPDATE tasks SET cancel_requested = 1 WHERE id = ? AND status = 'processing'{where}",
                              (task_id, *args))
        task = await self.get(task_id, owner)
        if task is not None and task.status == "cancelled":
            await self.db.execute("DELETE FROM task_audio WHERE task_id = ?", (task_id,))
        return task

    async def get(self, task_id: str, owner: str | None = None) -> Task | None:
        where, args = _owned(owner)
        rows = await self.db.execute(f"SELECT {_COLUMNS} FROM tasks WHERE id = ?{where}", (task_id, *args),
                                     fetch=True)
        return _task(rows[0]) if rows else None

    async def list_tasks(self, limit: int = 100, statuses: tuple[str, ...] | None = None,
                         owner: str | None = None) -> list[Task]:
        """The newest tasks first (`owner`'s only, when given)."""
        where, args = _owned(owner)
        if statuses:
            where += f" AND status IN ({', '.join('?' * len(statuses))})"
            args = (*args, *statuses)
        rows = await self.db.execute(
            f"SELECT {_COLUMNS} FROM tasks WHERE 1 = 1{where} ORDER BY seq DESC LIMIT ?", (*args, limit), fetch=True,
        )
        return [_task(row) for row in rows]

    async def delete(self, task_id: str, owner: str | None = None) -> bool:
        where, args = _owned(owner)
        rows = await self.db.execute(f"DELETE FROM tasks WHERE id = ?{where} RETURNING id", (task_id, *args),
                                     fetch=True)
        if rows:
            await self.db.execute("DELETE FROM task_audio WHERE task_id = ?", (task_id,))
        return bool(rows)

    async def undelivered(self) -> list[Task]:
        """Ended tasks with a webhook whose delivery never finished (the replica stopped mid-way)."""
        rows = await self.db.execute(
            f"SELECT {_COLUMNS} FROM tasks WHERE status IN ('completed', 'failed') AND request LIKE ? "
            "AND (webhook IS NULL OR webhook LIKE ?) ORDER BY seq",
            ('%"webhook":{%', '%"state":"pending"%'),
            fetch=True,
        )
        return [_task(row) for row in rows]

    async def set_webhook(self, task_id: str, delivery: dict[str, Any]) -> None:
        await self.db.execute("UPDATE tasks SET webhook = ? WHERE id = ?", (_json(delivery), task_id))

    async def recover(self, lease_s: float, max_attempts: int) -> list[str]:
        """Tasks whose worker stopped renewing its lease: queued again, or failed after max attempts."""
        stale = time.time() - lease_s
        failed = await self.db.execute(
            "UPDATE tasks SET status = 'failed', worker = NULL, completed_at = ?, error = ? "
            "WHERE status = 'processing' AND heartbeat_at < ? AND attempts >= ? RETURNING id",
            (time.time(), _json(TaskError("The task was interrupted too many times (server crashes); "
                                          "it was not completed.", "interrupted")), stale, max_attempts),
            fetch=True,
        )
        for (task_id,) in failed:
            await self.db.execute("DELETE FROM task_audio WHERE task_id = ?", (task_id,))
        requeued = await self.db.execute(
            "UPDATE tasks SET status = 'queued', worker = NULL WHERE status = 'processing' AND heartbeat_at < ? "
            "RETURNING id",
            (stale,),
            fetch=True,
        )
        return [row[0] for row in requeued]

    async def expire(self, older_than_s: float) -> int:
        """Deletes finished tasks (and their results) that ended more than `older_than_s` ago."""
        statuses = ", ".join(f"'{s}'" for s in FINISHED)
        rows = await self.db.execute(
            f"DELETE FROM tasks WHERE status IN ({statuses}) AND completed_at < ? RETURNING id",
            (time.time() - older_than_s,),
            fetch=True,
        )
        for (task_id,) in rows:
            await self.db.execute("DELETE FROM task_audio WHERE task_id = ?", (task_id,))
        return len(rows)


def _owned(owner: str | None) -> tuple[str, tuple[Any, ...]]:
    """The condition (to append to a WHERE) limiting rows to `owner`'s; none when None."""
    return ("", ()) if owner is None else (" AND owner = ?", (owner,))


def _json(value: object) -> str | None:
    return None if value is None else _encoder.encode(value).decode()


def _row(task: Task) -> tuple[Any, ...]:
    return (task.id, task.status, task.source, _json(task.request), task.progress, _json(task.result),
            _json(task.error), _json(task.webhook_delivery), task.attempts, int(task.cancel_requested),
            task.created_at, task.started_at, task.completed_at, task.audio_duration, task.owner)


def _task(row: tuple[Any, ...]) -> Task:
    (task_id, status, source, request, progress, result, error, webhook, attempts, cancel, created_at,
     started_at, completed_at, audio_duration, owner) = row
    return Task(
        id=task_id, status=status, source=source,
        request=msgspec.json.decode(request, type=TaskRequest),
        created_at=created_at, progress=float(progress),
        started_at=started_at, completed_at=completed_at, audio_duration=audio_duration,
        result=msgspec.json.decode(result, type=DoneEvent) if result else None,
        error=msgspec.json.decode(error, type=TaskError) if error else None,
        webhook_delivery=msgspec.json.decode(webhook) if webhook else None,
        attempts=int(attempts), cancel_requested=bool(cancel), owner=owner or "",
    )
