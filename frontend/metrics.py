"""Prometheus metrics of the frontend, one registry per app, exposed at `GET /metrics`.

`MetricsPlugin` adds everything to an app: the registry (as `app.state.metrics`), the ASGI
middleware that counts and times every routed request, and the `/metrics` handler. Other modules
record through `metrics_of(app)`, which is None when the plugin is not installed.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, get
from litestar.config.app import AppConfig
from litestar.enums import ScopeType
from litestar.handlers import HTTPRouteHandler
from litestar.middleware import ASGIMiddleware
from litestar.plugins import InitPlugin
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

STATE_KEY = "metrics"
PREFIX = "whisper_frontend"
# Transcriptions of long files take minutes; the usual web buckets would stop at 10 s.
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
MAX_ERROR_BODY = 64 * 1024  # error bodies are small; anything longer is not ours
# What `generate_latest` writes; Litestar appends `; charset=utf-8` to text types itself.
CONTENT_TYPE = "text/plain; version=0.0.4"
NO_KEY = "none"  # the `key` label of requests no API key was identified for (open routes, 401s)


class FrontendMetrics:
    """The frontend's metrics in their own `CollectorRegistry` (several apps may live in one process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.requests = Counter(f"{PREFIX}_requests",
                                "HTTP requests by route template, method, status and API key name (none: no key).",
                                ["route", "method", "status", "key"], registry=self.registry)
        self.latency = Histogram(f"{PREFIX}_request_duration_seconds",
                                 "Time from the request to the last byte of the response (whole SSE streams).",
                                 ["route", "method"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge(f"{PREFIX}_transcriptions_in_flight",
                               "Transcriptions admitted and not finished (the admission counter).",
                               registry=self.registry)
        self.queue_depth = Gauge(f"{PREFIX}_queue_depth", "Requests waiting for inference.", registry=self.registry)
        self.audio = Counter(f"{PREFIX}_audio_seconds", "Seconds of audio transcribed or translated, by API key name.",
                             ["task", "key"], registry=self.registry)
        self.rate_limited = Counter(f"{PREFIX}_rate_limited", "Requests refused with 429 by API key name and limit.",
                                    ["key", "limit"], registry=self.registry)
        self.realtime_sessions = Counter(f"{PREFIX}_realtime_sessions", "Realtime (WebSocket) sessions opened.",
                                         registry=self.registry)
        self.realtime_active = Gauge(f"{PREFIX}_realtime_sessions_active", "Realtime sessions open now.",
                                     registry=self.registry)
        self.realtime_turn_latency = Histogram(
            f"{PREFIX}_realtime_turn_latency_seconds",
            "From the end of a Realtime turn's audio (speech stopped or commit) to its completed transcript.",
            buckets=(0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0, 10.0, 30.0), registry=self.registry)
        self.errors = Counter(f"{PREFIX}_errors", "Error responses by HTTP status and OpenAI error code.",
                              ["status", "code"], registry=self.registry)

    def observe_request(self, route: str, method: str, status: int, seconds: float, key: str = NO_KEY) -> None:
        self.requests.labels(route, method, str(status), key).inc()
        self.latency.labels(route, method).observe(seconds)

    def realtime_started(self) -> None:
        self.realtime_sessions.inc()
        self.realtime_active.inc()

    def realtime_ended(self) -> None:
        self.realtime_active.dec()

    def observe_realtime_turn(self, seconds: float) -> None:
        self.realtime_turn_latency.observe(seconds)

    def observe_error(self, status: int, code: str) -> None:
        self.errors.labels(str(status), code).inc()

    def observe_audio(self, seconds: float, task: str, key: str = NO_KEY) -> None:
        if seconds > 0:
            self.audio.labels(task, key).inc(seconds)

    def observe_rate_limited(self, key: str, limit: str) -> None:
        self.rate_limited.labels(key, limit).inc()

    def set_queue_depth(self, depth: int) -> None:
        self.queue_depth.set(depth)

    def set_in_flight(self, count: int) -> None:
        self.in_flight.set(count)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def metrics_of(app: Litestar) -> FrontendMetrics | None:
    value = app.state.get(STATE_KEY)
    return value if isinstance(value, FrontendMetrics) else None


def error_code(status: int, body: bytes) -> str:
    """OpenAI's `error.code` (else `error.type`) of an error body; `http_<status>` for other bodies."""
    try:
        document = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return f"http_{status}"
    error = document.get("error") if isinstance(document, dict) else None
    if isinstance(error, dict):
        for key in ("code", "type"):
            if isinstance(error.get(key), str) and error[key]:
                return str(error[key])
    return f"http_{status}"


def key_name(scope: Scope) -> str:
    """The name of the API key the guard identified for this request (never the key), or `none`."""
    principal = (scope.get("state") or {}).get("principal")
    return str(getattr(principal, "name", "") or NO_KEY)


class MetricsMiddleware(ASGIMiddleware):
    """Counts and times routed requests; passes every message on at once, so SSE streams stay live.

    Litestar puts an exception handler between the route and this middleware, so errors arrive
    here as ordinary responses. Unrouted requests (404 on an unknown path) do not pass through.
    """

    scopes = (ScopeType.HTTP,)

    def __init__(self, metrics: FrontendMetrics) -> None:
        self.metrics = metrics

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        start = time.perf_counter()
        status = 500  # what the client sees when the app fails before it starts a response
        error_body: bytearray | None = None

        async def send_observed(message: Message) -> None:
            nonlocal status, error_body
            if message["type"] == "http.response.start":
                status = message["status"]
                if status >= 400:
                    error_body = bytearray()
            elif message["type"] == "http.response.body" and error_body is not None:
                if len(error_body) <= MAX_ERROR_BODY:
                    error_body.extend(message.get("body", b""))
            await send(message)

        try:
            await next_app(scope, receive, send_observed)
        finally:
            route = str(scope.get("path_template") or "unrouted")
            self.metrics.observe_request(route, str(scope.get("method", "")), status, time.perf_counter() - start,
                                         key_name(scope))
            if status >= 400:
                self.metrics.observe_error(status, error_code(status, bytes(error_body or b"")))


@get("/metrics", operation_id="getMetrics", include_in_schema=False, sync_to_thread=False)
def get_metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Prometheus text exposition format."""
    metrics = metrics_of(request.app)
    if metrics is None:  # the handler was registered without the plugin
        return Response(b"", media_type=CONTENT_TYPE, status_code=404)
    services = getattr(request.app.state, "services", None)
    admission = getattr(services, "admission", None)
    if admission is not None:
        # The admission counter is the one source of truth for transcriptions in flight.
        metrics.set_in_flight(int(admission.in_flight))
    return Response(metrics.exposition(), media_type=CONTENT_TYPE)


class MetricsPlugin(InitPlugin):
    """`Litestar(plugins=[MetricsPlugin()])`: registry in `app.state.metrics`, middleware, `/metrics`."""

    def __init__(self, metrics: FrontendMetrics | None = None) -> None:
        self.metrics = metrics if metrics is not None else FrontendMetrics()

    @property
    def route_handlers(self) -> list[HTTPRouteHandler]:
        return [get_metrics]

    @property
    def middleware(self) -> MetricsMiddleware:
        return MetricsMiddleware(self.metrics)

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.state[STATE_KEY] = self.metrics
        app_config.route_handlers.extend(self.route_handlers)
        # First in the list = outermost: the timing includes every other middleware.
        app_config.middleware.insert(0, self.middleware)
        return app_config
