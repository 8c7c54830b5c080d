"""Slow and departed clients, at the ASGI level (no Triton: these requests never reach it, or fail fast).

- a streaming client that leaves before the first byte gives its admission slot back;
- a body that trickles in gets a 408 and a closed connection; a response nobody reads is abandoned
  (the connection aborted) and frees what it held;
- a synchronous transcription stops when its client leaves.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from litestar import Litestar

from frontend.app import create_app
from frontend.deadlines import ClientDeadlines, ClientDisconnectedError, DeadlineSettings, unless_disconnected
from frontend.settings import FrontendSettings
from harness.assets import wav_bytes

Message = dict[str, Any]
CLIP = wav_bytes(np.zeros(16000, dtype=np.float32))  # 1 s of silence


def form(stream: bool) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://x/v1/audio/transcriptions", files={"file": ("a.wav", CLIP)},
                            data={"model": "whisper-1", "stream": "true" if stream else "false"})
    return request.read(), request.headers["content-type"]


def scope(body: bytes, content_type: str, path: str = "/v1/audio/transcriptions") -> Message:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "state": {}}


@asynccontextmanager
async def frontend(tmp_path: Path, **settings: Any) -> AsyncIterator[Litestar]:
    """The real app with its lifespan (store, runner) in this event loop, on a Triton address where
    nothing listens."""
    app = create_app(FrontendSettings(triton_url="127.0.0.1:9", models=["tiny.en"], data_dir=str(tmp_path),
                                      **settings))
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    lifespan = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},  # type: ignore[arg-type]
                                       inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    assert (await outbox.get())["type"] == "lifespan.startup.complete"
    try:
        yield app
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await lifespan


def body_then(body: bytes, after: Callable[[], Any]) -> Callable[[], Any]:
    """An ASGI receive: the whole body, then whatever `after` awaits."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        result: Message = await after()
        return result

    return receive


async def disconnect_now() -> Message:
    return {"type": "http.disconnect"}


async def never() -> Message:
    await asyncio.Event().wait()
    raise AssertionError


