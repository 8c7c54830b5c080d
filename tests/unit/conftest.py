"""Fixtures of the unit tests."""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from frontend.database import SQLiteDatabase
from frontend.tasks.store import TaskStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[TaskStore]:
    """An empty task database in a SQLite file (tests/postgres runs the same tests on PostgreSQL)."""
    opened = TaskStore(SQLiteDatabase(tmp_path / "tasks.db"))
    yield opened
    await opened.db.close()


MODELS = Path(__file__).resolve().parents[2] / "model_repository"


@pytest.fixture
def triton_model(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Any]:
    """Loads a model's `model.py` (by its folder name) against a stand-in `triton_python_backend_utils` holding
    what the modules read at import; a test sets the rest on the returned module's `pb_utils`."""

    def load(name: str) -> Any:
        fake = types.ModuleType("triton_python_backend_utils")
        fake.TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake)
        spec = importlib.util.spec_from_file_location(f"{name}_model_under_test", MODELS / name / "1" / "model.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
