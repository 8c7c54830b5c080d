"""Shared fixtures: real `make serve` processes (Triton + frontend) on free ports (harness.stack)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.stack import Served, free_port, start_served


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The English tiny.en model: fast, for most end-to-end tests."""
    instance = start_served(tmp_path_factory.mktemp("serve-tiny"), "tiny.en")
    yield instance
    instance.stop()


@pytest.fixture(scope="session")
def served_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The multilingual base model (the `make serve` default): translation, language detection."""
    instance = start_served(tmp_path_factory.mktemp("serve-base"), "base")
    yield instance
    instance.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    """A PostgreSQL server for the session (TEST_DB_URL, or one started here), or None."""
    from harness.postgres import postgres_server

    with postgres_server(free_port()) as url:
        yield url
