"""Fixtures of the unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from frontend.database import SQLiteDatabase
from frontend.tasks.store import TaskStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[TaskStore]:
    """An empty task database in a SQLite file (tests/postgres runs the same tests on PostgreSQL)."""
    opened = TaskStore(SQLiteDatabase(tmp_path / "tasks.db"))
    yield opened
    await opened.db.close()
