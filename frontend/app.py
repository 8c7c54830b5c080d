"""The Litestar application: `create_app(settings)`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from litestar import Litestar, MediaType, get
from litestar.datastructures import CacheControlHeader
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.response import File
from litestar.static_files import create_static_files_router

from frontend.chat import ChatController
from frontend.errors import EXCEPTION_HANDLERS
from frontend.metrics import FrontendMetrics, MetricsPlugin
from frontend.net import UrlPolicy
from frontend.routes import Admission, AudioController, HealthController, ModelsController, Services
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


static_files = create_static_files_router(path="/static", directories=[STATIC_DIR], include_in_schema=False,
                                          cache_control=CacheControlHeader(no_cache=True))
MULTIPART_OVERHEAD = 1024 * 1024  # form fields and boundaries around the file


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

    return Litestar(
        route_handlers=[AudioController, ModelsController, HealthController, WhisperXController,
                        InsanelyFastWhisperController, ChatController, SpeakersController, web_page, static_files],
        plugins=[MetricsPlugin(metrics)],
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=settings.max_upload_bytes + MULTIPART_OVERHEAD,
        openapi_config=OpenAPIConfig(
            title="Whisper on Triton",
            version="0.1.0",
            description="OpenAI-compatible speech-to-text served by NVIDIA Triton Inference Server.",
            path="/docs",
            render_plugins=[SwaggerRenderPlugin()],
        ),
    )
