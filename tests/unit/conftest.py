"""Fixtures of the unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from frontend.tasks.store import SQLiteStore, TaskStore, open_store


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TaskStore]:
    """An empty task database: a SQLite file, then the session's PostgreSQL server (skipped without one)."""
    if request.param == "sqlite":
        opened: TaskStore = SQLiteStore(tmp_path / "tasks.db")
    else:
        url = request.getfixturevalue("postgres_url")
        if url is None:
            pytest.skip("no PostgreSQL server can be started here")
        opened = await open_store(url, tmp_path)
        for table in ("tasks", "task_audio", "speakers"):
            await opened.execute(f"DELETE FROM {table}")
    yield opened
    await opened.close()
