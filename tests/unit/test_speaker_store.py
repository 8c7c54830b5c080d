"""Stored speakers on SQLite and PostgreSQL, and how transcriptions name them."""

from __future__ import annotations

import asyncio

import pytest

from frontend.speakers.store import SpeakerRecord, SpeakerStore
from frontend.tasks.store import TaskStore
from whisper_triton.contract import TranscriptionRequest
from whisper_triton.errors import ConflictError, InvalidRequestError


def record(name: str, value: float, created_at: float) -> SpeakerRecord:
    return SpeakerRecord(f"spk_{name}", name, [value, 0.5, -0.25], "model-3", 4.5, created_at)


def request(names: tuple[str, ...], references: tuple[bytes, ...] = ()) -> TranscriptionRequest:
    return TranscriptionRequest(diarize=True, known_speaker_names=names, known_speaker_references=references)


async def test_create_list_get_delete(store: TaskStore) -> None:
    speakers = SpeakerStore(store.db)
    await speakers.create(record("ann", 1.0, 10.0))
    await speakers.create(record("bob", 2.0, 20.0))
    assert [r.name for r in await speakers.all()] == ["ann", "bob"]
    assert await speakers.get("spk_bob") == record("bob", 2.0, 20.0)  # the embedding survives the round trip
    assert list(await speakers.by_names(["bob", "nobody"])) == ["bob"]
    with pytest.raises(ConflictError) as taken:
        await speakers.create(SpeakerRecord("spk_other", "ann", [0.0], "m", 1.0, 30.0))
    assert taken.value.code == "speaker_exists"
    assert await speakers.delete("spk_ann") and not await speakers.delete("spk_ann")
    assert await speakers.get("spk_ann") is None


async def test_concurrent_enrolments_of_one_name_store_one(store: TaskStore) -> None:
    speakers = SpeakerStore(store.db)
    results = await asyncio.gather(*(speakers.create(SpeakerRecord(f"spk_{i}", "same", [float(i)], "m", 1.0, i))
                                     for i in range(4)), return_exceptions=True)
    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, ConflictError) for r in results if r is not None)
    assert len(await speakers.all()) == 1


async def test_names_without_a_clip_are_the_stored_voices(store: TaskStore) -> None:
    speakers = SpeakerStore(store.db)
    await speakers.create(record("ann", 1.0, 10.0))
    with_voices = await speakers.with_stored_voices(request(("agent", "ann"), (b"clip",)))
    assert with_voices.known_speaker_embeddings == ((1.0, 0.5, -0.25),)
    assert (await speakers.with_stored_voices(request(("agent",), (b"clip",)))).known_speaker_embeddings == ()
    with pytest.raises(InvalidRequestError) as unknown:
        await speakers.with_stored_voices(request(("ann", "zed")))
    assert unknown.value.client_fault and unknown.value.param == "known_speaker_names"
    assert "zed" in unknown.value.message
