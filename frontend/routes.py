"""HTTP routes: OpenAI's audio API, models, health."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, Reference, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from litestar.params import FromPath

from frontend.deadlines import unless_disconnected
from frontend.errors import APIError, bad_request, error_responses, model_not_found, overloaded, unauthorized
from frontend.forms import RESPONSE_FORMATS, AudioForm, parse_audio_form, read_multipart
from frontend.metrics import metrics_of
from frontend.net import FetchError, UnsafeUrlError, UrlPolicy, check_url
from frontend.responses import ClosingStream, render, stream_events
from frontend.schemas import Model, ModelList
from frontend.settings import FrontendSettings
from frontend.speaker_store import resolve_known
from frontend.tasks.model import Task, TaskError, TaskRequest, new_task
from frontend.tasks.runner import TaskRunner
from frontend.tasks.store import StoreError, TaskStore
from frontend.triton import TritonClient, last_event
from whisper_triton.contract import DoneEvent, Event, TranscriptionRequest
from whisper_triton.errors import ServiceError

log = logging.getLogger("frontend.routes")


class Admission:
    """Bounds the transcriptions in flight; beyond the bound requests get 503 + Retry-After."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    def try_acquire(self) -> bool:
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        return True

    def release(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)


@dataclass
class Services:
    settings: FrontendSettings
    triton: TritonClient
    admission: Admission
    store: TaskStore
    runner: TaskRunner
    url_policy: UrlPolicy
    started: int = field(default_factory=lambda: int(time.time()))

    async def check_url(self, url: str, param: str = "url") -> None:
        """400 for a URL we will not fetch (scheme, private address unless allowed, bad host)."""
        try:
            await check_url(url, self.url_policy)
        except (UnsafeUrlError, FetchError) as exc:
            raise bad_request(str(exc), param=param, code="invalid_url") from exc

    async def wait_for(self, task_id: str, poll_s: float = 0.25) -> Task:
        """Waits until a task ends (for synchronous task requests)."""
        while True:
            task = await self.store.get(task_id)
            if task is None:
                raise APIError(404, "The task was deleted while it ran.", code="task_not_found")
            if task.finished:
                return task
            await asyncio.sleep(poll_s)

    async def record_sync(self, form: AudioForm, done: DoneEvent | None, error: Exception | None) -> None:
        """Synchronous OpenAI requests are recorded as (finished) tasks too."""
        request = TaskRequest(model=form.model, task=form.task, language=form.language, prompt=form.prompt,
                              temperature=form.temperature, word_timestamps=form.word_timestamps,
                              dialect="openai", file_name=form.file.filename)
        task = new_task(request, "sync", status="completed" if error is None else "failed")
        task.completed_at = time.time()
        task.progress = 100.0 if error is None else 0.0
        task.result = done
        task.audio_duration = done.duration if done else None
        if error is not None:
            task.error = TaskError(getattr(error, "message", str(error)), getattr(error, "code", None))
        try:
            await self.store.create(task)
        except StoreError as exc:
            log.error("recording a synchronous request failed: %s", exc)


def services(connection: ASGIConnection[Any, Any, Any, Any]) -> Services:
    value: Services = connection.app.state.services
    return value


