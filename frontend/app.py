"""The Litestar application: `create_app(settings)`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin

from frontend.errors import EXCEPTION_HANDLERS
from frontend.routes import Admission, AudioController, HealthController, ModelsController, Services
from frontend.settings import FrontendSettings
from frontend.triton import TritonClient

log = logging.getLogger("frontend")
MULTIPART_OVERHEAD = 1024 * 1024  # form fields and boundaries around the file


def create_app(settings: FrontendSettings) -> Litestar:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        triton = TritonClient(settings.triton_url)
        app.state.services = Services(settings, triton, Admission(settings.max_concurrent_requests))
        if not settings.api_keys:
            log.warning("no FRONTEND_API_KEYS set: the API is open to anyone who can reach %s:%d",
                        settings.host, settings.port)
        try:
            yield
        finally:
            await triton.close()

    return Litestar(
        route_handlers=[AudioController, ModelsController, HealthController],
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
