"""Time limits on clients: an upload that trickles in, a response nobody reads, a client that left.

uvicorn (h11) limits neither how long a request body may take nor how long a write may wait for the
client to read. Without limits a client sending a few bytes per second holds a connection and up to
the upload limit in memory for ever, and one that never reads holds its connection, the response and,
for a stream, its admission slot and its work in Triton. `ClientDeadlines` wraps the ASGI app:

- the body must keep coming: each read waits at most `body_timeout_s`, and the whole body must
  arrive within `body_timeout_s` plus one second per `body_min_rate` bytes; past that the handler's
  read raises a 408 (OpenAI error shape) and the connection is closed after it;
- a response write that waits more than `send_timeout_s` for the client to read ends the exchange:
  the connection is aborted (its buffers freed) and the handler is stopped, which closes its stream
  and releases what it held. Large bodies are written in pieces, so that this applies to them too.

`unless_disconnected` stops work (a Triton call) whose client left before its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

import msgspec
from litestar.types import ASGIApp, HTTPResponseBodyEvent, Message, Receive, ReceiveMessage, Scope, Send

from frontend.errors import APIError
from whisper_triton.settings import SettingsError, load_settings

log = logging.getLogger("frontend.deadlines")
T = TypeVar("T")
PIECE = 64 * 1024  # largest write at once (asyncio's write buffer high-water mark)
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before its answer (logs and metrics only)


class DeadlineSettings(msgspec.Struct, frozen=True):
    """`FRONTEND_BODY_TIMEOUT_S`, `FRONTEND_BODY_MIN_RATE`, `FRONTEND_SEND_TIMEOUT_S`."""

    body_timeout_s: float = 30.0  # longest wait for the next piece of a request body
    body_min_rate: float = 1024.0  # bytes per second a body must average, after the first body_timeout_s
    send_timeout_s: float = 60.0  # longest wait for a client to take a piece of its response


DEADLINE_SETTINGS_HELP = {  # docs/configuration.md is generated from these: `python -m harness.docs`
    "body_timeout_s": "longest wait for the next piece of a request body (then 408)",
    "body_min_rate": "bytes/s a body must average after the first `FRONTEND_BODY_TIMEOUT_S`",
    "send_timeout_s": "longest wait for a client to take a 64 KiB piece of its response (then dropped)",
}


def deadline_settings(environ: Mapping[str, str] | None = None) -> DeadlineSettings:
    settings = load_settings(DeadlineSettings, "FRONTEND_", os.environ if environ is None else environ)
    for name in ("body_timeout_s", "body_min_rate", "send_timeout_s"):
        if getattr(settings, name) <= 0:
            raise SettingsError(f"Invalid value for FRONTEND_{name.upper()}: must be positive.")
    return settings


class BodyTimeoutError(APIError):
    def __init__(self, waited_s: float) -> None:
        super().__init__(408, f"The request body did not arrive in time (waited {waited_s:.0f} s); send it faster.",
                         code="request_timeout")


class ClientTooSlowError(APIError):
    """Raised into the handler when the client stopped reading its response (nobody sees the body)."""

    def __init__(self, waited_s: float) -> None:
        super().__init__(408, f"The client did not read the response for {waited_s:.0f} s.", code="send_timeout")


class ClientDisconnectedError(APIError):
    def __init__(self) -> None:
        super().__init__(CLIENT_CLOSED_REQUEST, "The client closed the connection before the answer.",
                         code="client_closed_request")


class ClientDeadlines:
    """ASGI middleware applying `DeadlineSettings` to every HTTP exchange."""

    def __init__(self, app: ASGIApp, settings: DeadlineSettings | None = None) -> None:
        self.app = app
        self.settings = settings or DeadlineSettings()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(self.settings, receive, send)
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except Exception:
            if not exchange.abandoned:
                raise
            log.warning("%s %r: the client stopped reading its response for %.0f s; connection closed",
                        scope.get("method"), scope.get("path"), self.settings.send_timeout_s)


class _Exchange:
    def __init__(self, settings: DeadlineSettings, receive: Receive, send: Send) -> None:
        self.settings = settings
        self._receive = receive
        self._send = send
        self.body_done = False
        self.body_timed_out = False
        self.abandoned = False
        self.started_at: float | None = None
        self.received = 0

    async def receive(self) -> ReceiveMessage:
        if self.body_done:
            return await self._receive()
        now = time.monotonic()
        if self.started_at is None:
            self.started_at = now
        deadline = self.started_at + self.settings.body_timeout_s + self.received / self.settings.body_min_rate
        wait = min(self.settings.body_timeout_s, deadline - now)
        try:
            async with asyncio.timeout(max(0.0, wait)):
                message = await self._receive()
        except TimeoutError:
            self.body_done = self.body_timed_out = True
            raise BodyTimeoutError(time.monotonic() - self.started_at) from None
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.body_done = not message.get("more_body", False)
        else:
            self.body_done = True
        return message

    async def send(self, message: Message) -> None:
        if self.abandoned:
            return  # the connection is gone: what the app still sends (an error response) goes nowhere
        if message["type"] == "http.response.start" and self.body_timed_out:
            # The rest of the body may still be coming: close the connection rather than read it.
            message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
        body = message.get("body", b"") if message["type"] == "http.response.body" else b""
        if len(body) > PIECE:
            # uvicorn waits for the client only between writes: a large body written at once would sit in
            # memory, unsent, for as long as the client does not read. Piece by piece, the wait is bounded.
            more = bool(message.get("more_body", False))
            for start in range(0, len(body), PIECE):
                last = start + PIECE >= len(body)
                piece: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body[start:start + PIECE],
                                                 "more_body": more or not last}
                await self._send_one(piece)
            return
        await self._send_one(message)

    async def _send_one(self, message: Message) -> None:
        try:
            async with asyncio.timeout(self.settings.send_timeout_s):
                await self._send(message)
        except TimeoutError:
            self.abandoned = True
            _abort_connection(self._send)
            raise ClientTooSlowError(self.settings.send_timeout_s) from None


def _abort_connection(send: Send) -> None:
    """Drops the connection without flushing what the client never read.

    A plain close would wait for the write buffer to drain, which never happens when the client does
    not read. uvicorn's `send` is a method of its request cycle, which holds the transport.
    """
    transport: Any = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is not None and hasattr(transport, "abort"):
        transport.abort()


async def _disconnected(receive: Receive) -> None:
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    except BodyTimeoutError:  # left-overs after the form trickle in: not a disconnect, and nothing more to watch
        await asyncio.Event().wait()


async def unless_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """The result of `work`, or `ClientDisconnectedError` (work cancelled) if the client leaves first.

    Call it once the request body has been read: the next ASGI message is then the disconnect.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise ClientDisconnectedError()
    finally:
        for pending in (task, watcher):
            pending.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)
