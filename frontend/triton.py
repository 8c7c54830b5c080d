"""The frontend's only way to Triton: gRPC streaming calls to the entry model.

Failures come out as domain errors (`whisper_triton.errors`): the entry model's own, rebuilt from their wire
form; `UnavailableError` where Triton or a model cannot answer for now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from frontend.logs import current_request_id
from whisper_triton import contract
from whisper_triton.contract import DoneEvent, Event, TranscriptionRequest
from whisper_triton.errors import InvalidRequestError, ServiceError, UnavailableError, from_wire, is_unavailable
from whisper_triton.repository import engine_model_name

log = logging.getLogger("frontend.triton")


def infer_inputs(arrays: dict[str, np.ndarray]) -> list[grpcclient.InferInput]:
    """A model's input tensors, named arrays as the contract modules build them."""
    inputs = []
    for name, array in arrays.items():
        tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def _inputs(audio: bytes, request: TranscriptionRequest) -> list[grpcclient.InferInput]:
    return infer_inputs(contract.request_arrays(audio, request))


class TritonClient:
    """Transcriptions through the entry model; engines loaded on demand and unloaded when idle."""

    def __init__(self, url: str, models: list[str] | None = None, unload_after_s: float = 0.0) -> None:
        self.url = url
        self.models = models or []
        self.unload_after_s = unload_after_s
        self._client = grpcclient.InferenceServerClient(url)
        self._locks: dict[str, asyncio.Lock] = {}
        self._in_flight: dict[str, int] = {}
        self._last_used: dict[str, float] = {}

    async def close(self) -> None:
        await self._client.close()

    @property
    def grpc(self) -> grpcclient.InferenceServerClient:
        """The gRPC client itself (the Realtime API streams to the live model through it)."""
        return self._client

    async def served_models(self) -> list[str]:
        """The configured models the Triton repository has (loaded or loadable)."""
        try:
            index = await self._client.get_model_repository_index(as_json=True)
        except (InferenceServerException, grpc.RpcError):
            return list(self.models)
        names = {entry["name"] for entry in index.get("models", [])}
        return [m for m in self.models if engine_model_name(m) in names]

    async def _ensure_diarization(self) -> None:
        """The diarization model is loaded on first use (it is large: pyannote.audio + torch)."""
        try:
            if await self._client.is_model_ready(contract.DIARIZATION_MODEL):
                return
            index = await self._client.get_model_repository_index(as_json=True)
            if contract.DIARIZATION_MODEL not in {m["name"] for m in index.get("models", [])}:
                raise InvalidRequestError("Speaker diarization is not enabled on this server "
                                          "(WHISPER_DIARIZATION=off).", param="diarize", code="unsupported_value")
            async with self._locks.setdefault(contract.DIARIZATION_MODEL, asyncio.Lock()):
                if not await self._client.is_model_ready(contract.DIARIZATION_MODEL):
                    log.info("loading the diarization model")
                    await self._client.load_model(contract.DIARIZATION_MODEL)
        except (InferenceServerException, grpc.RpcError) as exc:
            log.error("loading the diarization model failed: %s", exc)
            raise UnavailableError("The diarization model could not be loaded; retry shortly.") from exc

    async def _ensure_loaded(self, model: str) -> None:
        engine = engine_model_name(model)
        try:
            if await self._client.is_model_ready(engine):
                return
            async with self._locks.setdefault(model, asyncio.Lock()):
                if not await self._client.is_model_ready(engine):
                    log.info("loading model %s", model)
                    await self._client.load_model(engine)
        except (InferenceServerException, grpc.RpcError) as exc:
            log.error("loading model %s failed: %s", model, exc)
            raise UnavailableError(f"The model '{model}' could not be loaded; retry shortly.") from exc

    async def unload_idle(self) -> list[str]:
        """Unloads engines unused for `unload_after_s` (0: never); returns the unloaded models."""
        if self.unload_after_s <= 0:
            return []
        now, unloaded = time.monotonic(), []
        for model, last in list(self._last_used.items()):
            if self._in_flight.get(model, 0) == 0 and now - last >= self.unload_after_s:
                try:
                    if await self._client.is_model_ready(engine_model_name(model)):
                        await self._client.unload_model(engine_model_name(model))
                        log.info("unloaded idle model %s", model)
                        unloaded.append(model)
                except (InferenceServerException, grpc.RpcError) as exc:
                    log.warning("unloading model %s failed: %s", model, exc)
                self._last_used.pop(model, None)
        return unloaded

    async def is_ready(self) -> bool:
        try:
            return bool(await self._client.is_server_ready()) and bool(
                await self._client.is_model_ready(contract.ENTRY_MODEL)
            )
        except (InferenceServerException, grpc.RpcError):
            return False

    async def transcribe(self, audio: bytes, request: TranscriptionRequest) -> AsyncGenerator[Event, None]:
        """Yields the entry model's events; the last one is `done`."""
        # The Whisper engine the request runs on, loaded first (VAD and speaker work neither wait for it nor keep
        # it from being unloaded when idle).
        model = request.model or (self.models[0] if self.models else None)
        engine = model if request.needs_engine else None
        if engine is not None:
            self._in_flight[engine] = self._in_flight.get(engine, 0) + 1
        try:
            if engine is not None:
                await self._ensure_loaded(engine)
            if request.needs_diarization:
                await self._ensure_diarization()
            # Closed at once when the caller stops (client gone): that cancels the gRPC stream.
            async with contextlib.aclosing(self._stream(audio, request)) as events:
                async for event in events:
                    yield event
        finally:
            if engine is not None:
                self._in_flight[engine] -= 1
                self._last_used[engine] = time.monotonic()

    async def embed(self, audio: bytes) -> DoneEvent:
        """The speaker embedding of a clip of one voice: `embedding`, `embedding_model` and `duration`."""
        return await last_event(self.transcribe(audio, TranscriptionRequest(task="embed")))

    async def _stream(self, audio: bytes, request: TranscriptionRequest) -> AsyncGenerator[Event, None]:
        async def requests() -> AsyncIterator[dict[str, Any]]:
            # Triton's request id: the models tag their log lines with it (GET /v1/logs?request_id=...).
            yield {"model_name": contract.ENTRY_MODEL, "inputs": _inputs(audio, request),
                   "request_id": current_request_id() or ""}

        responses = self._client.stream_infer(requests())
        try:
            async for result, error in responses:
                if error is not None:  # an error is the last response
                    await _end_of_stream(responses)
                    raise _error(str(error.message() or error))
                event = contract.decode_event(result.as_numpy(contract.EVENT).reshape(-1)[0])
                if isinstance(event, DoneEvent):
                    await _end_of_stream(responses)
                    yield event
                    return
                yield event
            raise UnavailableError("The inference server closed the stream early; retry the request.")
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None
            log.warning("Triton call failed: %s", code)
            raise UnavailableError("The inference server is unavailable; retry shortly.") from exc
        except InferenceServerException as exc:
            raise _error(str(exc.message() or exc)) from exc
        finally:
            responses.cancel()


