"""Stored speakers: named voice embeddings in the frontend's database (SQLite or PostgreSQL).

Each voice belongs to the API key that enrolled it (`owner`, its key id), and its name is unique among that
key's voices. Reads and deletes take an `owner`: given, only that owner's voices exist for them; None sees
all (the admin).
"""

from __future__ import annotations

from typing import Any

import msgspec

from frontend.database import Database, StoreError
from whisper_triton.contract import TranscriptionRequest
from whisper_triton.errors import ConflictError, InvalidRequestError

_COLUMNS = "id, name, embedding, embedding_model, duration, created_at, owner"
MAX_SPEAKERS = 10_000


class SpeakerRecord(msgspec.Struct, frozen=True):
    id: str
    name: str
    embedding: list[float]
    embedding_model: str
    duration: float
    created_at: float
    owner: str = ""  # the id of the key that enrolled it ("" with no keys configured)


class SpeakerStore:
    """The `speakers` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, record: SpeakerRecord) -> None:
        if await self.by_names([record.name], record.owner):
            raise _name_taken(record.name)
        count = await self.db.execute("SELECT COUNT(*) FROM speakers WHERE owner = ?", (record.owner,), fetch=True)
        if int(count[0][0]) >= MAX_SPEAKERS:
            raise InvalidRequestError(f"At most {MAX_SPEAKERS} speakers can be stored per API key; delete some first.",
                                      param="name")
        try:
            await self.db.execute(
                f"INSERT INTO speakers ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (record.id, record.name, msgspec.json.encode(record.embedding).decode(), record.embedding_model,
                 record.duration, record.created_at, record.owner),
            )
        except StoreError:
            if await self.by_names([record.name], record.owner):  # enrolled concurrently under the same name
                raise _name_taken(record.name) from None
            raise

    async def all(self, owner: str | None = None) -> list[SpeakerRecord]:
        where, args = _owned(owner)
        rows = await self.db.execute(f"SELECT {_COLUMNS} FROM speakers WHERE 1 = 1{where} ORDER BY created_at, name",
                                     args, fetch=True)
        return [_record(row) for row in rows]

    async def get(self, speaker_id: str, owner: str | None = None) -> SpeakerRecord | None:
        where, args = _owned(owner)
        rows = await self.db.execute(f"SELECT {_COLUMNS} FROM speakers WHERE id = ?{where}", (speaker_id, *args),
                                     fetch=True)
        return _record(rows[0]) if rows else None

    async def by_names(self, names: list[str], owner: str = "") -> dict[str, SpeakerRecord]:
        """`owner`'s voices of these names (names are unique per owner, not across owners)."""
        found: dict[str, SpeakerRecord] = {}
        for name in names:
            rows = await self.db.execute(f"SELECT {_COLUMNS} FROM speakers WHERE name = ? AND owner = ?",
                                         (name, owner), fetch=True)
            if rows:
                found[name] = _record(rows[0])
        return found

    async def delete(self, speaker_id: str, owner: str | None = None) -> bool:
        where, args = _owned(owner)
        rows = await self.db.execute(f"DELETE FROM speakers WHERE id = ?{where} RETURNING id", (speaker_id, *args),
                                     fetch=True)
        return bool(rows)

    async def with_stored_voices(self, request: TranscriptionRequest, owner: str = "") -> TranscriptionRequest:
        """The request with the embeddings of the known speakers it names without a reference clip (`owner`'s
        stored ones), in order."""
        stored = list(request.known_speaker_names[len(request.known_speaker_references):])
        if not stored:
            return request
        found = await self.by_names(stored, owner)
        missing = [name for name in stored if name not in found]
        if missing:
            raise InvalidRequestError(f"Unknown speaker '{missing[0]}': give a known_speaker_references clip for it "
                                      "or enrol it with POST /v1/speakers.", param="known_speaker_names",
                                      code="speaker_not_found")
        embeddings = tuple(tuple(found[name].embedding) for name in stored)
        return msgspec.structs.replace(request, known_speaker_embeddings=embeddings)


def _owned(owner: str | None) -> tuple[str, tuple[Any, ...]]:
    return ("", ()) if owner is None else (" AND owner = ?", (owner,))


def _record(row: tuple[Any, ...]) -> SpeakerRecord:
    speaker_id, name, embedding, model, duration, created_at, owner = row
    return SpeakerRecord(speaker_id, name, msgspec.json.decode(embedding, type=list[float]), model,
                         float(duration), float(created_at), owner or "")


def _name_taken(name: str) -> ConflictError:
    return ConflictError(f"A speaker named '{name}' already exists; delete it first or pick another name.",
                         param="name", code="speaker_exists")

