"""Liveness and readiness: `/health`, `/health/live`, `/health/ready`."""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.di import NamedDependency

from frontend.database import Database
from frontend.errors import error_responses, overloaded
from frontend.transcription import Transcriptions


class HealthController(Controller):
    path = "/health"
    tags = ["health"]  # noqa: RUF012

    @get("/", operation_id="health")
    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/live", operation_id="healthLive")
    async def live(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/ready", operation_id="healthReady",
         responses=error_responses({503: "Overloaded or inference server unavailable (see Retry-After)"}))
    async def ready(self, transcriptions: NamedDependency[Transcriptions],
                    database: NamedDependency[Database]) -> Response[dict[str, str]]:
        """Triton and its models ready, database reachable."""
        if not await transcriptions.triton.is_ready():
            raise overloaded("Triton or the Whisper models are not ready.")
        if not await database.ping():
            raise overloaded("The task database is not reachable.")
        return Response({"status": "ready"})
