"""The frontend's database: SQLite (one file, default) or PostgreSQL (`DB_URL`, several replicas).

It holds the tasks (`tasks.store.TaskStore`) and the stored speakers (`speakers.store.SpeakerStore`); this
module only connects, creates (or migrates) the tables and runs SQL written with `?` placeholders on either
backend. Every row has an `owner`: the id of the API key that created it ("" with no keys configured, and for
the rows of a database written before owners existed).
"""

from __future__ import annotations

import asyncio
import sqlite3
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from frontend.keys import Principal
from whisper_triton.errors import UnavailableError

_TABLES = """
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
  audio_duration DOUBLE PRECISION,
  owner TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS task_audio (task_id TEXT PRIMARY KEY, data {blob} NOT NULL);
{speakers}
"""
# Speaker names are unique per owner (before issue 15: across the whole table, `name TEXT NOT NULL UNIQUE`).
_SPEAKERS = """CREATE TABLE IF NOT EXISTS {table} (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  embedding TEXT NOT NULL,
  embedding_model TEXT NOT NULL,
  duration DOUBLE PRECISION NOT NULL,
  created_at DOUBLE PRECISION NOT NULL,
  owner TEXT NOT NULL DEFAULT ''
);"""
# After the tables and their migration: the indexes on `owner` need the column.
_INDEXES = """
CREATE INDEX IF NOT EXISTS tasks_status_seq ON tasks (status, seq);
CREATE INDEX IF NOT EXISTS tasks_owner_status_seq ON tasks (owner, status, seq);
CREATE UNIQUE INDEX IF NOT EXISTS speakers_owner_name ON speakers (owner, name)
"""
# A database of the version before owners (issue 15): every row it holds is the no-key owner's, "".
_PG_MIGRATION = """
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS owner TEXT NOT NULL DEFAULT '';
ALTER TABLE speakers ADD COLUMN IF NOT EXISTS owner TEXT NOT NULL DEFAULT '';
ALTER TABLE speakers DROP CONSTRAINT IF EXISTS speakers_name_key
"""
_SPEAKER_COLUMNS = "id, name, embedding, embedding_model, duration, created_at"


def _schema(serial: str, blob: str) -> str:
    return _TABLES.format(serial=serial, blob=blob, speakers=_SPEAKERS.format(table="speakers"))


def _migrate_sqlite(connection: sqlite3.Connection) -> None:
    """Adds `owner` to the tables of an older database; speakers are copied into a table whose names are
    unique per owner (SQLite cannot drop a column's UNIQUE in place). One transaction: all or nothing."""
    def columns(table: str) -> set[str]:
        return {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}

    connection.execute("BEGIN IMMEDIATE")  # another process opening the same file waits, then sees it done
    try:
        if "owner" not in columns("tasks"):
            connection.execute("ALTER TABLE tasks ADD COLUMN owner TEXT NOT NULL DEFAULT ''")
        if "owner" not in columns("speakers"):
            connection.execute(_SPEAKERS.format(table="speakers_owned"))
            connection.execute(f"INSERT INTO speakers_owned ({_SPEAKER_COLUMNS}, owner) "
                               f"SELECT {_SPEAKER_COLUMNS}, '' FROM speakers")
            connection.execute("DROP TABLE speakers")
            connection.execute("ALTER TABLE speakers_owned RENAME TO speakers")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


class StoreError(UnavailableError):
    """The database cannot be reached or refused the write (locked too long, disk full, server down).

    Its message says nothing of the database's own words (clients see it); those are in `str()`, for the log.
    """

    code = "database_unavailable"

    def __init__(self, detail: str) -> None:
        super().__init__("The task database is unavailable (busy, full or down); retry shortly.")
        self.detail = detail

    def __str__(self) -> str:
        return self.detail


def owner_scope(principal: Principal) -> str | None:
    """The owner whose rows a caller's queries are limited to; None for one who sees every owner's."""
    return None if principal.sees_all else principal.key_id


