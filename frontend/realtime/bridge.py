"""One gRPC stream to the live model `whisper_live` for one Realtime session (see
whisper_triton/live_contract.py for the model's contract)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import msgspec
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from frontend.triton import infer_inputs
from whisper_triton import contract
from whisper_triton.errors import UnavailableError
from whisper_triton.live_contract import AckEvent, LiveControl, LiveEvent, decode_event, request_arrays

MAX_PENDING = 64  # requests sent and not finished before the socket is read again (backpressure)


@dataclass(frozen=True)
class Answer:
    """An event of the live model for one of our requests (`event` None: the request is done, its `ack`)."""

    request: str
    event: LiveEvent | None
    final: bool


class LiveBridge:
    def __init__(self, client: grpcclient.InferenceServerClient, session: str, request_id: str | None = None) -> None:
        self.session = session
        # Triton's request ids: `<request_id>/<seq>`, so that the live model's (and, through it, the entry model's)
        # log lines name the socket's x-request-id
        self._prefix = f"{request_id}/" if request_id else ""
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._seq = itertools.count()
        self._pending: set[str] = set()
        self._finished: dict[str, asyncio.Event] = {}  # requests someone waits for
        self._room = asyncio.Event()
        self._room.set()
        self._responses = client.stream_infer(self._requests())

    async def _requests(self) -> AsyncIterator[dict[str, Any]]:
        while (request := await self._queue.get()) is not None:
            yield request

    async def send(self, audio: bytes | None = None, control: LiveControl | None = None) -> str:
        """Sends the session's next request (waiting while MAX_PENDING are unfinished); its id."""
        await self._room.wait()
        seq = next(self._seq)
        inputs = infer_inputs(request_arrays(self.session, seq, audio, control))
        request_id = f"{self._prefix}{seq}"
        self._pending.add(request_id)
        if len(self._pending) >= MAX_PENDING:
            self._room.clear()
        await self._queue.put({"model_name": contract.LIVE_MODEL, "inputs": inputs, "request_id": request_id})
        return request_id

    async def answers(self) -> AsyncIterator[Answer]:
        """The live model's events for our requests, as they come; UnavailableError if Triton goes away."""
        try:
            async for result, error in self._responses:
                if error is not None:
                    raise UnavailableError("The live transcription model failed; start a new session.")
                response = result.get_response()
                event: LiveEvent | None = None
                if response.outputs:
                    raw = result.as_numpy(contract.EVENT).reshape(-1)[0]
                    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                        event = decode_event(bytes(raw))
                final = isinstance(event, AckEvent)
                if final:
                    event = None
                if final:
                    self._pending.discard(response.id)
                    if response.id in self._finished:
                        self._finished[response.id].set()
                    if len(self._pending) < MAX_PENDING:
                        self._room.set()
                yield Answer(response.id, event, final)
        except (grpc.RpcError, InferenceServerException) as exc:
            raise UnavailableError("The inference server is unavailable; start a new session.") from exc

    async def finished(self, request_id: str, timeout_s: float) -> bool:
        """Waits (while `answers` is read) until the request's last response came; whether it did in time."""
        if request_id not in self._pending:
            return True
        event = self._finished.setdefault(request_id, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            return False
        finally:
            self._finished.pop(request_id, None)
        return True

    async def close(self) -> None:
        await self._queue.put(None)
        self._responses.cancel()

