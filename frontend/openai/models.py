"""OpenAI's models API: the served Whisper models and their aliases."""

from __future__ import annotations

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath

from frontend.errors import error_responses
from frontend.guards import require_api_key
from frontend.openai.schemas import Model, ModelList
from frontend.settings import FrontendSettings
from frontend.transcription import Transcriptions, served_model

OWNER = "whisper-triton"


class ModelsController(Controller):
    path = "/v1/models"
    guards = [require_api_key]  # noqa: RUF012
    tags = ["models"]  # noqa: RUF012

    @get("/", operation_id="listModels")
    async def list_models(self, settings: NamedDependency[FrontendSettings],
                          transcriptions: NamedDependency[Transcriptions], started: NamedDependency[int]) -> ModelList:
        """Every model the Triton repository serves (the default first), then the default's aliases."""
        ids = [*await transcriptions.triton.served_models(), *settings.model_aliases]
        return ModelList(data=[Model(id=i, created=started, owned_by=OWNER) for i in ids])

    @get("/{model_id:str}", operation_id="retrieveModel", responses=error_responses({404: "Unknown model"}))
    async def retrieve_model(self, model_id: FromPath[str], settings: NamedDependency[FrontendSettings],
                             started: NamedDependency[int]) -> Model:
        served_model(settings, model_id)
        return Model(id=model_id, created=started, owned_by=OWNER)
