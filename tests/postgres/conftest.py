"""Fixtures of the PostgreSQL tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from frontend.database import open_database
from frontend.tasks.store import TaskStore


@pytest.fixture
async def store(postgres_url: str | None, tmp_path: Path) -> AsyncIterator[TaskStore]:
    """An empty task database on the session's PostgreSQL server (skipped without one)."""
    if postgres_url is None:
        pytest.skip("no PostgreSQL server can be started here")
    opened = TaskStore(await open_database(postgres_url, tmp_path))
    for table in ("tasks", "task_audio", "speakers"):
        await opened.db.execute(f"DELETE FROM {table}")
    yield opened
    await opened.db.close()
