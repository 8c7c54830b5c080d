"""`/v1/realtime?intent=transcription`: OpenAI's Realtime transcription API over WebSocket, onto one gRPC
stream to the live model per connection; and the short-lived client secrets browsers connect with.

A key comes as `Authorization: Bearer`, as the `openai-insecure-api-key.<key>` subprotocol (browsers;
the server then selects `realtime`), as `?api_key=` or `X-API-Key`; a client secret (`ek_...`) from
`POST /v1/realtime/client_secrets` works like its key until it expires (secrets live in this replica's
memory). A refused key gets OpenAI's `error` event, then close code 3000.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
from litestar import Controller, Request, WebSocket, post, websocket
from litestar.di import NamedDependency
from litestar.exceptions import WebSocketDisconnect

from frontend.guards import require_api_key
from frontend.keys import OPEN, KeyRing, Principal
from frontend.logs import current_request_id
from frontend.metrics import metrics_of
from frontend.realtime import protocol
from frontend.realtime.bridge import Answer, LiveBridge
from frontend.realtime.protocol import SessionState, error_event, event_id
from frontend.settings import FrontendSettings
from whisper_triton.contract import TokenLogprob
from whisper_triton.errors import InvalidRequestError, RateLimitError, ServiceError, UnavailableError
from whisper_triton.live_contract import (
    Clear,
    ClearedEvent,
    Commit,
    CommittedEvent,
    CompletedEvent,
    DeltaEvent,
    End,
    ErrorEvent,
    FailedEvent,
    SpeechStartedEvent,
    SpeechStoppedEvent,
    Start,
    TimeoutEvent,
    Update,
)

log = logging.getLogger("frontend.realtime")
CLOSE_AUTH, CLOSE_SHAPE, CLOSE_EXPIRED = 3000, 4000, 1001
SUBPROTOCOL_KEY = "openai-insecure-api-key."


@dataclass
class ClientSecret:
    principal: Principal
    expires_at: float
    state: SessionState


@dataclass
class ClientSecrets:
    """Short-lived keys for browsers, in this replica's memory."""

    by_value: dict[str, ClientSecret] = field(default_factory=dict)

    def mint(self, principal: Principal, seconds: int, state: SessionState) -> tuple[str, int]:
        now = time.time()
        self.by_value = {v: s for v, s in self.by_value.items() if s.expires_at > now}
        value = "ek_" + secrets.token_urlsafe(24)
        expires = int(now + seconds)
        self.by_value[value] = ClientSecret(principal, expires, state)
        return value, expires

    def find(self, value: str) -> ClientSecret | None:
        secret = self.by_value.get(value)
        return secret if secret is not None and secret.expires_at > time.time() else None


def _presented_key(socket: WebSocket[Any, Any, Any]) -> tuple[str, list[str]]:
    offered = [p.strip() for p in ",".join(socket.headers.getall("sec-websocket-protocol", [])).split(",") if p.strip()]
    key = next((p[len(SUBPROTOCOL_KEY):] for p in offered if p.startswith(SUBPROTOCOL_KEY)), "")
    scheme, _, token = socket.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        key = token.strip()
    key = key or socket.query_params.get("api_key", "") or socket.headers.get("x-api-key", "")
    return key, offered


def _caller(socket: WebSocket[Any, Any, Any], key: str) -> tuple[Principal | None, SessionState | None]:
    ring: KeyRing = socket.app.state["key_ring"]
    found = socket.app.state["realtime_secrets"].find(key) if key.startswith("ek_") else None
    if found is not None:
        return found.principal, found.state
    if not ring.enabled:
        return OPEN, None
    return (ring.identify(key) if key else None), None


@websocket("/v1/realtime")
async def realtime(socket: WebSocket[Any, Any, Any]) -> None:
    """OpenAI's Realtime API, transcription sessions (`intent=transcription`)."""
    key, offered = _presented_key(socket)
    await socket.accept(subprotocols="realtime" if "realtime" in offered else None)
    principal, preset = _caller(socket, key)
    if principal is None:
        message = ("Missing bearer or basic authentication in header" if not key
                   else "Incorrect API key provided.")
        await _refuse(socket, InvalidRequestError(message, code="invalid_api_key"), CLOSE_AUTH,
                      "invalid_request_error.invalid_api_key")
        return
    settings: FrontendSettings = socket.app.state["settings"]
    intent, model = socket.query_params.get("intent", ""), socket.query_params.get("model", "")
    if (intent and intent != "transcription") or (not intent and model and settings.resolve_model(model) is None):
        await _refuse(socket, InvalidRequestError("Only transcription sessions are served here: connect with "
                                                  "?intent=transcription.", param="intent", code="invalid_value"),
                      CLOSE_SHAPE, "invalid_request_error.invalid_value")
        return
    session = RealtimeSession(socket, principal, settings, preset, beta=bool(socket.headers.get("openai-beta")))
    await session.run()


