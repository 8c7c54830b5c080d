"""The Litestar application: `create_app(settings)`."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from litestar import Litestar, MediaType, Request, Router, get
from litestar.config.cors import CORSConfig
from litestar.datastructures import CacheControlHeader
from litestar.exceptions import InternalServerException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.response import File
from litestar.static_files import create_static_files_router
from litestar.status_codes import HTTP_404_NOT_FOUND

from frontend.chat import ChatController
from frontend.errors import EXCEPTION_HANDLERS, APIError, error_responses, not_found
from frontend.metrics import FrontendMetrics, MetricsPlugin
from frontend.net import UrlPolicy
from frontend.routes import (
    Admission,
    AudioController,
    HealthController,
    ModelsController,
    Services,
    require_api_key,
)
from frontend.settings import FrontendSettings
from frontend.speakers import SpeakersController
from frontend.tasks.api import InsanelyFastWhisperController, WhisperXController
from frontend.tasks.glue import url_fetcher, webhook_notifier, webhook_secret
from frontend.tasks.runner import RunnerSettings, TaskRunner
from frontend.tasks.store import open_store
from frontend.triton import TritonClient

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


def create_app(settings: FrontendSettings) -> Litestar:
    data_dir = Path(settings.data_dir).expanduser()
    metrics = FrontendMetrics()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        triton = TritonClient(settings.triton_url, settings.model_ids, settings.unload_model_after_s)
        store = await open_store(settings.db_url, data_dir)
        policy = UrlPolicy(allow_private=settings.allow_private_urls, max_bytes=settings.max_upload_bytes,
                           timeout_s=settings.url_timeout_s)
        runner = TaskRunner(
            store,
            triton,
            RunnerSettings(workers=settings.task_workers, lease_s=settings.task_lease_s,
                           max_attempts=settings.task_max_attempts,
                           results_ttl_s=settings.delete_results_after_m * 60),
            fetch=url_fetcher(policy),
            notify=webhook_notifier(store, webhook_secret(settings.webhook_secret, data_dir), policy,
                                    settings.webhook_attempts),
            on_audio_seconds=metrics.observe_audio,
            on_queue_depth=metrics.set_queue_depth,
        )
        app.state.services = Services(settings, triton, Admission(settings.max_concurrent_requests), store,
                                      runner, policy)
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
            await store.close()
            await triton.close()

    app = Litestar(
        route_handlers=[AudioController, ModelsController, HealthController, WhisperXController,
                        InsanelyFastWhisperController, ChatController, SpeakersController, web_page, static_files],
        plugins=[MetricsPlugin(metrics)],
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
                      allow_credentials=False, expose_headers=["Retry-After", "x-should-retry"])
