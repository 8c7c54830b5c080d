"""Owners in the stores (issue 15), on SQLite and PostgreSQL: each key's tasks and voices are its own, claims
are fair across keys, a key's queue is bounded, and a database of the version before owners migrates."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from frontend.database import Database, SQLiteDatabase
from frontend.keys import ADMIN, OPEN, Principal
from frontend.settings import FrontendSettings
from frontend.speakers.store import SpeakerRecord, SpeakerStore
from frontend.tasks.queue import default_queued_limit
from frontend.tasks.records import Task, TaskRequest, new_task
from frontend.tasks.store import TaskStore
from whisper_triton.contract import DoneEvent, TranscriptionRequest
from whisper_triton.errors import ConflictError, InvalidRequestError

ALICE, BOB, CAROL = "a11ce000a11ce000", "b0b00000b0b00000", "ca401000ca401000"
DONE = DoneEvent(task="transcribe", language="en", duration=1.0, text="", segments=[])


def task_of(owner: str) -> Task:
    return new_task(TaskRequest(model="tiny.en", file_name=f"{owner}.wav"), "upload", owner=owner)


async def queue(store: TaskStore, *owners: str) -> list[Task]:
    """Tasks created one after the other, in this order of owners."""
    tasks = [task_of(owner) for owner in owners]
    for task in tasks:
        assert await store.create(task, b"audio")
    return tasks


async def claimed_owners(store: TaskStore, count: int) -> list[str]:
    owners = []
    for i in range(count):
        task = await store.claim(f"w{i}")
        assert task is not None
        owners.append(task.owner)
    return owners


async def test_each_owner_reads_cancels_and_deletes_only_its_own_tasks(store: TaskStore) -> None:
    alices, _, bobs, keyless = await queue(store, ALICE, ALICE, BOB, "")
    for task in (alices, bobs, keyless):
        assert (await store.get(task.id)).owner == task.owner  # type: ignore[union-attr]
    assert await store.get(alices.id, owner=BOB) is None  # exactly as an unknown id
    assert (await store.get(alices.id, owner=ALICE)).id == alices.id  # type: ignore[union-attr]
    assert {t.owner for t in await store.list_tasks(owner=ALICE)} == {ALICE}
    assert len(await store.list_tasks(owner=ALICE)) == 2
    assert [t.id for t in await store.list_tasks(owner=BOB)] == [bobs.id]
    assert [t.id for t in await store.list_tasks(owner="")] == [keyless.id]
    assert len(await store.list_tasks()) == 4  # no owner given: everyone's (the admin)
    assert [t.id for t in await store.list_tasks(owner=CAROL)] == []
    assert await store.count_queued(ALICE) == 2 and await store.count_queued() == 4
    # Bob's cancel and delete of Alice's task find nothing and change nothing.
    assert await store.request_cancel(alices.id, owner=BOB) is None
    assert not await store.delete(alices.id, owner=BOB)
    untouched = await store.get(alices.id)
    assert untouched is not None and untouched.status == "queued" and not untouched.cancel_requested
    assert await store.audio(alices.id) == b"audio"
    # Alice's own do.
    cancelled = await store.request_cancel(alices.id, owner=ALICE)
    assert cancelled is not None and cancelled.status == "cancelled"
    assert await store.delete(alices.id, owner=ALICE) and await store.get(alices.id) is None


async def test_claims_take_the_owner_with_the_fewest_tasks_processing(store: TaskStore) -> None:
    # Alice queues 4 before Bob's 2: FIFO would run all of Alice's first; fair claims alternate, the
    # owner waiting longest first when both have as many running.
    await queue(store, ALICE, ALICE, ALICE, ALICE, BOB, BOB)
    assert await claimed_owners(store, 6) == [ALICE, BOB, ALICE, BOB, ALICE, ALICE]
    assert await store.claim("idle") is None


async def test_claims_count_what_each_owner_has_processing_now(store: TaskStore) -> None:
    first, second = await queue(store, ALICE, ALICE)
    await claimed_owners(store, 2)  # Alice has two running
    _, _, alice_third = await queue(store, CAROL, BOB, ALICE)
    # Carol and Bob have none running: theirs go first (Carol's has waited longer), Alice's third after them.
    assert await claimed_owners(store, 3) == [CAROL, BOB, ALICE]
    # A finished task no longer counts: Alice, with none left running, comes before Bob, who has one.
    for task in (first, second, alice_third):
        await store.finish(task.id, "completed", result=DONE)
    await queue(store, BOB, ALICE)
    assert await claimed_owners(store, 2) == [ALICE, BOB]


async def test_concurrent_claims_of_many_owners_never_share_a_task(store: TaskStore) -> None:
    ids = {task.id for task in await queue(store, *[ALICE] * 6, *[BOB] * 3, *[CAROL] * 3)}
    claimed = await asyncio.gather(*(store.claim(f"w{i}") for i in range(16)))
    got = [t.id for t in claimed if t is not None]
    assert sorted(got) == sorted(ids)  # each exactly once, the extra claimers get nothing


async def test_each_owner_has_its_own_queue_bound(store: TaskStore) -> None:
    assert await store.create(task_of(ALICE), max_queued=10, max_queued_per_owner=2)
    assert await store.create(task_of(ALICE), b"audio", max_queued=10, max_queued_per_owner=2)
    refused = task_of(ALICE)
    assert not await store.create(refused, b"audio", max_queued=10, max_queued_per_owner=2)
    assert await store.get(refused.id) is None and await store.audio(refused.id) is None  # nothing stored
    assert await store.create(task_of(BOB), max_queued=10, max_queued_per_owner=2)  # Bob is not held up
    assert await store.count_queued(ALICE) == 2 and await store.count_queued(BOB) == 1
    await store.claim("w")  # one of Alice's starts: she may queue one more
    assert await store.create(task_of(ALICE), max_queued=10, max_queued_per_owner=2)
    # The global bound still holds, whoever is under their own.
    assert not await store.create(task_of(CAROL), max_queued=3, max_queued_per_owner=2)
    assert await store.count_queued() == 3


async def test_concurrent_creates_respect_the_owner_bound(store: TaskStore) -> None:
    created = await asyncio.gather(*(store.create(task_of(ALICE), max_queued=100, max_queued_per_owner=3)
                                     for _ in range(10)))
    assert sum(created) == 3 and await store.count_queued(ALICE) == 3


def voice(speaker_id: str, name: str, owner: str, value: float = 1.0) -> SpeakerRecord:
    return SpeakerRecord(speaker_id, name, [value, 0.5], "model-3", 4.0, time.time(), owner)


async def test_voices_belong_to_their_owner_and_names_are_unique_per_owner(store: TaskStore) -> None:
    speakers = SpeakerStore(store.db)
    await speakers.create(voice("spk_a", "ann", ALICE, 1.0))
    await speakers.create(voice("spk_b", "ann", BOB, 2.0))  # the same name, another key: its own voice
    with pytest.raises(ConflictError):
        await speakers.create(voice("spk_a2", "ann", ALICE))
    assert [r.id for r in await speakers.all(ALICE)] == ["spk_a"]
    assert {r.id for r in await speakers.all()} == {"spk_a", "spk_b"}
    assert await speakers.get("spk_a", BOB) is None and (await speakers.get("spk_a", ALICE)) is not None
    assert not await speakers.delete("spk_a", BOB) and await speakers.get("spk_a") is not None
    named = TranscriptionRequest(diarize=True, known_speaker_names=("ann",))
    assert (await speakers.with_stored_voices(named, ALICE)).known_speaker_embeddings == ((1.0, 0.5),)
    assert (await speakers.with_stored_voices(named, BOB)).known_speaker_embeddings == ((2.0, 0.5),)
    with pytest.raises(InvalidRequestError):
        await speakers.with_stored_voices(named, CAROL)
    assert await speakers.delete("spk_a", ALICE) and await speakers.get("spk_a") is None


# The schema of the version before owners (issue 15), as a database it created holds it.
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
  seq {serial} PRIMARY KEY, id TEXT NOT NULL UNIQUE, status TEXT NOT NULL, source TEXT NOT NULL,
  request TEXT NOT NULL, progress DOUBLE PRECISION NOT NULL DEFAULT 0, result TEXT, error TEXT, webhook TEXT,
  attempts INTEGER NOT NULL DEFAULT 0, worker TEXT, heartbeat_at DOUBLE PRECISION,
  cancel_requested INTEGER NOT NULL DEFAULT 0, created_at DOUBLE PRECISION NOT NULL,
  started_at DOUBLE PRECISION, completed_at DOUBLE PRECISION, audio_duration DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS tasks_status_seq ON tasks (status, seq);
CREATE TABLE IF NOT EXISTS task_audio (task_id TEXT PRIMARY KEY, data {blob} NOT NULL);
CREATE TABLE IF NOT EXISTS speakers (
  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, embedding TEXT NOT NULL, embedding_model TEXT NOT NULL,
  duration DOUBLE PRECISION NOT NULL, created_at DOUBLE PRECISION NOT NULL
);
INSERT INTO tasks (id, status, source, request, created_at) VALUES
  ('old-queued', 'queued', 'upload', '{{"model":"tiny.en","file_name":"old.wav"}}', 1.0),
  ('old-done', 'completed', 'sync', '{{"model":"whisper-1"}}', 2.0);
INSERT INTO task_audio (task_id, data) VALUES ('old-queued', {audio});
INSERT INTO speakers VALUES ('spk_old', 'ann', '[1.0, 0.5]', 'model-3', 4.0, 3.0)
"""