async def _refuse(socket: WebSocket[Any, Any, Any], error: ServiceError, code: int, reason: str,
                  kind: str = "invalid_request_error") -> None:
    """OpenAI's error event, then the socket closed with `code` (a client already gone is no error)."""
    with contextlib.suppress(Exception):
        await socket.send_json(error_event(error, kind=kind))
        await socket.close(code=code, reason=reason)


def _logprobs(tokens: list[TokenLogprob] | None) -> dict[str, Any]:
    """The `logprobs` field of a transcript event, when the session's `include` asked for it."""
    if tokens is None:
        return {}
    return {"logprobs": msgspec.to_builtins(tokens)}


def _resolver(settings: FrontendSettings) -> Any:
    def resolve(model: str) -> str | None:
        if not model:
            return settings.served_model
        return settings.resolve_model(model) or (settings.served_model if model in protocol.REALTIME_ALIASES
                                                 else None)

    return resolve


class SessionFailed(Exception):
    """The live model refused to open the session (too many sessions, no such model): the socket is closed."""


class RealtimeSession:
    """One WebSocket connection: client events to the live model, its events back in OpenAI's shape."""

    def __init__(self, socket: WebSocket[Any, Any, Any], principal: Principal, settings: FrontendSettings,
                 preset: SessionState | None, beta: bool) -> None:
        self.socket, self.principal, self.settings, self.beta = socket, principal, settings, beta
        self.resolve = _resolver(settings)
        self.state = preset or SessionState(served_model=settings.served_model)
        self.state.expires_at = int(time.time() + settings.realtime_max_session_s)
        self.items: dict[int, str] = {}
        self.client_events: dict[str, str | None] = {}  # our request id -> the client event that caused it
        self.stopped_at: dict[int, float] = {}  # turn -> when its audio ended (for the latency metric)
        self.send_lock = asyncio.Lock()
        self.metrics = metrics_of(socket.app)
        self.start_request = ""

    async def run(self) -> None:
        services = self.socket.app.state.services
        limiter = services.transcriptions.limiter
        try:
            if limiter is not None:
                limiter.count_request(self.principal)
        except RateLimitError as exc:
            await _refuse(self.socket, exc, 1008, "rate_limit_exceeded")
            return
        bridge = LiveBridge(services.triton.grpc, "rt-" + self.state.id, current_request_id())
        if self.metrics is not None:
            self.metrics.realtime_started()
        reader: asyncio.Task[None] | None = None
        writer: asyncio.Task[None] | None = None
        try:
            self.start_request = await bridge.send(control=Start(self.state.live_config()))
            await self._emit("transcription_session.created" if self.beta else "session.created",
                             session=self.state.beta() if self.beta else self.state.ga())
            writer = asyncio.create_task(self._forward(bridge))
            reader = asyncio.create_task(self._read(bridge))
            lifetime = max(1.0, self.state.expires_at - time.time())
            done, _ = await asyncio.wait({reader, writer}, timeout=lifetime, return_when=asyncio.FIRST_COMPLETED)
            if not done:  # the session's maximum duration
                await self._close_with(InvalidRequestError("Your session hit the maximum duration of "
                                                           f"{self.settings.realtime_max_session_s / 60:g} minutes.",
                                                           code="session_expired"), CLOSE_EXPIRED)
            for finished in done:
                failure = None if finished.cancelled() else finished.exception()
                if isinstance(failure, ServiceError):
                    await self._close_with(failure, 1011)
        finally:
            if reader is not None:
                reader.cancel()
            # The live model ends the session once its End arrives: wait for that (the writer reads the answers)
            # before the stream is closed, else the session would wait there for its idle timeout.
            with contextlib.suppress(Exception):
                end = await asyncio.wait_for(bridge.send(control=End()), 1.0)
                if writer is not None and not writer.done():
                    await bridge.finished(end, 5.0)
            if writer is not None:
                writer.cancel()
            await bridge.close()
            if self.metrics is not None:
                self.metrics.realtime_ended()
            with contextlib.suppress(Exception):
                await self.socket.close()

    async def _close_with(self, error: ServiceError, code: int) -> None:
        kind = "server_error" if code in (1011, 1013) else "invalid_request_error"
        async with self.send_lock:  # not inside an event the writer is sending
            await _refuse(self.socket, error, code, error.code or "", kind)

    async def _read(self, bridge: LiveBridge) -> None:
        idle = self.settings.realtime_idle_s
        while True:
            try:
                message = await asyncio.wait_for(self.socket.receive(), idle)
            except TimeoutError:
                await self._close_with(InvalidRequestError(f"No client event for {idle:g} s: the session is closed.",
                                                           code="session_idle"), 1000)
                return
            except WebSocketDisconnect:
                return
            if message.get("type") == "websocket.disconnect":
                return
            text = message.get("text")
            if not isinstance(text, str):
                await self._send(error_event(InvalidRequestError("Binary frames are not supported: send JSON "
                                                                 "text frames.", code="invalid_event")))
                continue
            await self._client_event(bridge, text)

    async def _client_event(self, bridge: LiveBridge, text: str) -> None:
        try:
            event = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            await self._send(error_event(InvalidRequestError("The event is not valid JSON.", code="invalid_json")))
            return
        client_id = event.get("event_id") if isinstance(event, dict) else None
        kind = event.get("type") if isinstance(event, dict) else None
        try:
            if kind in ("session.update", "transcription_session.update"):
                beta = kind == "transcription_session.update"
                state = protocol.updated(self.state, event.get("session"), beta, self.resolve)
                self.client_events[await bridge.send(control=Update(state.live_config()))] = client_id
                self.state = state
                await self._emit("transcription_session.updated" if beta else "session.updated",
                                 session=state.beta() if beta else state.ga())
            elif kind == "input_audio_buffer.append":
                self.client_events[await bridge.send(audio=protocol.audio_bytes(event))] = client_id
            elif kind == "input_audio_buffer.commit":
                self.client_events[await bridge.send(control=Commit())] = client_id
            elif kind == "input_audio_buffer.clear":
                self.client_events[await bridge.send(control=Clear())] = client_id
            elif kind == "session.close":
                await self.socket.close(code=1000)
            else:
                raise InvalidRequestError(f"Invalid value: '{str(kind)[:64]}'. Supported values are: "
                                          f"{', '.join(repr(t) for t in protocol.CLIENT_EVENTS)}.", param="type",
                                          code="invalid_value")
        except InvalidRequestError as exc:
            await self._send(error_event(exc, client_id))

    async def _forward(self, bridge: LiveBridge) -> None:
        async for answer in bridge.answers():
            if answer.event is not None:
                await self._answer(answer)
            if answer.final:
                self.client_events.pop(answer.request, None)

    async def _answer(self, answer: Answer) -> None:
        event = answer.event
        if isinstance(event, SpeechStartedEvent):
            await self._emit("input_audio_buffer.speech_started", audio_start_ms=event.audio_start_ms,
                             item_id=self._item(event.item))
        elif isinstance(event, SpeechStoppedEvent):
            self.stopped_at[event.item] = time.monotonic()
            await self._emit("input_audio_buffer.speech_stopped", audio_end_ms=event.audio_end_ms,
                             item_id=self._item(event.item))
        elif isinstance(event, TimeoutEvent):
            await self._emit("input_audio_buffer.timeout_triggered", audio_start_ms=event.audio_start_ms,
                             audio_end_ms=event.audio_end_ms, item_id=self._item(event.item))
        elif isinstance(event, CommittedEvent):
            self.stopped_at.setdefault(event.item, time.monotonic())
            item_id, previous = self._item(event.item), self.items.get(event.item - 1)
            await self._emit("input_audio_buffer.committed", item_id=item_id, previous_item_id=previous)
            for kind in ("conversation.item.added", "conversation.item.done"):
                await self._emit(kind, previous_item_id=previous, item=protocol.item(item_id))
        elif isinstance(event, ClearedEvent):
            await self._emit("input_audio_buffer.cleared")
        elif isinstance(event, DeltaEvent):
            await self._emit("conversation.item.input_audio_transcription.delta", item_id=self._item(event.item),
                             content_index=0, delta=event.text, **_logprobs(event.logprobs))
        elif isinstance(event, CompletedEvent):
            self._observe_turn(event)
            await self._emit("conversation.item.input_audio_transcription.completed", item_id=self._item(event.item),
                             content_index=0, transcript=event.text,
                             usage={"type": "duration", "seconds": event.audio_seconds}, **_logprobs(event.logprobs))
        elif isinstance(event, FailedEvent):
            self.stopped_at.pop(event.item, None)
            await self._emit("conversation.item.input_audio_transcription.failed", item_id=self._item(event.item),
                             content_index=0, error={"type": "server_error", "code": event.code,
                                                     "message": event.message, "param": None})
        elif isinstance(event, ErrorEvent):
            if answer.request == self.start_request:  # the live model could not open the session
                await self._close_with(UnavailableError(event.message, code=event.code), 1013)
                raise SessionFailed(event.message)
            error = InvalidRequestError(event.message, param=event.param, code=event.code)
            await self._send(error_event(error, self.client_events.get(answer.request)))

    def _observe_turn(self, event: CompletedEvent) -> None:
        stopped = self.stopped_at.pop(event.item, None)
        services = self.socket.app.state.services
        if services.transcriptions.limiter is not None:
            services.transcriptions.limiter.record_audio(self.principal, event.audio_seconds)
        if self.metrics is not None:
            self.metrics.observe_audio(event.audio_seconds, "realtime", self.principal.name)
            if stopped is not None and event.audio_seconds > 0:  # (an idle timeout's silence is not decoded)
                self.metrics.observe_realtime_turn(time.monotonic() - stopped)

    def _item(self, number: int) -> str:
        if number not in self.items:
            self.items[number] = protocol.new_id("item")
        return self.items[number]

    async def _emit(self, kind: str, **fields: Any) -> None:
        await self._send({"type": kind, "event_id": event_id(), **fields})

    async def _send(self, event: dict[str, Any]) -> None:
        async with self.send_lock:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await self.socket.send_json(event)


