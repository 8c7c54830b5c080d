"""The task and speaker stores on PostgreSQL: the unit tests of the stores that take the `store` fixture run again
here, where `store` is a database on the session's PostgreSQL server (tests/postgres/conftest.py); and a database
of the version before owners (issue 15) migrates when this version opens it."""

from __future__ import annotations

import inspect
import secrets
from pathlib import Path
from types import ModuleType

import pytest

from frontend.database import open_database
from tests.unit import test_speaker_store, test_store, test_store_faults, test_store_owners
from tests.unit.test_store_owners import OLD_SCHEMA, check_migrated


def store_tests(module: ModuleType) -> dict[str, object]:
    return {name: test for name, test in vars(module).items()
            if name.startswith("test_") and callable(test) and "store" in inspect.signature(test).parameters}


for _module in (test_store, test_speaker_store, test_store_faults, test_store_owners):
    globals().update(store_tests(_module))


async def test_a_postgresql_database_of_the_previous_version_migrates(postgres_url: str | None, tmp_path: Path) -> None:
    if postgres_url is None:
        pytest.skip("no PostgreSQL server can be started here")
    import asyncpg

    name = f"migrate_{secrets.token_hex(4)}"
    server = await asyncpg.connect(postgres_url)
    await server.execute(f"CREATE DATABASE {name}")
    try:
        url = f"{postgres_url.rsplit('/', 1)[0]}/{name}"
        old = await asyncpg.connect(url)
        await old.execute(OLD_SCHEMA.format(serial="BIGSERIAL", blob="BYTEA", audio="'\\x6f6c64'::bytea"))
        await old.close()
        db = await open_database(url, tmp_path)
        try:
            await check_migrated(db)
        finally:
            await db.close()
        again = await open_database(url, tmp_path)  # migrated already: nothing changes
        try:
            assert len(await again.execute("SELECT id FROM tasks", fetch=True)) == 3
        finally:
            await again.close()
    finally:
        await server.execute(f"DROP DATABASE IF EXISTS {name}")
        await server.close()
