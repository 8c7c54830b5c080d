"""The frontend's only way to Triton: gRPC streaming calls to the entry model."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from frontend.errors import APIError, overloaded
from whisper_triton import contract
from whisper_triton.errors import ServiceError, UnavailableError, from_wire
from whisper_triton.repository import engine_model_name

log = logging.getLogger("frontend.triton")


@dataclass(frozen=True)
class TranscriptionCall:
    audio: bytes
    model: str | None = None  # a served model id; None: Triton's default (the first of WHISPER_MODELS)
    task: str = "transcribe"
    language: str | None = None
    prompt: str | None = None
    temperature: float = 0.0
    word_timestamps: bool = False
    stream: bool = False
    transcript: bytes | None = None  # JSON segments: align this text instead of transcribing
    diarize: bool = False
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None
    # Known speakers: one name per reference clip, then one per embedding (stored voices).
    known_names: tuple[str, ...] = ()
    known_references: tuple[bytes, ...] = ()
    known_embeddings: tuple[tuple[float, ...], ...] = ()

    @property
    def needs_diarization(self) -> bool:
        return self.diarize or self.task in ("diarize", "embed")


def _bytes_input(name: str, value: bytes) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [1], "BYTES")
    # dtype=object keeps trailing zero bytes (numpy's bytes_ type would strip them).
    tensor.set_data_from_numpy(np.array([value], dtype=object))
    return tensor


def _inputs(call: TranscriptionCall) -> list[grpcclient.InferInput]:
    inputs = [_bytes_input(contract.AUDIO, call.audio), _bytes_input(contract.TASK, call.task.encode())]
    if call.model:
        inputs.append(_bytes_input(contract.MODEL, call.model.encode()))
    if call.language:
        inputs.append(_bytes_input(contract.LANGUAGE, call.language.encode()))
    if call.prompt:
        inputs.append(_bytes_input(contract.PROMPT, call.prompt.encode()))
    if call.transcript is not None:
        inputs.append(_bytes_input(contract.TRANSCRIPT, call.transcript))
    inputs += _known_inputs(call)
    if call.diarize or call.task == "diarize":
        flag = grpcclient.InferInput(contract.DIARIZE, [1], "BOOL")
        flag.set_data_from_numpy(np.array([True], dtype=bool))
        inputs.append(flag)
    for name, count in ((contract.NUM_SPEAKERS, call.num_speakers), (contract.MIN_SPEAKERS, call.min_speakers),
                        (contract.MAX_SPEAKERS, call.max_speakers)):
        if count:
            tensor = grpcclient.InferInput(name, [1], "INT32")
            tensor.set_data_from_numpy(np.array([count], dtype=np.int32))
            inputs.append(tensor)
    temperature = grpcclient.InferInput(contract.TEMPERATURE, [1], "FP32")
    temperature.set_data_from_numpy(np.array([call.temperature], dtype=np.float32))
    inputs.append(temperature)
    for name, flag in ((contract.WORD_TIMESTAMPS, call.word_timestamps), (contract.STREAM, call.stream)):
        tensor = grpcclient.InferInput(name, [1], "BOOL")
        tensor.set_data_from_numpy(np.array([flag], dtype=bool))
        inputs.append(tensor)
    return inputs


def _known_inputs(call: TranscriptionCall) -> list[grpcclient.InferInput]:
    inputs = []
    for name, values in ((contract.KNOWN_SPEAKER_NAMES, [n.encode() for n in call.known_names]),
                         (contract.KNOWN_SPEAKER_REFERENCES, list(call.known_references))):
        if values:
            tensor = grpcclient.InferInput(name, [len(values)], "BYTES")
            tensor.set_data_from_numpy(np.array(values, dtype=object))
            inputs.append(tensor)
    if call.known_embeddings:
        rows = np.array(call.known_embeddings, dtype=np.float32)
        tensor = grpcclient.InferInput(contract.KNOWN_SPEAKER_EMBEDDINGS, list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        inputs.append(tensor)
    return inputs


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
                raise APIError(400, "Speaker diarization is not enabled on this server (WHISPER_DIARIZATION=off).",
                               param="diarize", code="unsupported_value")
            async with self._locks.setdefault(contract.DIARIZATION_MODEL, asyncio.Lock()):
                if not await self._client.is_model_ready(contract.DIARIZATION_MODEL):
                    log.info("loading the diarization model")
                    await self._client.load_model(contract.DIARIZATION_MODEL)
        except (InferenceServerException, grpc.RpcError) as exc:
            log.error("loading the diarization model failed: %s", exc)
            raise overloaded("The diarization model could not be loaded; retry shortly.") from exc

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
            raise overloaded(f"The model '{model}' could not be loaded; retry shortly.") from exc

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

    async def transcribe(self, call: TranscriptionCall) -> AsyncGenerator[dict[str, Any], None]:
        """Yields the entry model's events; the last one has type `done`."""
        model = call.model or (self.models[0] if self.models else None)
        if model is None:
            async with contextlib.aclosing(self._stream(call)) as events:
                async for event in events:
                    yield event
            return
        self._in_flight[model] = self._in_flight.get(model, 0) + 1
        try:
            await self._ensure_loaded(model)
            if call.needs_diarization:
                await self._ensure_diarization()
            # Closed at once when the caller stops (client gone): that cancels the gRPC stream.
            async with contextlib.aclosing(self._stream(call)) as events:
                async for event in events:
                    yield event
        finally:
            self._in_flight[model] -= 1
            self._last_used[model] = time.monotonic()

    async def embed(self, audio: bytes) -> dict[str, Any]:
        """The speaker embedding of a clip of one voice: `{embedding, embedding_model, duration}`."""
        done: dict[str, Any] = {}
        async for event in self.transcribe(TranscriptionCall(audio=audio, task="embed")):
            done = event
        return done

    async def _stream(self, call: TranscriptionCall) -> AsyncGenerator[dict[str, Any], None]:
        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield {"model_name": contract.ENTRY_MODEL, "inputs": _inputs(call)}

        responses = self._client.stream_infer(requests())
        try:
            async for result, error in responses:
                if error is not None:  # an error is the last response
                    await _end_of_stream(responses)
                    raise _api_error(str(error.message() or error))
                event = contract.decode_event(result.as_numpy(contract.EVENT).reshape(-1)[0])
                if event.get("type") == "done":
                    await _end_of_stream(responses)
                    yield event
                    return
                yield event
            raise overloaded("The inference server closed the stream early; retry the request.")
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None
            log.warning("Triton call failed: %s", code)
            raise overloaded("The inference server is unavailable; retry shortly.") from exc
        except InferenceServerException as exc:
            raise _api_error(str(exc.message() or exc)) from exc
        finally:
            responses.cancel()


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


def _api_error(message: str) -> APIError | ServiceError:
    error = from_wire(message)
    if isinstance(error, UnavailableError):
        return overloaded("A model process of the inference server is restarting; retry shortly.")
    if error.code != "internal_error" or "[internal_error]" in message:
        return error
    lowered = message.lower()
    if "unavailable" in lowered or "not ready" in lowered or "failed to connect" in lowered:
        return overloaded("The inference server is unavailable; retry shortly.")
    log.error("Triton error: %s", message)
    return ServiceError(message)
