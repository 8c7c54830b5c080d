"""OpenAI's models API: the served Whisper models and their aliases; for the admin, model management: what could
be served (`?all=true`), fetch, load, unload, delete (through Triton's `whisper_models`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec
from litestar import Controller, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Operation, Schema
from litestar.params import FromPath, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED

from frontend.errors import error_responses
from frontend.guards import require_admin, require_admin_key, require_api_key
from frontend.keys import Principal
from frontend.model_admin import ModelAdmin
from frontend.openai.schemas import Model, ModelList
from frontend.settings import FrontendSettings
from frontend.transcription import Transcriptions
from whisper_triton.catalogue import check_id
from whisper_triton.models_contract import ModelRecord, Source, State

OWNER = "whisper-triton"
_ADMIN_ERRORS = error_responses({400: "Malformed model id", 401: "Missing or wrong API key",
                                 403: "Not the admin key", 404: "Unknown model",
                                 409: "The default or a configured model, a loaded model deleted, a fetch under way",
                                 503: "Inference server unavailable"})


class ManagedModel(msgspec.Struct, frozen=True):
    """OpenAI's `Model` with where it stands on this server."""

    id: str
    created: int
    owned_by: str
    state: State
    source: Source
    default: bool
    configured: bool
    error: str | None
    bytes: int
    updated: float | None
    object: Literal["model"] = "model"

    @classmethod
    def of(cls, record: ModelRecord, created: int) -> ManagedModel:
        return cls(id=record.id, created=created, owned_by=OWNER, state=record.state, source=record.source,
                   default=record.default, configured=record.configured, error=record.error, bytes=record.bytes,
                   updated=record.updated)


class ManagedModelList(msgspec.Struct, frozen=True):
    data: list[ManagedModel]
    object: Literal["list"] = "list"


class ModelDeleted(msgspec.Struct, frozen=True):
    id: str
    deleted: bool = True
    object: Literal["model"] = "model"


@dataclass
class _ListOperation(Operation):
    """A managed list is a valid `ModelList` too (with more fields): the answer is documented as `anyOf` them."""

    def __post_init__(self) -> None:
        for response in (self.responses or {}).values():
            for media in (getattr(response, "content", None) or {}).values():
                if isinstance(media.schema, Schema) and media.schema.one_of:
                    media.schema.any_of, media.schema.one_of = media.schema.one_of, None


def _model_path(raw: str) -> tuple[str, str]:
    """(model id, action) of `/v1/models/<id>[/load|/unload]`; ids may be `org/name`."""
    path = raw.removeprefix("/")  # Litestar hands a path parameter with its leading "/"
    for action in ("load", "unload"):
        if path.endswith(f"/{action}"):
            return check_id(path.removesuffix(f"/{action}")), action
    return check_id(path), "fetch"


class ModelsController(Controller):
    path = "/v1/models"
    guards = [require_api_key]  # noqa: RUF012
    tags = ["models"]  # noqa: RUF012

    @get("/", operation_id="listModels", responses=_ADMIN_ERRORS, operation_class=_ListOperation)
    async def list_models(self, settings: NamedDependency[FrontendSettings],
                          transcriptions: NamedDependency[Transcriptions], started: NamedDependency[int],
                          principal: NamedDependency[Principal],
                          all_models: Annotated[bool, QueryParameter(name="all")] = False
                          ) -> ModelList | ManagedModelList:
        """Every model the Triton repository serves (the default first, then fetched ones), then the default's
        aliases; with `all=true` (admin key): every model that could be served, with its state."""
        admin = ModelAdmin(transcriptions.triton.grpc)
        if all_models:
            require_admin(principal, "manage models")
            return ManagedModelList(data=[ManagedModel.of(r, started) for r in await admin.records()])
        served = await transcriptions.triton.served_models()
        ids = [*served, *[m for m in await admin.fetched() if m not in served], *settings.model_aliases]
        return ModelList(data=[Model(id=i, created=started, owned_by=OWNER) for i in ids])

    @get("/{model_id:path}", operation_id="retrieveModel", responses=error_responses({404: "Unknown model"}))
    async def retrieve_model(self, model_id: FromPath[str], settings: NamedDependency[FrontendSettings],
                             transcriptions: NamedDependency[Transcriptions], started: NamedDependency[int]) -> Model:
        model = model_id.removeprefix("/")
        await transcriptions.served_model(settings, model)
        return Model(id=model, created=started, owned_by=OWNER)

    @post("/{model_id:path}", operation_id="manageModel", status_code=HTTP_200_OK, guards=[require_admin_key],
          responses={**_ADMIN_ERRORS, 202: ResponseSpec(ManagedModel, description="A fetch under way: poll")})
    async def manage_model(self, model_id: FromPath[str], transcriptions: NamedDependency[Transcriptions],
                           started: NamedDependency[int]) -> Response[ManagedModel]:
        """`POST /v1/models/{id}` fetches a model (202 while it downloads or converts; poll `?all=true`);
        `.../load` and `.../unload` load and unload it (admin key)."""
        model, action = _model_path(model_id)
        record = await ModelAdmin(transcriptions.triton.grpc).act(action, model)
        status = HTTP_202_ACCEPTED if record.state in ("downloading", "converting") else HTTP_200_OK
        return Response(ManagedModel.of(record, started), status_code=status)

    @delete("/{model_id:path}", operation_id="deleteModel", responses=_ADMIN_ERRORS, status_code=HTTP_200_OK,
            guards=[require_admin_key])
    async def delete_model(self, model_id: FromPath[str], transcriptions: NamedDependency[Transcriptions]
                           ) -> ModelDeleted:
        """Removes a fetched model that is not loaded from the model cache (admin key)."""
        model = check_id(model_id.removeprefix("/"))
        await ModelAdmin(transcriptions.triton.grpc).delete(model)
        return ModelDeleted(id=model)

