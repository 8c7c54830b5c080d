"""Durable task storage: SQLite (one file, default) or PostgreSQL (`DB_URL`, several replicas).

Queued tasks are claimed atomically (PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite serialises
writers), so no task runs twice. A running task holds a lease renewed by heartbeats; a task whose
lease expired (its replica crashed) is queued again, or failed once it used its attempts.
Uploaded audio is stored in the database so any replica can run the task; it is deleted when the
task ends.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec

from frontend.errors import APIError
from frontend.tasks.model import FINISHED, Task, TaskError, TaskRequest
from whisper_triton.contract import DoneEvent

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
  seq {serial} PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  status TEXT NOT NULL,
  source TEXT NOT NULL,
  request TEXT NOT NULL,
  progress DOUBLE PRECISION NOT NULL DEFAULT 0,
  result TEXT,
  error TEXT,
  webhook TEXT,
  attempts INTEGER NOT NULL DEFAULT 0,
  worker TEXT,
  heartbeat_at DOUBLE PRECISION,
  cancel_requested INTEGER NOT NULL DEFAULT 0,
  created_at DOUBLE PRECISION NOT NULL,
  started_at DOUBLE PRECISION,
  completed_at DOUBLE PRECISION,
  audio_duration DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS tasks_status_seq ON tasks (status, seq);
CREATE TABLE IF NOT EXISTS task_audio (task_id TEXT PRIMARY KEY, data {blob} NOT NULL);
CREATE TABLE IF NOT EXISTS speakers (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  embedding TEXT NOT NULL,
  embedding_model TEXT NOT NULL,
  duration DOUBLE PRECISION NOT NULL,
  created_at DOUBLE PRECISION NOT NULL
)
"""
_COLUMNS = ("id, status, source, request, progress, result, error, webhook, attempts, cancel_requested, "
            "created_at, started_at, completed_at, audio_duration")
_CLAIM_NEXT = "SELECT id FROM tasks WHERE status = 'queued' ORDER BY seq LIMIT 1"
_encoder = msgspec.json.Encoder()


class StoreError(APIError):
    """The database cannot be reached or refused the write (locked too long, disk full, server down).

    Clients get a 503 with Retry-After and a message without the database's own words; the log gets those.
    """

    def __init__(self, detail: str, retry_after: int = 5) -> None:
        super().__init__(503, "The task database is unavailable (busy, full or down); retry shortly.",
                         type="server_error", code="database_unavailable", retry_after=retry_after)
        self.detail = detail

    def __str__(self) -> str:
        return self.detail


