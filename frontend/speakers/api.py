"""Known speakers: named voice embeddings kept in the database, used to label diarized transcripts.

    POST   /v1/speakers            enrol: `name` + `file` (or `reference`, a data URL) -> the speaker
    GET    /v1/speakers            list
    GET    /v1/speakers/{id}       one
    DELETE /v1/speakers/{id}       forget
    POST   /v1/speakers/identify   whose voice is this clip? -> ranked matches

Later transcriptions name stored speakers in `known_speaker_names[]` without a reference clip; the
stored embedding is then sent to Triton instead (`SpeakerStore.with_stored_voices`).

A voice belongs to the key that enrolled it: other keys neither list, read, delete, match nor name it (its
id answers 404, as an unknown one), and each key has its own names. The admin sees every key's voices.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec
import numpy as np
from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.status_codes import HTTP_201_CREATED

from frontend.database import owner_scope
from frontend.errors import bad_request, error_responses
from frontend.guards import require_api_key
from frontend.keys import Principal
from frontend.request_bodies import FormReader, UploadedFile, data_url_audio, read_json_object, read_multipart
from frontend.settings import FrontendSettings
from frontend.speakers.store import SpeakerRecord, SpeakerStore
from frontend.triton import TritonClient
from whisper_triton.errors import InvalidRequestError, NotFoundError
from whisper_triton.speakers import MATCH_THRESHOLD, check_name, cosine


class Speaker(msgspec.Struct, frozen=True):
    """A stored voice, as the API shows it (the embedding itself is not returned)."""

    id: str
    name: str
    embedding_model: str
    duration: float  # seconds of audio enrolled
    created_at: int
    object: str = "speaker"


class SpeakerList(msgspec.Struct, frozen=True):
    data: list[Speaker]
    object: str = "list"


class DeletedSpeaker(msgspec.Struct, frozen=True):
    id: str
    deleted: bool = True
    object: str = "speaker.deleted"


class SpeakerMatch(msgspec.Struct, frozen=True):
    id: str
    name: str
    similarity: float


class Identification(msgspec.Struct, frozen=True):
    speaker: SpeakerMatch | None  # the best match at or above the threshold
    matches: list[SpeakerMatch]  # every stored voice of the same embedding model, most similar first
    threshold: float
    duration: float
    object: str = "speaker.identification"


def _public(record: SpeakerRecord) -> Speaker:
    return Speaker(record.id, record.name, record.embedding_model, record.duration, int(record.created_at))


def _not_found(speaker_id: str) -> NotFoundError:
    return NotFoundError(f"No speaker with id '{speaker_id[:64]}'.", param="speaker_id", code="speaker_not_found")


async def _clip(request: Request[Any, Any, Any], max_upload_bytes: int) -> tuple[FormReader, bytes]:
    """The form fields and the voice clip: multipart (`file` or `reference`) or JSON (`reference`)."""
    if request.content_type[0] == "application/json":
        body = await read_json_object(request)
        fields = {str(k): [str(v)] for k, v in body.items() if v is not None}
        files: dict[str, UploadedFile] = {}
    else:
        fields, files = await read_multipart(request, max_upload_bytes)
    reader = FormReader(fields)
    upload, reference = files.get("file"), reader.text("reference")
    if upload is not None and reference is not None:
        raise bad_request("Give the voice as 'file' or as 'reference', not both.", param="file")
    if upload is not None:
        return reader, upload.data
    if reference is not None:
        return reader, data_url_audio(reference, "reference")
    raise bad_request("You must provide a 'file' part with a clip of the voice (or a 'reference' data URL).",
                      param="file", code="missing_required_parameter")


_ERRORS = error_responses({
    400: "Bad parameters, or a clip that is not 1 to 30 s of decodable audio",
    401: "Missing or wrong API key",
    503: "The diarization model is loading or the inference server is unavailable (see Retry-After)",
})


class SpeakersController(Controller):
    path = "/v1/speakers"
    guards = [require_api_key]  # noqa: RUF012
    tags = ["speakers"]  # noqa: RUF012

    @post("/", operation_id="createSpeaker", status_code=HTTP_201_CREATED,
          responses=_ERRORS | error_responses({409: "A speaker of that name exists"}))
    async def create_speaker(self, request: Request[Any, Any, Any], settings: NamedDependency[FrontendSettings],
                             triton: NamedDependency[TritonClient], speakers: NamedDependency[SpeakerStore],
                             principal: NamedDependency[Principal]) -> Speaker:
        """Enrols a voice: `name` and `file` (multipart; 1 to 30 s of one speaker, 2 to 10 s works best), or
        JSON `{"name", "reference"}` with the clip as a data URL."""
        reader, clip = await _clip(request, settings.max_upload_bytes)
        name = (reader.text("name") or "").strip()
        try:
            check_name(name)
        except InvalidRequestError as exc:
            raise bad_request(exc.message, param="name") from exc
        voice = await triton.embed(clip)
        record = SpeakerRecord(f"spk_{uuid.uuid4().hex}", name, list(voice.embedding or ()),
                               voice.embedding_model or "", voice.duration, time.time(), principal.key_id)
        await speakers.create(record)
        return _public(record)

    @get("/", operation_id="listSpeakers")
    async def list_speakers(self, speakers: NamedDependency[SpeakerStore],
                            principal: NamedDependency[Principal]) -> SpeakerList:
        """The caller's stored speakers (every key's for the admin), oldest first."""
        return SpeakerList([_public(r) for r in await speakers.all(owner_scope(principal))])

    @get("/{speaker_id:str}", operation_id="retrieveSpeaker", responses=error_responses({404: "No such speaker"}))
    async def retrieve_speaker(self, speaker_id: FromPath[str], speakers: NamedDependency[SpeakerStore],
                               principal: NamedDependency[Principal]) -> Speaker:
        record = await speakers.get(speaker_id, owner_scope(principal))
        if record is None:
            raise _not_found(speaker_id)
        return _public(record)

    @delete("/{speaker_id:str}", operation_id="deleteSpeaker", status_code=200,
            responses=error_responses({404: "No such speaker"}))
    async def delete_speaker(self, speaker_id: FromPath[str], speakers: NamedDependency[SpeakerStore],
                             principal: NamedDependency[Principal]) -> DeletedSpeaker:
        if not await speakers.delete(speaker_id, owner_scope(principal)):
            raise _not_found(speaker_id)
        return DeletedSpeaker(speaker_id)

    @post("/identify", operation_id="identifySpeaker", status_code=200, responses=_ERRORS)
    async def identify_speaker(self, request: Request[Any, Any, Any], settings: NamedDependency[FrontendSettings],
                               triton: NamedDependency[TritonClient], speakers: NamedDependency[SpeakerStore],
                               principal: NamedDependency[Principal]) -> Identification:
        """Compares a clip of one voice with the caller's stored speakers; `threshold` (default 0.65) decides a
        match."""
        reader, clip = await _clip(request, settings.max_upload_bytes)
        threshold = reader.number("threshold", MATCH_THRESHOLD, -1.0, 1.0)
        voice = await triton.embed(clip)
        records = await speakers.all(owner_scope(principal))
        matches = sorted(
            (SpeakerMatch(r.id, r.name, round(cosine(np.asarray(voice.embedding), np.asarray(r.embedding)), 4))
             for r in records if r.embedding_model == voice.embedding_model),
            key=lambda m: -m.similarity,
        )
        best = matches[0] if matches and matches[0].similarity >= threshold else None
        return Identification(best, matches, threshold, voice.duration)
