"""Answers that hold an admission slot: streamed (server-sent events) or awaited, the slot given back however
they end."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from litestar.response import Stream
from litestar.response.base import ASGIResponse
from litestar.types import Receive, Scope, Send

from frontend.deadlines import unless_disconnected
from frontend.transcription import Slot

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(data: object) -> bytes:
    """One server-sent event carrying `data` as JSON."""
    return b"data: " + _encoder.encode(data) + b"\n\n"


async def awaited(receive: Receive, slot: Slot, work: Awaitable[T]) -> T:
    """The result of `work`, stopped if the client leaves first (`unless_disconnected`); the slot given back."""
    try:
        return await unless_disconnected(receive, work)
    finally:
        slot.release()


def event_stream(body: AsyncGenerator[bytes, None], on_close: Callable[[], None]) -> ClosingStream:
    """An SSE response of `body`; `on_close` (an admission slot's release) runs when it ends, however it ends."""
    return ClosingStream(body, on_close=on_close, media_type="text/event-stream", headers=SSE_HEADERS)


class ClosingStream(Stream):
    """A streamed response that closes its body generator and calls `on_close` once, however it ends.

    Litestar runs the body in a task that it cancels when the client disconnects. A `finally` inside
    the generator then runs only if the generator had started, and a generator left at a `yield` (a
    send that failed or timed out: the client stopped reading) is closed only when it is collected.
    Releasing what the response holds (an admission slot, the Triton call) therefore happens here,
    around the whole ASGI response, whatever the generator's state.
    """

    def __init__(self, content: AsyncGenerator[bytes, None], on_close: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._body = content
        self._on_close: Callable[[], None] | None = on_close

    async def close(self) -> None:
        try:
            await self._body.aclose()
        finally:
            on_close, self._on_close = self._on_close, None
            if on_close is not None:
                on_close()

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> ASGIResponse:
        return _Closing(super().to_asgi_response(*args, **kwargs), self)


class _Closing(ASGIResponse):
    __slots__ = ("_inner", "_owner")

    def __init__(self, inner: ASGIResponse, owner: ClosingStream) -> None:
        super().__init__(status_code=inner.status_code)
        self._inner = inner
        self._owner = owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._inner(scope, receive, send)
        except BaseExceptionGroup as group:
            # The body task's failure, wrapped by the task group Litestar streams in: unwrapped, it reaches
            # the handler registered for its type.
            if len(group.exceptions) == 1 and isinstance(group.exceptions[0], Exception):
                raise group.exceptions[0] from None
            raise
        finally:
            with contextlib.suppress(Exception):
                await self._owner.close()
