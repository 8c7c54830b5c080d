"""Frontend logging: JSON lines with extras, no transcript text ever, uvicorn routed through it."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from frontend.logs import REDACTED, JsonFormatter, TextFormatter, TranscriptFilter, configure_logging, short_id


@pytest.fixture
def root_state() -> Iterator[None]:
    """configure_logging changes the root and uvicorn loggers: put them back afterwards."""
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    uvicorn = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).propagate)
               for n in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")}
    yield
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    for name, (handlers, propagate) in uvicorn.items():
        logging.getLogger(name).handlers[:] = handlers
        logging.getLogger(name).propagate = propagate


def capture(level: str = "info", json_lines: bool = True) -> io.StringIO:
    handler = configure_logging(level, json=json_lines)
    assert isinstance(handler, logging.StreamHandler)
    stream = io.StringIO()
    handler.setStream(stream)
    return stream


def records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_short_id() -> None:
    assert short_id("3f2a9c1e-77aa-4b3e-9d1f-0123456789ab") == "3f2a9c1e"
    assert short_id("abc") == "abc"


@pytest.mark.usefixtures("root_state")
def test_json_lines_carry_time_level_logger_message_and_extras() -> None:
    stream = capture()
    logging.getLogger("frontend.test").info("transcribed %d windows", 3,
                                            extra={"task_id": short_id("deadbeef-cafe"), "seconds": 11.0})
    [entry] = records(stream)
    assert entry["level"] == "info"
    assert entry["logger"] == "frontend.test"
    assert entry["message"] == "transcribed 3 windows"
    assert entry["task_id"] == "deadbeef" and entry["seconds"] == 11.0
    assert str(entry["time"]).endswith("+00:00") and "T" in str(entry["time"])


@pytest.mark.usefixtures("root_state")
def test_no_record_carries_transcript_text() -> None:
    stream = capture()
    log = logging.getLogger("frontend.test")
    secret = "ask not what your country can do for you"
    log.info("done", extra={"text": secret, "transcript": secret, "segments": [{"text": secret}], "words": 12,
                            "task_id": "abcd1234"})
    log.info("event %s", {"type": "done", "text": secret, "segments": [{"id": 0, "text": secret}]})
    log.info("%(type)s %(text)s", {"type": "segments", "text": secret})
    out = stream.getvalue()
    assert secret not in out
    first, second, third = records(stream)
    assert not {"text", "transcript", "segments", "words"} & first.keys()
    assert first["task_id"] == "abcd1234"
    assert "'type': 'done'" in str(second["message"]) and REDACTED in str(second["message"])
    assert third["message"] == f"segments {REDACTED}"


@pytest.mark.usefixtures("root_state")
def test_exceptions_are_one_json_line() -> None:
    stream = capture()
    try:
        raise ValueError("bad thing")
    except ValueError:
        logging.getLogger("frontend.test").exception("failed")
    [line] = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["level"] == "error"
    assert "ValueError: bad thing" in entry["exception"]


@pytest.mark.usefixtures("root_state")
def test_uvicorn_access_log_goes_through_it_with_fields() -> None:
    logging.getLogger("uvicorn.access").addHandler(logging.NullHandler())
    logging.getLogger("uvicorn.access").propagate = False  # what uvicorn's own log config does
    stream = capture()
    logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "POST",
                                             "/v1/audio/transcriptions", "1.1", 200)
    [entry] = records(stream)
    assert entry["logger"] == "uvicorn.access"
    assert entry["method"] == "POST" and entry["status"] == 200 and entry["path"] == "/v1/audio/transcriptions"
    assert entry["message"] == '127.0.0.1:5000 - "POST /v1/audio/transcriptions HTTP/1.1" 200'


@pytest.mark.usefixtures("root_state")
def test_level_and_reconfiguring_do_not_duplicate_lines() -> None:
    capture("debug")
    stream = capture("warning")
    log = logging.getLogger("frontend.test")
    log.info("hidden")
    log.warning("shown")
    assert [e["message"] for e in records(stream)] == ["shown"]
    assert sum(1 for h in logging.getLogger().handlers if h.formatter.__class__ is JsonFormatter) == 1


@pytest.mark.usefixtures("root_state")
def test_text_format_appends_extras() -> None:
    stream = capture(json_lines=False)
    logging.getLogger("frontend.test").info("ready", extra={"task_id": "abcd1234", "text": "secret words"})
    line = stream.getvalue().strip()
    assert line.endswith("INFO frontend.test: ready task_id=abcd1234")
    assert "secret" not in line


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="loud"):
        configure_logging("loud", json=True)


def test_filter_never_drops_records() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m %s", ({"text": "t"},), None)
    record.__dict__["text"] = "t"
    assert TranscriptFilter().filter(record) is True
    assert "text" not in record.__dict__
    assert record.getMessage() == f"m {{'text': '{REDACTED}'}}"
    assert TextFormatter().format(record).endswith("x: m {'text': '[redacted]'}")


@pytest.mark.usefixtures("root_state")
def test_lines_logged_for_a_request_carry_its_key_name_never_the_key() -> None:
    from litestar import Litestar, get
    from litestar.connection import ASGIConnection
    from litestar.handlers import BaseRouteHandler
    from litestar.testing import TestClient

    from frontend.keys import Principal
    from frontend.logs import RequestContext

    def as_alice(connection: ASGIConnection, _: BaseRouteHandler) -> None:  # type: ignore[type-arg]
        connection.state.principal = Principal(key_id="0123456789abcdef", name="alice")

    @get("/mine", sync_to_thread=False, guards=[as_alice])
    def mine() -> str:
        logging.getLogger("frontend.test").info("handled")
        return "ok"

    @get("/open", sync_to_thread=False)
    def open_route() -> str:
        logging.getLogger("frontend.test").info("open")
        return "ok"

    stream = capture()
    app = Litestar(route_handlers=[mine, open_route], middleware=[RequestContext()], logging_config=None)
    with TestClient(app) as client:
        client.get("/mine")
        client.get("/open")
    logging.getLogger("frontend.test").info("outside")
    lines = {str(r["message"]): r for r in records(stream) if r["logger"] == "frontend.test"}
    assert lines["handled"]["key"] == "alice"
    assert "key" not in lines["open"] and "key" not in lines["outside"]
    assert "0123456789abcdef" not in stream.getvalue()
