"""Model management through Triton's `whisper_models` model (where the weights are: the frontend may run on
another host, without CTranslate2): list, fetch, load, unload, delete. Domain errors only."""

from __future__ import annotations

import grpc
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from frontend.triton import infer_inputs
from whisper_triton import models_contract as mc
from whisper_triton.errors import ServiceError, UnavailableError, from_wire, is_unavailable
from whisper_triton.models_contract import ModelRecord


class ModelAdmin:
    def __init__(self, client: grpcclient.InferenceServerClient) -> None:
        self._client = client

    async def _call(self, action: str, model: str = "") -> bytes:
        try:
            result = await self._client.infer(mc.MODELS_MODEL, infer_inputs(mc.request_arrays(action, model)),
                                              outputs=[grpcclient.InferRequestedOutput(mc.RESULT)])
        except grpc.RpcError as exc:
            raise UnavailableError("The inference server is unavailable; retry shortly.") from exc
        except InferenceServerException as exc:
            message = str(exc.message() or exc)
            error = from_wire(message)
            if error.code == ServiceError.code and "[internal_error]" not in message and is_unavailable(message):
                raise UnavailableError("The model manager of the inference server is not ready; retry shortly.") \
                    from exc
            raise error from exc
        return bytes(result.as_numpy(mc.RESULT).reshape(-1)[0])

    async def records(self) -> list[ModelRecord]:
        return mc.decode_records(await self._call("list"))

    async def act(self, action: str, model: str) -> ModelRecord:
        """`get`, `fetch`, `load` or `unload`: the model's record after it."""
        return mc.decode_record(await self._call(action, model))

    async def delete(self, model: str) -> None:
        await self._call("delete", model)

    async def fetched(self) -> list[str]:
        """The fetched models that can be transcribed with (none while the model manager cannot answer)."""
        try:
            records = await self.records()
        except ServiceError:
            return []
        return [r.id for r in records if not r.configured and r.state in ("available", "loaded")]

    async def is_served(self, model: str) -> bool:
        """Whether `model` was fetched and can be transcribed with (loaded on demand)."""
        try:
            return (await self.act("get", model)).state in ("available", "loaded")
        except ServiceError:
            return False