def require_api_key(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """`Authorization: Bearer <key>` with an API key or the admin key, or `x-admin-api-key`."""
    settings = services(connection).settings
    if not settings.auth_enabled:
        return
    keys = [*settings.api_keys, *([settings.admin_api_key] if settings.admin_api_key else [])]
    admin = connection.headers.get("x-admin-api-key", "").strip()
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    candidates = [c for c in (admin, token.strip() if scheme.lower() == "bearer" else "") if c]
    if not candidates:
        raise unauthorized("You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.")
    # Compare with every key, always, so the time taken does not reveal which one matched.
    matches = [hmac.compare_digest(c.encode(), key.encode()) for c in candidates for key in keys]
    if admin and not (settings.admin_api_key and hmac.compare_digest(admin.encode(), settings.admin_api_key.encode())):
        raise unauthorized("The x-admin-api-key header does not match the admin key.")
    if not any(matches):
        raise unauthorized()


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
    async def create_transcription(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """Transcribes audio into the input language (OpenAI-compatible)."""
        return await _transcribe(request, "transcribe")

    @post("/translations", operation_id="createTranslation", operation_class=_operation("translate"),
          responses=_ERRORS, status_code=200)
    async def create_translation(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """Translates audio into English text (OpenAI-compatible)."""
        return await _transcribe(request, "translate")


async def _transcribe(request: Request[Any, Any, Any], task: str) -> Response[Any]:
    svc = services(request)
    fields, files = await read_multipart(request, svc.settings.max_upload_bytes)
    form = parse_audio_form(fields, files, task)
    model = svc.settings.resolve_model(form.model)
    if model is None:
        raise model_not_found(form.model)
    call = _call(form, model, await resolve_known(svc.store, form))
    if not svc.admission.try_acquire():
        raise overloaded("The server is busy with other transcriptions; retry shortly.",
                         retry_after=svc.settings.retry_after_s)
    if form.stream and task == "transcribe":
        return _stream(svc, call, form)
    try:
        # A client that leaves stops its transcription (and frees its slot) instead of waiting for it.
        done = await unless_disconnected(request.receive, last_event(svc.triton.transcribe(form.file.data, call)))
    except (APIError, ServiceError) as exc:
        await svc.record_sync(form, None, exc)
        raise
    finally:
        svc.admission.release()
    await svc.record_sync(form, done, None)
    if (metrics := metrics_of(request.app)) is not None:
        metrics.observe_audio(done.duration, form.task)
    return render(done, form)


def _call(form: AudioForm, model: str, stored_voices: tuple[tuple[float, ...], ...] = ()) -> TranscriptionRequest:
    return TranscriptionRequest(
        model=model,
        task=form.task,
        language=form.language,
        prompt=form.prompt,
        temperature=form.temperature,
        word_timestamps=form.word_timestamps,
        stream=form.stream,
        diarize=form.diarize,
        num_speakers=form.num_speakers,
        min_speakers=form.min_speakers,
        max_speakers=form.max_speakers,
        known_speaker_names=form.known_speaker_names,
        known_speaker_references=form.known_speaker_references,
        known_speaker_embeddings=stored_voices,
    )


def _stream(svc: Services, call: TranscriptionRequest, form: AudioForm) -> ClosingStream:
    async def recorded() -> AsyncGenerator[Event, None]:
        done: DoneEvent | None = None
        try:
            async with contextlib.aclosing(svc.triton.transcribe(form.file.data, call)) as events:
                async for event in events:
                    done = event if isinstance(event, DoneEvent) else done
                    yield event
        except (APIError, ServiceError) as exc:
            await svc.record_sync(form, None, exc)
            raise
        await svc.record_sync(form, done, None)

    # The slot is released when the response ends, however it ends (see ClosingStream).
    return ClosingStream(
        stream_events(recorded(), diarized=form.response_format == "diarized_json"),
        on_close=svc.admission.release,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


class ModelsController(Controller):
    path = "/v1/models"
    guards = [require_api_key]  # noqa: RUF012
    tags = ["models"]  # noqa: RUF012

    @get("/", operation_id="listModels")
    async def list_models(self, request: Request[Any, Any, Any]) -> ModelList:
        """Every model the Triton repository serves (the default first), then the default's aliases."""
        svc = services(request)
        ids = [*await svc.triton.served_models(), *svc.settings.model_aliases]
        return ModelList(data=[Model(id=i, created=svc.started, owned_by="whisper-triton") for i in ids])

    @get("/{model_id:str}", operation_id="retrieveModel", responses={404: _ERRORS[404]})
    async def retrieve_model(self, request: Request[Any, Any, Any], model_id: FromPath[str]) -> Model:
        svc = services(request)
        if svc.settings.resolve_model(model_id) is None:
            raise model_not_found(model_id)
        return Model(id=model_id, created=svc.started, owned_by="whisper-triton")


class HealthController(Controller):
    path = "/health"
    tags = ["health"]  # noqa: RUF012

    @get("/", operation_id="health")
    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/live", operation_id="healthLive")
    async def live(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/ready", operation_id="healthReady", responses={503: _ERRORS[503]})
    async def ready(self, request: Request[Any, Any, Any]) -> Response[dict[str, str]]:
        """Triton and its models ready, database reachable."""
        svc = services(request)
        if not await svc.triton.is_ready():
            raise overloaded("Triton or the Whisper models are not ready.")
        if not await svc.store.ping():
            raise overloaded("The task database is not reachable.")
        return Response({"status": "ready"})