class TaskStore:
    """SQL shared by both backends, written with `?` placeholders."""

    claim_suffix = ""

    async def _execute(self, sql: str, args: tuple[Any, ...] = (), fetch: bool = False) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    # Serialises the writers that check the queue's length (SQLite's BEGIN IMMEDIATE does it already).
    queue_lock = ""

    async def _transaction(self, statements: list[tuple[str, tuple[Any, ...]]]) -> list[int]:
        """Runs the statements all or none (a task never exists without its audio, nor ends half-recorded);
        returns the rows each changed."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def execute(self, sql: str, args: tuple[Any, ...] = (), fetch: bool = False) -> list[tuple[Any, ...]]:
        """Runs SQL written with `?` placeholders (for other tables of the same database)."""
        return await self._execute(sql, args, fetch)

    async def ping(self) -> bool:
        try:
            await self._execute("SELECT 1", fetch=True)
            return True
        except Exception:
            return False

    async def create(self, task: Task, audio: bytes | None = None, max_queued: int | None = None) -> bool:
        """Stores a new task; False (nothing stored) when `max_queued` tasks are already waiting.

        The length is checked inside the insert's transaction, so concurrent requests cannot all see
        room for one more.
        """
        values = ", ".join("?" * len(_row(task)))
        if max_queued is None or task.status != "queued":
            statements = [(f"INSERT INTO tasks ({_COLUMNS}) VALUES ({values})", _row(task))]
        else:
            statements = [(f"INSERT INTO tasks ({_COLUMNS}) SELECT {values} "
                           "WHERE (SELECT COUNT(*) FROM tasks WHERE status = 'queued') < ?", (*_row(task), max_queued))]
            if self.queue_lock:
                statements.insert(0, (self.queue_lock, ()))
        if audio is not None:
            statements.append(("INSERT INTO task_audio (task_id, data) SELECT ?, ? WHERE EXISTS "
                               "(SELECT 1 FROM tasks WHERE id = ?)", (task.id, audio, task.id)))
        changed = await self._transaction(statements)
        return changed[1 if self.queue_lock and max_queued is not None and task.status == "queued" else 0] == 1

    async def count_queued(self) -> int:
        rows = await self._execute("SELECT COUNT(*) FROM tasks WHERE status = 'queued'", fetch=True)
        return int(rows[0][0])

    async def claim(self, worker: str) -> Task | None:
        """Takes the oldest queued task for `worker` (FIFO), or None."""
        now = time.time()
        rows = await self._execute(
            f"UPDATE tasks SET status = 'processing', worker = ?, heartbeat_at = ?, attempts = attempts + 1, "
            f"started_at = COALESCE(started_at, ?) WHERE id = ({_CLAIM_NEXT}{self.claim_suffix}) "
            f"AND status = 'queued' RETURNING {_COLUMNS}",
            (worker, now, now),
            fetch=True,
        )
        return _task(rows[0]) if rows else None

    async def heartbeat(self, task_id: str, worker: str, progress: float) -> bool:
        """Renews the lease; False when the task was cancelled or taken over (stop working on it)."""
        rows = await self._execute(
            "UPDATE tasks SET heartbeat_at = ?, progress = ? WHERE id = ? AND worker = ? "
            "AND status = 'processing' RETURNING cancel_requested",
            (time.time(), progress, task_id, worker),
            fetch=True,
        )
        return bool(rows) and not rows[0][0]

    async def audio(self, task_id: str) -> bytes | None:
        rows = await self._execute("SELECT data FROM task_audio WHERE task_id = ?", (task_id,), fetch=True)
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
        changed = await self._transaction([
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
        await self._execute(
            "UPDATE tasks SET status = 'queued', worker = NULL, heartbeat_at = NULL, "
            "attempts = attempts - ? WHERE id = ? AND status = 'processing'",
            (1 if refund_attempt else 0, task_id),
        )

    async def request_cancel(self, task_id: str) -> Task | None:
        """Cancels a queued task at once; flags a running one (its worker stops it). None if unknown."""
        await self._execute(
            "UPDATE tasks SET status = 'cancelled', completed_at = ? WHERE id = ? AND status = 'queued'",
            (time.time(), task_id),
        )
        await self._execute("UPDATE tasks SET cancel_requested = 1 WHERE id = ? AND status = 'processing'",
                            (task_id,))
        task = await self.get(task_id)
        if task is not None and task.status == "cancelled":
            await self._execute("DELETE FROM task_audio WHERE task_id = ?", (task_id,))
        return task

    async def get(self, task_id: str) -> Task | None:
        rows = await self._execute(f"SELECT {_COLUMNS} FROM tasks WHERE id = ?", (task_id,), fetch=True)
        return _task(rows[0]) if rows else None

    async def list_tasks(self, limit: int = 100, statuses: tuple[str, ...] | None = None) -> list[Task]:
        where = f"WHERE status IN ({', '.join('?' * len(statuses))})" if statuses else ""
        rows = await self._execute(
            f"SELECT {_COLUMNS} FROM tasks {where} ORDER BY seq DESC LIMIT ?", (*(statuses or ()), limit),
            fetch=True,
        )
        return [_task(row) for row in rows]

    async def delete(self, task_id: str) -> bool:
        rows = await self._execute("DELETE FROM tasks WHERE id = ? RETURNING id", (task_id,), fetch=True)
        await self._execute("DELETE FROM task_audio WHERE task_id = ?", (task_id,))
        return bool(rows)

    async def undelivered(self) -> list[Task]:
        """Ended tasks with a webhook whose delivery never finished (the replica stopped mid-way)."""
        rows = await self._execute(
            f"SELECT {_COLUMNS} FROM tasks WHERE status IN ('completed', 'failed') AND request LIKE ? "
            "AND (webhook IS NULL OR webhook LIKE ?) ORDER BY seq",
            ('%"webhook":{%', '%"state":"pending"%'),
            fetch=True,
        )
        return [_task(row) for row in rows]

    async def set_webhook(self, task_id: str, delivery: dict[str, Any]) -> None:
        await self._execute("UPDATE tasks SET webhook = ? WHERE id = ?", (_json(delivery), task_id))

    async def recover(self, lease_s: float, max_attempts: int) -> list[str]:
        """Tasks whose worker stopped renewing its lease: queued again, or failed after max attempts."""
        stale = time.time() - lease_s
        failed = await self._execute(
            "UPDATE tasks SET status = 'failed', worker = NULL, completed_at = ?, error = ? "
            "WHERE status = 'processing' AND heartbeat_at < ? AND attempts >= ? RETURNING id",
            (time.time(), _json(TaskError("The task was interrupted too many times (server crashes); "
                                          "it was not completed.", "interrupted")), stale, max_attempts),
            fetch=True,
        )
        for (task_id,) in failed:
            await self._execute("DELETE FROM task_audio WHERE task_id = ?", (task_id,))
        requeued = await self._execute(
            "UPDATE tasks SET status = 'queued', worker = NULL WHERE status = 'processing' AND heartbeat_at < ? "
            "RETURNING id",
            (stale,),
            fetch=True,
        )
        return [row[0] for row in requeued]

    async def expire(self, older_than_s: float) -> int:
        """Deletes finished tasks (and their results) that ended more than `older_than_s` ago."""
        statuses = ", ".join(f"'{s}'" for s in FINISHED)
        rows = await self._execute(
            f"DELETE FROM tasks WHERE status IN ({statuses}) AND completed_at < ? RETURNING id",
            (time.time() - older_than_s,),
            fetch=True,
        )
        for (task_id,) in rows:
            await self._execute("DELETE FROM task_audio WHERE task_id = ?", (task_id,))
        return len(rows)


class SQLiteStore(TaskStore):
    """`busy_timeout_s`: how long a write waits for another connection's lock before it fails (503)."""

    def __init__(self, path: Path, busy_timeout_s: float = 30.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._connection = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None,
                                           timeout=busy_timeout_s)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        self._connection.executescript(_SCHEMA.format(serial="INTEGER", blob="BLOB"))

    def _run(self, sql: str, args: tuple[Any, ...], fetch: bool) -> list[tuple[Any, ...]]:
        try:
            cursor = self._connection.execute(sql, args)
            return cursor.fetchall() if fetch else []
        except sqlite3.Error as exc:
            raise StoreError(f"database error: {exc}") from exc

    def _run_all(self, statements: list[tuple[str, tuple[Any, ...]]]) -> list[int]:
        try:
            self._connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"database error: {exc}") from exc
        try:
            changed = [self._connection.execute(sql, args).rowcount for sql, args in statements]
            self._connection.execute("COMMIT")
            return changed
        except sqlite3.Error as exc:
            if self._connection.in_transaction:
                self._connection.execute("ROLLBACK")
            raise StoreError(f"database error: {exc}") from exc

    async def _execute(self, sql: str, args: tuple[Any, ...] = (), fetch: bool = False) -> list[tuple[Any, ...]]:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._run, sql, args, fetch)

    async def _transaction(self, statements: list[tuple[str, tuple[Any, ...]]]) -> list[int]:
        changed: list[int] = await asyncio.get_running_loop().run_in_executor(self._thread, self._run_all, statements)
        return changed

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._connection.close)
        self._thread.shutdown(wait=True)


