"""The Litestar application: `create_app(settings)`, the composition root.

Its lifespan builds the services (the Triton client, the database and its stores, the transcription use
case, the task queue and runner) and closes them; handlers receive them by Litestar's dependency injection,
by parameter name (`settings`, `transcriptions`, `triton`, `speakers`, `queue`, `database`, `started`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from litestar import Litestar, MediaType, Request, Router, get
from litestar.config.cors import CORSConfig
from litestar.datastructures import CacheControlHeader, State
from litestar.di import Provide
from litestar.exceptions import InternalServerException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.response import File
from litestar.static_files import create_static_files_router
from litestar.status_codes import HTTP_404_NOT_FOUND

from frontend.database import Database, open_database
from frontend.dialects import webhook_payload
from frontend.dialects.ifw import InsanelyFastWhisperController
from frontend.dialects.whisperx import WhisperXController
from frontend.errors import EXCEPTION_HANDLERS, APIError, error_responses, not_found
from frontend.guards import provide_principal, require_api_key
from frontend.health import HealthController
from frontend.keys import Principal
from frontend.limits import KeyLimiter
from frontend.log_routes import LogsController
from frontend.logs import RequestContext, send_request_id
from frontend.metrics import FrontendMetrics, MetricsPlugin
from frontend.net import UrlPolicy
from frontend.openai.audio import AudioController
from frontend.openai.chat import ChatController
from frontend.openai.models import ModelsController
from frontend.ratelimit_headers import RateLimitHeaders
from frontend.realtime.socket import ClientSecrets, RealtimeSecretsController, realtime
from frontend.settings import FrontendSettings
from frontend.speakers.api import SpeakersController
from frontend.speakers.store import SpeakerStore
from frontend.tasks.notifications import webhook_notifier, webhook_secret
from frontend.tasks.queue import TaskQueue
from frontend.tasks.runner import RunnerSettings, TaskRunner, url_fetcher
from frontend.tasks.store import TaskStore
from frontend.transcription import Admission, Transcriptions
from frontend.triton import TritonClient
from whisper_triton.log_files import LogFileSettings

log = logging.getLogger("frontend")
STATIC_DIR = Path(__file__).resolve().parent / "static"


@get("/", include_in_schema=False, media_type=MediaType.HTML, cache_control=CacheControlHeader(no_cache=True))
async def web_page() -> File:
    """The web page: upload or record audio, follow tasks, download results."""
    return File(STATIC_DIR / "index.html", filename="index.html", content_disposition_type="inline",
                media_type=MediaType.HTML)


# A NUL byte or an over-long name makes the file lookup fail (Litestar turns the OSError into a 500)
# instead of missing: still a 404.
static_files = create_static_files_router(
    path="/static", directories=[STATIC_DIR], include_in_schema=False, cache_control=CacheControlHeader(no_cache=True),
    exception_handlers={ValueError: not_found, OSError: not_found, InternalServerException: not_found},
)
MULTIPART_OVERHEAD = 1024 * 1024  # form fields and boundaries around the file
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


async def refuse_control_characters(request: Request[Any, Any, Any]) -> None:
    """No route, task id or file name holds a control character: 404 before any lookup (PostgreSQL
    fails on a NUL in a query parameter, the file system on a NUL in a name)."""
    if _CONTROL.search(request.url.path):
        raise APIError(HTTP_404_NOT_FOUND, "Not Found", code="not_found")


async def _unload_idle_models(triton: TritonClient) -> None:
    if triton.unload_after_s <= 0:
        return
    while True:
        await asyncio.sleep(min(30.0, max(1.0, triton.unload_after_s / 4)))
        await triton.unload_idle()


@dataclass
class Services:
    """What the handlers work with, built once per app by its lifespan."""

    triton: TritonClient
    database: Database
    transcriptions: Transcriptions
    speakers: SpeakerStore
    queue: TaskQueue
    started: int = field(default_factory=lambda: int(time.time()))

    @property
    def admission(self) -> Admission:
        return self.transcriptions.admission


def _provider(name: str) -> Provide:
    def provide(state: State) -> Any:
        return getattr(state.services, name)

    return Provide(provide, sync_to_thread=False)


def _dependencies(settings: FrontendSettings) -> dict[str, Provide]:
    def provide_settings() -> FrontendSettings:
        return settings

    names = ("triton", "database", "transcriptions", "speakers", "queue", "started")
    return {"settings": Provide(provide_settings, sync_to_thread=False),
            "principal": Provide(_principal, sync_to_thread=False), **{n: _provider(n) for n in names}}


def _principal(request: Request[Any, Any, Any]) -> Principal:
    """The `principal` dependency (Litestar hands a provider the connection as `request`, not `connection`)."""
    return provide_principal(request)


def create_app(settings: FrontendSettings, log_files: LogFileSettings | None = None) -> Litestar:
    """The app; `log_files`: where the log files are (LOG_DIR), for GET /v1/logs (None: not kept in files)."""
    data_dir = Path(settings.data_dir).expanduser()
    metrics = FrontendMetrics()
    keys = settings.key_ring()
    limiter = KeyLimiter(settings.default_key_limits, settings.key_limits_table(keys),
                         on_refused=metrics.observe_rate_limited)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        triton = TritonClient(settings.triton_url, settings.model_ids, settings.unload_model_after_s)
        database = await open_database(settings.db_url, data_dir)
        tasks = TaskStore(database)
        policy = UrlPolicy(allow_private=settings.allow_private_urls, max_bytes=settings.max_upload_bytes,
                           timeout_s=settings.url_timeout_s)
        admission = Admission(settings.max_concurrent_requests, settings.fair_slots, settings.fair_wait_s)
        transcriptions = Transcriptions(triton, admission, tasks, observe=metrics.observe_audio, limiter=limiter,
                                        name_of=keys.name_of)
        runner = TaskRunner(
            tasks,
            transcriptions,
            RunnerSettings(workers=settings.task_workers, lease_s=settings.task_lease_s,
                           max_attempts=settings.task_max_attempts,
                           results_ttl_s=settings.delete_results_after_m * 60),
            fetch=url_fetcher(policy),
            notify=webhook_notifier(tasks, webhook_payload, webhook_secret(settings.webhook_secret, data_dir),
                                    policy, settings.webhook_attempts),
            on_queue_depth=metrics.set_queue_depth,
        )
        app.state.services = Services(triton, database, transcriptions, SpeakerStore(database),
                                      TaskQueue(tasks, runner, settings, policy))
        if not settings.auth_enabled:
            log.warning("no FRONTEND_API_KEYS or ADMIN_API_KEY set: the API is open to anyone who can reach %s:%d",
                        settings.host, settings.port)
        runner.start()
        unloader = asyncio.create_task(_unload_idle_models(triton))
        try:
            yield
        finally:
            unloader.cancel()
            await asyncio.gather(unloader, return_exceptions=True)
            await runner.stop()
            await database.close()
            await triton.close()

    app = Litestar(
        route_handlers=[AudioController, ModelsController, HealthController, WhisperXController,
                        InsanelyFastWhisperController, ChatController, SpeakersController, RealtimeSecretsController,
                        LogsController, realtime, web_page, static_files],
        dependencies=_dependencies(settings),
        state=State({"settings": settings, "key_ring": keys, "realtime_secrets": ClientSecrets(),
                     "log_files": log_files}),
        plugins=[MetricsPlugin(metrics)],
        logging_config=None,  # frontend.logs configures logging; Litestar's default would replace its handler
        middleware=[RequestContext(), RateLimitHeaders(limiter)],
        before_send=[send_request_id],
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        before_request=refuse_control_characters,
        request_max_body_size=settings.max_upload_bytes + MULTIPART_OVERHEAD,
        openapi_config=_openapi_config(settings),
        cors_config=_cors_config(settings),
    )
    _document_errors(app)
    return app


def _document_errors(app: Litestar) -> None:
    """Documents OpenAI's error body on every operation, for each status it can answer with.

    One place, like the one exception handler: 400 wherever there is input, 401 behind the API keys,
    404 with path parameters, 413 and 503 where a body is posted. Statuses a handler documents
    itself keep their description; Litestar's own 400 schema (not OpenAI's shape) is replaced.
    """
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            if not isinstance(handler, HTTPRouteHandler) or not handler.resolve_include_in_schema():
                continue
            methods = handler.http_methods - {"OPTIONS", "HEAD", "GET"}
            errors: dict[int, str] = {}
            if methods or "{" in route.path:
                errors[400] = "Bad or missing parameters"
            if any(require_api_key in (layer.guards or ()) for layer in handler.ownership_layers):
                errors[401] = "Missing or wrong API key"
            if "{" in route.path:
                errors[404] = "No such resource"
            if methods & {"POST", "PUT", "PATCH"}:
                errors |= {413: "Request body larger than the limit",
                           503: "Overloaded, queue full or inference server unavailable (see Retry-After)"}
            handler.responses = {**error_responses(errors), **(handler.responses or {})}


def _openapi_config(settings: FrontendSettings) -> OpenAPIConfig | None:
    """Swagger UI and the OpenAPI document at /docs: open (default), behind the API keys, or off."""
    if settings.docs == "off":
        return None
    guards = [require_api_key] if settings.docs == "auth" else []
    return OpenAPIConfig(
        title="Whisper on Triton",
        version="0.1.0",
        description="OpenAI-compatible speech-to-text served by NVIDIA Triton Inference Server.",
        render_plugins=[SwaggerRenderPlugin()],
        openapi_router=Router("/docs", route_handlers=[], include_in_schema=False, guards=guards),
    )


def _cors_config(settings: FrontendSettings) -> CORSConfig | None:
    """No CORS headers unless origins are listed: browsers then keep other sites' pages off the API."""
    if not settings.cors_origins:
        return None
    return CORSConfig(allow_origins=list(settings.cors_origins), allow_methods=["*"], allow_headers=["*"],
                      allow_credentials=False, expose_headers=["Retry-After", "x-should-retry", "x-request-id"])