async def last_event(events: AsyncGenerator[Event, None]) -> DoneEvent:
    """The `done` event of a transcription (the call is closed however it ends)."""
    done: Event | None = None
    async with contextlib.aclosing(events):
        async for event in events:
            done = event
    if not isinstance(done, DoneEvent):
        raise UnavailableError("The inference server closed the stream early; retry the request.")
    return done


async def _end_of_stream(responses: Any, timeout_s: float = 5.0) -> None:
    """Lets Triton end the stream after its last response (our side of it is already closed).

    Cancelling it there instead races Triton's own completion of the stream: when the cancel comes
    second, Triton 2.51 keeps the stream's state, which holds the entry model, until it shuts down
    (and then waits 30 s for the model). Cancelling happens only if the end does not come.
    """
    with contextlib.suppress(TimeoutError, grpc.RpcError, InferenceServerException):
        async with asyncio.timeout(timeout_s):
            async for _ in responses:
                pass


def _error(message: str) -> ServiceError:
    """An error of the entry model's stream: ours as sent (`[code(param)] message`), Triton's own as retryable
    when Triton or a model cannot answer for now."""
    error = from_wire(message)
    if isinstance(error, UnavailableError):
        return UnavailableError("A model process of the inference server is restarting; retry shortly.")
    if error.code != "internal_error" or "[internal_error]" in message:
        return error
    if is_unavailable(message):
        return UnavailableError("The inference server is unavailable; retry shortly.")
    log.error("Triton error: %s", message)
    return ServiceError(message)
