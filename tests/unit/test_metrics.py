"""Frontend metrics: counted by route template, errors by OpenAI code, SSE untouched, one registry per app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest
from litestar import Litestar, get
from litestar.params import FromPath
from litestar.response import Stream
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from frontend.errors import EXCEPTION_HANDLERS, bad_request
from frontend.metrics import FrontendMetrics, MetricsPlugin, error_code, metrics_of
from frontend.transcription import unknown_model


@get("/items/{item_id:int}", sync_to_thread=False)
def get_item(item_id: FromPath[int]) -> dict[str, int]:
    if item_id == 0:
        raise unknown_model("zero")
    return {"id": item_id}


@get("/bad", sync_to_thread=False)
def get_bad() -> None:
    raise bad_request("no", param="thing")


@get("/boom", sync_to_thread=False)
def get_boom() -> None:
    raise RuntimeError("a bug")


@get("/events")
async def get_events() -> Stream:
    async def events() -> AsyncIterator[bytes]:
        for i in range(3):
            yield f"data: {i}\n\n".encode()
            await asyncio.sleep(0.1)

    return Stream(events(), media_type="text/event-stream")


def make_app(plugin: MetricsPlugin | None = None) -> Litestar:
    return Litestar(route_handlers=[get_item, get_bad, get_boom, get_events], plugins=[plugin or MetricsPlugin()],
                    exception_handlers=EXCEPTION_HANDLERS)


def sample(exposition: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def scrape(client: TestClient[Litestar]) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return response.text


def test_requests_are_counted_by_route_template_method_and_status() -> None:
    with TestClient(make_app()) as client:
        for i in (1, 2, 3):
            assert client.get(f"/items/{i}").status_code == 200
        assert client.get("/items/0").status_code == 404
        text = scrape(client)
    route = "/items/{item_id}"
    assert sample(text, "whisper_frontend_requests_total", route=route, method="GET", status="200") == 3
    assert sample(text, "whisper_frontend_requests_total", route=route, method="GET", status="404") == 1
    assert sample(text, "whisper_frontend_request_duration_seconds_count", route=route, method="GET") == 4
    assert 'route="/items/1"' not in text  # templates, not raw paths: bounded label values


def test_errors_are_counted_by_openai_code() -> None:
    with TestClient(make_app()) as client:
        assert client.get("/bad").status_code == 400
        assert client.get("/bad").status_code == 400
        assert client.get("/items/0").status_code == 404
        assert client.get("/boom").status_code == 500
        text = scrape(client)
    assert sample(text, "whisper_frontend_errors_total", status="400", code="invalid_value") == 2
    assert sample(text, "whisper_frontend_errors_total", status="404", code="model_not_found") == 1
    assert sample(text, "whisper_frontend_errors_total", status="500", code="server_error") == 1
    assert sample(text, "whisper_frontend_requests_total", route="/boom", status="500") == 1


def test_streams_pass_through_and_are_timed_to_the_last_byte() -> None:
    with TestClient(make_app()) as client:
        with client.stream("GET", "/events") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = [line for line in response.iter_lines() if line]
        assert events == ["data: 0", "data: 1", "data: 2"]
        text = scrape(client)
    assert sample(text, "whisper_frontend_requests_total", route="/events", status="200") == 1
    assert sample(text, "whisper_frontend_request_duration_seconds_sum", route="/events") >= 0.25


def test_observe_functions_and_in_flight_from_the_admission_counter() -> None:
    app = make_app()
    app.state.services = SimpleNamespace(admission=SimpleNamespace(in_flight=3))
    metrics = metrics_of(app)
    assert metrics is not None
    metrics.set_queue_depth(7)
    metrics.observe_audio(11.0, "transcribe")
    metrics.observe_audio(2.5, "transcribe")
    metrics.observe_audio(4.0, "translate")
    metrics.observe_audio(0.0, "translate")
    with TestClient(app) as client:
        text = scrape(client)
    assert sample(text, "whisper_frontend_queue_depth") == 7
    assert sample(text, "whisper_frontend_transcriptions_in_flight") == 3
    assert sample(text, "whisper_frontend_audio_seconds_total", task="transcribe") == pytest.approx(13.5)
    assert sample(text, "whisper_frontend_audio_seconds_total", task="translate") == pytest.approx(4.0)


def test_each_app_has_its_own_registry() -> None:
    first, second = make_app(), make_app()
    with TestClient(first) as client:
        client.get("/items/1")
        client.get("/items/1")
    with TestClient(second) as client:
        client.get("/items/1")
        text = scrape(client)
    assert sample(text, "whisper_frontend_requests_total", route="/items/{item_id}") == 1
    assert metrics_of(first) is not metrics_of(second)


def test_plugin_uses_the_given_metrics() -> None:
    metrics = FrontendMetrics()
    with TestClient(make_app(MetricsPlugin(metrics))) as client:
        client.get("/items/5")
    assert sample(metrics.exposition().decode(), "whisper_frontend_requests_total", status="200") == 1


def test_app_without_plugin_has_no_metrics() -> None:
    assert metrics_of(Litestar(route_handlers=[get_item])) is None


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (400, b'{"error":{"message":"m","type":"invalid_request_error","param":null,"code":"invalid_audio"}}',
         "invalid_audio"),
        (500, b'{"error":{"message":"m","type":"server_error","param":null,"code":null}}', "server_error"),
        (404, b"Not Found", "http_404"),
        (413, b"", "http_413"),
        (400, b'{"detail":"x"}', "http_400"),
    ],
)
def test_error_code(status: int, body: bytes, code: str) -> None:
    assert error_code(status, body) == code


def test_requests_audio_and_refusals_carry_the_key_name_never_the_key() -> None:
    from litestar.connection import ASGIConnection
    from litestar.handlers import BaseRouteHandler

    from frontend.keys import Principal

    def as_alice(connection: ASGIConnection, _: BaseRouteHandler) -> None:  # type: ignore[type-arg]
        connection.state.principal = Principal(key_id="0123456789abcdef", name="alice")

    @get("/mine", sync_to_thread=False, guards=[as_alice])
    def guarded() -> dict[str, bool]:
        return {"ok": True}

    metrics = FrontendMetrics()
    app = Litestar(route_handlers=[guarded, get_item], plugins=[MetricsPlugin(metrics)],
                   exception_handlers=EXCEPTION_HANDLERS)
    metrics.observe_audio(11.0, "transcribe", "alice")
    metrics.observe_rate_limited("alice", "requests")
    metrics.observe_rate_limited("alice", "requests")
    with TestClient(app) as client:
        client.get("/mine")
        client.get("/items/1")
        text = scrape(client)
    assert sample(text, "whisper_frontend_requests_total", route="/mine", key="alice") == 1
    assert sample(text, "whisper_frontend_requests_total", route="/items/{item_id}", key="none") == 1
    assert sample(text, "whisper_frontend_audio_seconds_total", task="transcribe", key="alice") == 11.0
    assert sample(text, "whisper_frontend_rate_limited_total", key="alice", limit="requests") == 2
    assert "0123456789abcdef" not in text