class Database:
    """SQL written with `?` placeholders, run on either backend."""

    # What a claim of the next queued row adds to its sub-select (PostgreSQL: skip rows others hold).
    claim_suffix = ""
    # Serialises the writers that check the queue's length (SQLite's BEGIN IMMEDIATE does it already).
    queue_lock = ""

    async def execute(self, sql: str, args: tuple[Any, ...] = (), fetch: bool = False) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def transaction(self, statements: list[tuple[str, tuple[Any, ...]]]) -> list[int]:
        """Runs the statements all or none (a task never exists without its audio, nor ends half-recorded);
        returns the rows each changed."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def ping(self) -> bool:
        try:
            await self.execute("SELECT 1", fetch=True)
            return True
        except Exception:
            return False


class SQLiteDatabase(Database):
    """`busy_timeout_s`: how long a write waits for another connection's lock before it fails (503)."""

    def __init__(self, path: Path, busy_timeout_s: float = 30.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._connection = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None,
                                           timeout=busy_timeout_s)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        self._connection.executescript(_schema(serial="INTEGER", blob="BLOB"))
        _migrate_sqlite(self._connection)
        self._connection.executescript(_INDEXES)

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

    async def execute(self, sql: str, args: tuple[Any, ...] = (), fetch: bool = False) -> list[tuple[Any, ...]]:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._run, sql, args, fetch)

    async def transaction(self, statements: list[tuple[str, tuple[Any, ...]]]) -> list[int]:
        changed: list[int] = await asyncio.get_running_loop().run_in_executor(self._thread, self._run_all, statements)
        return changed

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._connection.close)
        self._thread.shutdown(wait=True)


class PostgresDatabase(Database):
    claim_suffix = " FOR UPDATE SKIP LOCKED"
    queue_lock = "SELECT pg_advisory_xact_lock(7413)"  # held until the transaction ends

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, url: str) -> PostgresDatabase:
        import asyncpg

        pool = await asyncpg.create_pool(url, min_size=1, max_size=10)
        async with pool.acquire() as connection:
            await connection.execute("SELECT pg_advisory_lock(7412)")  # one replica migrates at a time
            try:
                await connection.execute(_schema(serial="BIGSERIAL", blob="BYTEA"))
                await connection.execute(_PG_MIGRATION)
                await connection.execute(_INDEXES)
            finally:
                await connection.execute("SELECT pg_advisory_unlock(7412)")
        return cls(pool)

    async def execute(self, sql: str, args: tuple[Any, ...] = (), fetch: bool = False) -> list[tuple[Any, ...]]:
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

    async def transaction(self, statements: list[tuple[str, tuple[Any, ...]]]) -> list[int]:
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


async def open_database(db_url: str, data_dir: Path) -> Database:
    """`postgresql://...` → PostgreSQL; `sqlite:///path[?timeout=<s>]` or empty → a SQLite file in `data_dir`.

    `timeout` is how long a SQLite write waits for a lock held by another connection (default 30 s).
    """
    if db_url.startswith(("postgres://", "postgresql://")):
        return await PostgresDatabase.connect(db_url)
    if db_url.startswith("sqlite:///"):
        path, _, query = db_url.removeprefix("sqlite:///").partition("?")
        options = urllib.parse.parse_qs(query)
        try:
            timeout = float(options.get("timeout", ["30"])[-1])
        except ValueError:
            raise StoreError("DB_URL: the SQLite timeout must be a number of seconds.") from None
        return SQLiteDatabase(Path(path), busy_timeout_s=timeout)
    if db_url:
        raise StoreError(f"Unsupported DB_URL '{db_url.split(':', 1)[0]}:...': use postgresql:// or sqlite:///.")
    return SQLiteDatabase(data_dir / "tasks.db")


def _numbered(sql: str) -> str:
    parts = sql.split("?")
    return "".join(f"{part}${i}" for i, part in enumerate(parts[:-1], start=1)) + parts[-1]