class PostgresStore(TaskStore):
    claim_suffix = " FOR UPDATE SKIP LOCKED"
    queue_lock = "SELECT pg_advisory_xact_lock(7413)"  # held until the transaction ends

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, url: str) -> PostgresStore:
        import asyncpg

        pool = await asyncpg.create_pool(url, min_size=1, max_size=10)
        async with pool.acquire() as connection:
            await connection.execute("SELECT pg_advisory_lock(7412)")  # one replica migrates at a time
            try:
                await connection.execute(_SCHEMA.format(serial="BIGSERIAL", blob="BYTEA"))
            finally:
                await connection.execute("SELECT pg_advisory_unlock(7412)")
        return cls(pool)

    async def _execute(self, sql: str, args: tuple[Any, ...] = (), fetch: bool = False) -> list[tuple[Any, ...]]:
        import asyncpg

        numbered = _numbered(sql)
        try:
            async with self._pool.acquire() as connection:
                if fetch:
                    return [tuple(record) for record in await connection.fetch(numbered, *args)]
                await connection.execute(numbered, *args)
                return []
        except (asyncpg.PostgresError, OSError) as exc:
            raise StoreError(f"database error: {exc}") from exc

    async def _transaction(self, statements: list[tuple[str, tuple[Any, ...]]]) -> list[int]:
        import asyncpg

        try:
            async with self._pool.acquire() as connection, connection.transaction():
                # asyncpg returns the command tag: "INSERT 0 1", "UPDATE 3", "SELECT 1".
                return [int((await connection.execute(_numbered(sql), *args)).split()[-1])
                        for sql, args in statements]
        except (asyncpg.PostgresError, OSError) as exc:
            raise StoreError(f"database error: {exc}") from exc

    async def close(self) -> None:
        await self._pool.close()