class RealtimeSecretsController(Controller):
    """Short-lived keys for browsers (OpenAI's client secrets, and the older transcription sessions)."""

    path = "/v1/realtime"
    guards = [require_api_key]  # noqa: RUF012
    tags = ["realtime"]  # noqa: RUF012

    @post("/client_secrets", operation_id="createRealtimeClientSecret", status_code=200)
    async def create_client_secret(self, request: Request[Any, Any, Any], principal: NamedDependency[Principal],
                                   settings: NamedDependency[FrontendSettings]) -> dict[str, Any]:
        """A key (`ek_...`) a browser connects with until it expires (10 s to 2 h; default 10 min)."""
        body = await _json_body(request)
        expires = body.get("expires_after") or {}
        seconds = expires.get("seconds", 600) if isinstance(expires, dict) else 600
        if not isinstance(seconds, int) or not 10 <= seconds <= 7200:
            raise InvalidRequestError("expires_after.seconds must be 10-7200.", param="expires_after.seconds")
        state = protocol.updated(SessionState(served_model=settings.served_model), body.get("session") or {}, False,
                                 _resolver(settings))
        value, expires_at = request.app.state["realtime_secrets"].mint(principal, seconds, state)
        return {"value": value, "expires_at": expires_at, "session": state.ga()}

    @post("/transcription_sessions", operation_id="createRealtimeTranscriptionSession", status_code=200)
    async def create_transcription_session(self, request: Request[Any, Any, Any],
                                           principal: NamedDependency[Principal],
                                           settings: NamedDependency[FrontendSettings]) -> dict[str, Any]:
        """The older form: a transcription session's settings and a client secret for it."""
        body = await _json_body(request)
        state = protocol.updated(SessionState(served_model=settings.served_model), body, True, _resolver(settings))
        secret = body.get("client_secret") or {}
        expires = secret.get("expires_at", {}) if isinstance(secret, dict) else {}
        seconds = expires.get("seconds", 600) if isinstance(expires, dict) else 600
        if not isinstance(seconds, int) or not 10 <= seconds <= 7200:
            raise InvalidRequestError("client_secret.expires_at.seconds must be 10-7200.",
                                      param="client_secret.expires_at.seconds")
        value, expires_at = request.app.state["realtime_secrets"].mint(principal, seconds, state)
        return {**state.beta(), "client_secret": {"value": value, "expires_at": expires_at}}


async def _json_body(request: Request[Any, Any, Any]) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InvalidRequestError("The body is not valid JSON.", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise InvalidRequestError("The body must be a JSON object.", code="invalid_type")
    return body
