"""The frontend's only way to Triton: gRPC streaming calls to the entry model."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from frontend.errors import APIError, overloaded
from whisper_triton import contract
from whisper_triton.errors import ServiceError, from_wire

log = logging.getLogger("frontend.triton")


@dataclass(frozen=True)
class TranscriptionCall:
    audio: bytes
    task: str = "transcribe"
    language: str | None = None
    prompt: str | None = None
    temperature: float = 0.0
    word_timestamps: bool = False
    stream: bool = False


def _bytes_input(name: str, value: bytes) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [1], "BYTES")
    # dtype=object keeps trailing zero bytes (numpy's bytes_ type would strip them).
    tensor.set_data_from_numpy(np.array([value], dtype=object))
    return tensor


def _inputs(call: TranscriptionCall) -> list[grpcclient.InferInput]:
    inputs = [_bytes_input(contract.AUDIO, call.audio), _bytes_input(contract.TASK, call.task.encode())]
    if call.language:
        inputs.append(_bytes_input(contract.LANGUAGE, call.language.encode()))
    if call.prompt:
        inputs.append(_bytes_input(contract.PROMPT, call.prompt.encode()))
    temperature = grpcclient.InferInput(contract.TEMPERATURE, [1], "FP32")
    temperature.set_data_from_numpy(np.array([call.temperature], dtype=np.float32))
    inputs.append(temperature)
    for name, flag in ((contract.WORD_TIMESTAMPS, call.word_timestamps), (contract.STREAM, call.stream)):
        tensor = grpcclient.InferInput(name, [1], "BOOL")
        tensor.set_data_from_numpy(np.array([flag], dtype=bool))
        inputs.append(tensor)
    return inputs


class TritonClient:
    def __init__(self, url: str) -> None:
        self.url = url
        self._client = grpcclient.InferenceServerClient(url)

    async def close(self) -> None:
        await self._client.close()

    async def is_ready(self) -> bool:
        try:
            return bool(await self._client.is_server_ready()) and bool(
                await self._client.is_model_ready(contract.ENTRY_MODEL)
            )
        except (InferenceServerException, grpc.RpcError):
            return False

    async def transcribe(self, call: TranscriptionCall) -> AsyncIterator[dict[str, Any]]:
        """Yields the entry model's events; the last one has type `done`."""

        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield {"model_name": contract.ENTRY_MODEL, "inputs": _inputs(call)}

        responses = self._client.stream_infer(requests())
        try:
            async for result, error in responses:
                if error is not None:
                    raise _api_error(str(error.message() or error))
                event = contract.decode_event(result.as_numpy(contract.EVENT).reshape(-1)[0])
                yield event
                if event.get("type") == "done":
                    return
            raise overloaded("The inference server closed the stream early; retry the request.")
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None
            log.warning("Triton call failed: %s", code)
            raise overloaded("The inference server is unavailable; retry shortly.") from exc
        except InferenceServerException as exc:
            raise _api_error(str(exc.message() or exc)) from exc
        finally:
            responses.cancel()


def _api_error(message: str) -> APIError | ServiceError:
    error = from_wire(message)
    if error.code != "internal_error" or "[internal_error]" in message:
        return error
    lowered = message.lower()
    if "unavailable" in lowered or "not ready" in lowered or "failed to connect" in lowered:
        return overloaded("The inference server is unavailable; retry shortly.")
    log.error("Triton error: %s", message)
    return ServiceError(message)