class Sink:
    """An ASGI send that keeps what it gets; `.done()` is what uvicorn's receive gives once the response
    is complete (a disconnect)."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.complete = asyncio.Event()

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.complete.set()

    async def done(self) -> Message:
        await self.complete.wait()
        return {"type": "http.disconnect"}

    @property
    def status(self) -> int:
        return int(next(m["status"] for m in self.messages if m["type"] == "http.response.start"))

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.response.body")


async def test_a_stream_whose_client_left_before_the_first_byte_gives_its_slot_back(tmp_path: Path) -> None:
    async with frontend(tmp_path, max_concurrent_requests=1) as app:
        body, content_type = form(stream=True)
        for _ in range(3):  # with the slot kept, the second request would get a 503
            sink = Sink()
            await app(scope(body, content_type), body_then(body, disconnect_now), sink)  # type: ignore[arg-type]
            assert sink.status == 200, sink.body
            assert app.state.services.admission.in_flight == 0


async def test_a_stream_that_fails_releases_its_slot_once(tmp_path: Path) -> None:
    async with frontend(tmp_path, max_concurrent_requests=2) as app:
        body, content_type = form(stream=True)
        sink = Sink()
        await app(scope(body, content_type), body_then(body, sink.done), sink)  # type: ignore[arg-type]
        events = [json.loads(line[6:]) for line in sink.body.decode().splitlines() if line.startswith("data: ")]
        assert events[-1]["error"]["code"] == "server_overloaded"  # Triton unreachable, after the 200
        assert app.state.services.admission.in_flight == 0


async def test_a_trickling_body_gets_a_408_and_a_closed_connection(tmp_path: Path) -> None:
    async with frontend(tmp_path) as app:
        guarded = ClientDeadlines(app, DeadlineSettings(body_timeout_s=0.3))
        body, content_type = form(stream=False)
        chunks = [body[:100]]

        async def receive() -> Message:
            if chunks:
                return {"type": "http.request", "body": chunks.pop(), "more_body": True}
            return await never()

        sink = Sink()
        started = asyncio.get_running_loop().time()
        await guarded(scope(body, content_type), receive, sink)  # type: ignore[arg-type]
        assert asyncio.get_running_loop().time() - started < 5
        assert sink.status == 408
        assert json.loads(sink.body)["error"]["code"] == "request_timeout"
        start = next(m for m in sink.messages if m["type"] == "http.response.start")
        assert (b"connection", b"close") in start["headers"]


def test_a_body_may_be_slow_but_must_keep_a_minimum_rate() -> None:
    from frontend.deadlines import _Exchange

    async def scenario() -> float:
        async def receive() -> Message:
            await asyncio.sleep(0.05)
            return {"type": "http.request", "body": b"x", "more_body": True}

        exchange = _Exchange(DeadlineSettings(body_timeout_s=0.5, body_min_rate=1000), receive, Sink())
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(Exception, match="did not arrive in time"):
            while True:  # each piece comes well within 0.5 s, but 20 bytes/s is under the minimum rate
                await exchange.receive()
        return loop.time() - started

    assert 0.4 < asyncio.run(scenario()) < 2


class Transport:
    aborted = False

    def abort(self) -> None:
        self.aborted = True


class StuckClient:
    """uvicorn's shape: `send` is a method of an object holding the transport. It takes the status line
    and then never any more (the client stopped reading)."""

    def __init__(self) -> None:
        self.transport = Transport()
        self.messages: list[Message] = []

    async def send(self, message: Message) -> None:
        self.messages.append(message)
        if message["type"] == "http.response.body":
            await asyncio.Event().wait()


async def test_a_response_nobody_reads_is_abandoned_and_frees_its_slot(tmp_path: Path) -> None:
    async with frontend(tmp_path, max_concurrent_requests=1) as app:
        guarded = ClientDeadlines(app, DeadlineSettings(send_timeout_s=0.3))
        body, content_type = form(stream=True)
        client = StuckClient()
        await asyncio.wait_for(guarded(scope(body, content_type), body_then(body, never), client.send), 10)
        assert client.transport.aborted
        assert app.state.services.admission.in_flight == 0


async def test_work_stops_when_the_client_leaves() -> None:
    cancelled = asyncio.Event()

    async def work() -> str:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()
        return "never"

    async def leaves() -> Message:
        await asyncio.sleep(0.1)
        return {"type": "http.disconnect"}

    with pytest.raises(ClientDisconnectedError):
        await unless_disconnected(leaves, work())  # type: ignore[arg-type]
    assert cancelled.is_set()

    async def quick() -> str:
        return "done"

    assert await unless_disconnected(never, quick()) == "done"  # type: ignore[arg-type]


async def test_a_large_body_goes_in_pieces_so_a_client_that_stops_reading_is_noticed() -> None:
    """uvicorn waits for the client only between writes: written at once, 10 MB would just sit in memory."""
    from frontend.deadlines import PIECE, ClientTooSlowError, _Exchange

    class ReadsALittle(StuckClient):
        """Reads 200 KB, then nothing more."""

        taken: list[int] = []  # noqa: RUF012

        async def send(self, message: Message) -> None:
            if message["type"] == "http.response.body":
                if sum(self.taken) >= 200_000:
                    await asyncio.Event().wait()
                self.taken.append(len(message["body"]))

    client = ReadsALittle()
    taken = client.taken
    exchange = _Exchange(DeadlineSettings(send_timeout_s=0.2), never, client.send)
    await exchange.send({"type": "http.response.start", "status": 200, "headers": []})
    with pytest.raises(ClientTooSlowError):
        await exchange.send({"type": "http.response.body", "body": b"x" * 10_000_000, "more_body": False})
    assert taken and max(taken) <= PIECE and sum(taken) < 400_000
    assert client.transport.aborted and exchange.abandoned
