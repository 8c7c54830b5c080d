"""OpenAI's audio API: `POST /v1/audio/transcriptions` and `/v1/audio/translations`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, Reference, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType

from frontend.errors import error_responses
from frontend.guards import require_api_key
from frontend.keys import Principal
from frontend.openai.audio_form import RESPONSE_FORMATS, AudioForm, parse_audio_form
from frontend.openai.render import render, stream_events
from frontend.openai.schemas import SpeechTimestamp
from frontend.openai.speech_timestamps import parse_speech_form, speech_timestamps
from frontend.request_bodies import read_multipart
from frontend.settings import FrontendSettings
from frontend.speakers.store import SpeakerStore
from frontend.streams import awaited, event_stream
from frontend.transcription import Recording, Transcriptions
from whisper_triton.contract import VadParameters


def _form_schema(task: str) -> Schema:
    formats = list(RESPONSE_FORMATS if task == "transcribe" else RESPONSE_FORMATS[:-1])
    properties: dict[str, Schema | Reference] = {
        "file": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY,
                       description="Audio or video in any container FFmpeg reads (sniffed, not by name)."),
        "model": Schema(type=OpenAPIType.STRING, description="The served model id or an alias such as whisper-1."),
        "prompt": Schema(type=OpenAPIType.STRING),
        "response_format": Schema(type=OpenAPIType.STRING, enum=formats, default="json"),
        "temperature": Schema(type=OpenAPIType.NUMBER, minimum=0, maximum=1, default=0),
    }
    if task == "transcribe":
        properties |= {
            "language": Schema(type=OpenAPIType.STRING, description="ISO-639-1 or BCP-47 (en, en-US)."),
            "timestamp_granularities[]": Schema(
                type=OpenAPIType.ARRAY,
                items=Schema(type=OpenAPIType.STRING, enum=["word", "segment"]),
            ),
            "stream": Schema(type=OpenAPIType.BOOLEAN, default=False),
            "chunking_strategy": Schema(type=OpenAPIType.STRING, description="'auto' or a server_vad object."),
            "include[]": Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.STRING, enum=["logprobs"])),
            "known_speaker_names[]": Schema(
                type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.STRING),
                description="With diarized_json: names for the speakers; one per reference clip, then names "
                            "of speakers stored with /v1/speakers.",
            ),
            "known_speaker_references[]": Schema(
                type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.STRING),
                description="Data URLs (data:audio/wav;base64,...) of 2-10 s clips, one per name.",
            ),
        }
    return Schema(type=OpenAPIType.OBJECT, properties=properties, required=["file", "model"])


def _operation(task: str) -> type[Operation]:
    @dataclass
    class AudioOperation(Operation):
        def __post_init__(self) -> None:
            self.request_body = RequestBody(
                content={"multipart/form-data": OpenAPIMediaType(schema=_form_schema(task))}, required=True
            )
            ok = (self.responses or {}).get("200")
            if isinstance(ok, OpenAPIResponse) and ok.content is not None:
                # The body follows response_format (and stream): JSON, plain text (text, srt), WebVTT or SSE.
                text = OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING))
                ok.content |= {"text/plain": text, "text/vtt": text, "text/event-stream": text}

    return AudioOperation


_VAD = VadParameters()  # the speech timestamps' defaults


def _speech_operation() -> type[Operation]:
    def milliseconds(default: int, what: str) -> Schema:
        return Schema(type=OpenAPIType.INTEGER, minimum=0, default=default, description=what)

    properties: dict[str, Schema | Reference] = {
        "file": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY, description="Audio in any container."),
        "threshold": Schema(type=OpenAPIType.NUMBER, minimum=0, maximum=1, default=_VAD.threshold,
                            description="Frames whose speech probability is above it are speech."),
        "neg_threshold": Schema(type=OpenAPIType.NUMBER, minimum=0, maximum=1,
                                description="Frames below it end speech (default: threshold - 0.15)."),
        "min_silence_duration_ms": milliseconds(_VAD.min_silence_duration_ms, "Shorter silences do not end a region."),
        "speech_pad_ms": milliseconds(_VAD.speech_pad_ms, "Added to each side of a region."),
        "min_speech_duration_ms": milliseconds(_VAD.min_speech_duration_ms, "Shorter regions are dropped."),
        "max_speech_duration_s": Schema(type=OpenAPIType.NUMBER, exclusive_minimum=0,
                                        description="Longer regions are split (default: no limit)."),
        "model": Schema(type=OpenAPIType.STRING, description="Accepted and ignored: one VAD, Silero v6."),
    }

    @dataclass
    class SpeechOperation(Operation):
        def __post_init__(self) -> None:
            schema = Schema(type=OpenAPIType.OBJECT, properties=properties, required=["file"])
            self.request_body = RequestBody(content={"multipart/form-data": OpenAPIMediaType(schema=schema)},
                                            required=True)

    return SpeechOperation


_ERRORS = error_responses({
    400: "Bad parameters, or audio that is empty, too short or cannot be decoded",
    401: "Missing or wrong API key",
    404: "Unknown model",
    413: "Upload larger than the limit",
    503: "Overloaded or inference server unavailable (see Retry-After)",
})


class AudioController(Controller):
    path = "/v1/audio"
    guards = [require_api_key]  # noqa: RUF012
    tags = ["audio"]  # noqa: RUF012

    @post("/transcriptions", operation_id="createTranscription", operation_class=_operation("transcribe"),
          responses=_ERRORS, status_code=200)
    async def create_transcription(self, request: Request[Any, Any, Any], settings: NamedDependency[FrontendSettings],
                                   transcriptions: NamedDependency[Transcriptions],
                                   speakers: NamedDependency[SpeakerStore],
                                   principal: NamedDependency[Principal]) -> Response[Any]:
        """Transcribes audio into the input language (OpenAI-compatible)."""
        form = parse_audio_form(*await read_multipart(request, settings.max_upload_bytes), "transcribe")
        return await _answer(request, form, settings, transcriptions, speakers, principal)

    @post("/translations", operation_id="createTranslation", operation_class=_operation("translate"),
          responses=_ERRORS, status_code=200)
    async def create_translation(self, request: Request[Any, Any, Any], settings: NamedDependency[FrontendSettings],
                                 transcriptions: NamedDependency[Transcriptions],
                                 speakers: NamedDependency[SpeakerStore],
                                 principal: NamedDependency[Principal]) -> Response[Any]:
        """Translates audio into English text (OpenAI-compatible)."""
        form = parse_audio_form(*await read_multipart(request, settings.max_upload_bytes), "translate")
        return await _answer(request, form, settings, transcriptions, speakers, principal)

    @post("/speech/timestamps", operation_id="detectSpeechTimestamps", responses=_ERRORS, status_code=200,
          operation_class=_speech_operation())
    async def detect_speech_timestamps(self, request: Request[Any, Any, Any],
                                       settings: NamedDependency[FrontendSettings],
                                       transcriptions: NamedDependency[Transcriptions],
                                       principal: NamedDependency[Principal]) -> list[SpeechTimestamp]:
        """Speech regions of the audio, in milliseconds, by the pipeline's VAD (speaches-compatible)."""
        form = parse_speech_form(*await read_multipart(request, settings.max_upload_bytes))
        slot = await transcriptions.admit(principal)
        done = await awaited(request.receive, slot, transcriptions.result(form.file.data, form.request,
                                                                          principal=principal))
        return speech_timestamps(done)


async def _answer(request: Request[Any, Any, Any], form: AudioForm, settings: FrontendSettings,
                  transcriptions: Transcriptions, speakers: SpeakerStore, principal: Principal) -> Response[Any]:
    asked = msgspec.structs.replace(form.request, model=await transcriptions.served_model(settings, form.model))
    asked = await speakers.with_stored_voices(asked, principal.key_id)
    record = Recording(model=form.model, file_name=form.file.filename, owner=principal.key_id)
    slot = await transcriptions.admit(principal)
    if asked.stream and asked.task == "transcribe":
        events = transcriptions.events(form.file.data, asked, record, principal)
        return event_stream(stream_events(events, diarized=form.response_format == "diarized_json",
                                          with_logprobs=asked.logprobs), slot.release)
    # A client that leaves stops its transcription (and frees its slot) instead of waiting for it.
    done = await awaited(request.receive, slot, transcriptions.result(form.file.data, asked, record, principal))
    return render(done, form)