async def open_store(db_url: str, data_dir: Path) -> TaskStore:
    """`postgresql://...` → PostgreSQL; `sqlite:///path[?timeout=<s>]` or empty → a SQLite file in `data_dir`.

    `timeout` is how long a SQLite write waits for a lock held by another connection (default 30 s).
    """
    if db_url.startswith(("postgres://", "postgresql://")):
        return await PostgresStore.connect(db_url)
    if db_url.startswith("sqlite:///"):
        path, _, query = db_url.removeprefix("sqlite:///").partition("?")
        options = urllib.parse.parse_qs(query)
        try:
            timeout = float(options.get("timeout", ["30"])[-1])
        except ValueError:
            raise StoreError("DB_URL: the SQLite timeout must be a number of seconds.") from None
        return SQLiteStore(Path(path), busy_timeout_s=timeout)
    if db_url:
        raise StoreError(f"Unsupported DB_URL '{db_url.split(':', 1)[0]}:...': use postgresql:// or sqlite:///.")
    return SQLiteStore(data_dir / "tasks.db")


def _numbered(sql: str) -> str:
    parts = sql.split("?")
    return "".join(f"{part}${i}" for i, part in enumerate(parts[:-1], start=1)) + parts[-1]


def _json(value: object) -> str | None:
    return None if value is None else _encoder.encode(value).decode()


def _row(task: Task) -> tuple[Any, ...]:
    return (task.id, task.status, task.source, _json(task.request), task.progress, _json(task.result),
            _json(task.error), _json(task.webhook_delivery), task.attempts, int(task.cancel_requested),
            task.created_at, task.started_at, task.completed_at, task.audio_duration)


def _task(row: tuple[Any, ...]) -> Task:
    (task_id, status, source, request, progress, result, error, webhook, attempts, cancel, created_at,
     started_at, completed_at, audio_duration) = row
    return Task(
        id=task_id, status=status, source=source,
        request=msgspec.json.decode(request, type=TaskRequest),
        created_at=created_at, progress=float(progress),
        started_at=started_at, completed_at=completed_at, audio_duration=audio_duration,
        result=msgspec.json.decode(result, type=DoneEvent) if result else None,
        error=msgspec.json.decode(error, type=TaskError) if error else None,
        webhook_delivery=msgspec.json.decode(webhook) if webhook else None,
        attempts=int(attempts), cancel_requested=bool(cancel),
    )