async def check_migrated(db: Database) -> None:
    """A database the previous version wrote, opened by this one: its rows are the keyless owner's, and
    everything works on it (owners, per-owner names, fair claims)."""
    store, speakers = TaskStore(db), SpeakerStore(db)
    old = await store.get("old-queued", owner="")
    assert old is not None and old.owner == "" and old.request.file_name == "old.wav"
    assert await store.get("old-queued", owner=ALICE) is None
    assert {t.id for t in await store.list_tasks(owner="")} == {"old-queued", "old-done"}
    assert [r.id for r in await speakers.all("")] == ["spk_old"]
    await speakers.create(voice("spk_alice_ann", "ann", ALICE))  # `name` is no longer unique on its own
    with pytest.raises(ConflictError):
        await speakers.create(voice("spk_again", "ann", ""))
    alices = task_of(ALICE)
    assert await store.create(alices, b"new", max_queued=10, max_queued_per_owner=1)
    claimed = await store.claim("w")
    assert claimed is not None and claimed.id == "old-queued" and await store.audio("old-queued") == b"old"
    assert (await store.claim("w")).id == alices.id  # type: ignore[union-attr]


async def test_a_sqlite_database_of_the_previous_version_migrates(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    old = sqlite3.connect(path)
    old.executescript(OLD_SCHEMA.format(serial="INTEGER", blob="BLOB", audio="X'6f6c64'"))
    old.close()
    db = SQLiteDatabase(path)
    try:
        await check_migrated(db)
    finally:
        await db.close()
    again = SQLiteDatabase(path)  # opening it again (migrated already) changes nothing
    try:
        assert len(await TaskStore(again).list_tasks()) == 3 and len(await SpeakerStore(again).all()) == 2
    finally:
        await again.close()


def test_a_keys_queued_limit_is_its_own_or_the_default_and_the_admin_has_none() -> None:
    settings = SimpleNamespace(key_max_queued_tasks=3, key_limits={"bob": {"max_queued_tasks": 5}})
    limit = default_queued_limit(cast(FrontendSettings, settings))
    assert limit(Principal(ALICE, "alice")) == 3 and limit(Principal(BOB, "bob")) == 5
    assert limit(ADMIN) == 0 and limit(OPEN) == 3  # the keyless caller is one key among none
    assert default_queued_limit(cast(FrontendSettings, SimpleNamespace()))(Principal(ALICE, "alice")) == 0
