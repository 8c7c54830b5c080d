"""Log files: rotation by size and by age, Triton's lines, the request and task ids on lines, and the search
behind GET /v1/logs (filters, rotated files in order, the newest lines only, both formats, file names)."""

from __future__ import annotations

import io
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from frontend.log_search import LogQuery, find_file, list_files, parse_line, parse_time, search
from frontend.logs import configure_logging, request_context
from whisper_triton.log_files import (
    JsonFormatter,
    LogFileSettings,
    RotatingLogFile,
    TextFormatter,
    engine_request_id,
    log_file_settings,
    logged_request_id,
    tagged,
    triton_line,
)
from whisper_triton.settings import SettingsError


def record(message: str, level: int = logging.INFO, created: float | None = None, **extra: object) -> logging.LogRecord:
    entry = logging.LogRecord("frontend.test", level, "", 0, message, None, None)
    if created is not None:
        entry.created = created
    entry.__dict__.update(extra)
    return entry


def test_a_file_rolls_over_at_its_size_and_keeps_the_configured_number(tmp_path: Path) -> None:
    handler = RotatingLogFile(tmp_path / "frontend.log", max_bytes=300, backups=2)
    handler.setFormatter(JsonFormatter())
    for number in range(40):
        handler.emit(record(f"line {number:02d}"))
    handler.close()
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == ["frontend.log", "frontend.log.1", "frontend.log.2"]
    assert all(path.stat().st_size <= 300 for path in tmp_path.iterdir())
    assert "line 39" in (tmp_path / "frontend.log").read_text()


def test_a_file_rolls_over_when_its_first_line_is_too_old(tmp_path: Path) -> None:
    handler = RotatingLogFile(tmp_path / "triton.log", max_bytes=10**6, backups=3, max_age_s=3600)
    handler.setFormatter(JsonFormatter())
    handler.emit(record("yesterday"))
    handler.emit(record("still the same file"))
    assert not (tmp_path / "triton.log.1").exists()
    handler.started = time.time() - 3601
    handler.emit(record("today"))
    handler.close()
    assert "yesterday" in (tmp_path / "triton.log.1").read_text()
    assert "today" in (tmp_path / "triton.log").read_text() and "yesterday" not in (tmp_path / "triton.log").read_text()


def test_without_an_age_limit_only_the_size_rolls(tmp_path: Path) -> None:
    handler = RotatingLogFile(tmp_path / "triton.log", max_bytes=10**6, backups=3, max_age_s=0)
    handler.emit(record("old"))
    handler.started = 0.0
    handler.emit(record("new"))
    handler.close()
    assert [p.name for p in tmp_path.iterdir()] == ["triton.log"]


def test_a_file_found_at_start_counts_its_age_from_its_last_change(tmp_path: Path) -> None:
    old = tmp_path / "frontend.log"
    old.write_text('{"time": "2020-01-01T00:00:00+00:00", "level": "info", "message": "old"}\n')
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    handler = RotatingLogFile(old, max_bytes=10**6, backups=3, max_age_s=3600)
    handler.emit(record("new"))
    handler.close()
    assert "old" in (tmp_path / "frontend.log.1").read_text()


@pytest.mark.parametrize("variable, value", [("LOG_FORMAT", "xml"), ("LOG_MAX_BYTES", "0"), ("LOG_BACKUPS", "-1"),
                                             ("LOG_MAX_AGE_H", "-2"), ("LOG_MAX_BYTES", "big")])
def test_bad_settings_fail_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        log_file_settings({"LOG_DIR": "/tmp/x", variable: value})


def test_settings_from_the_environment() -> None:
    settings = log_file_settings({"LOG_DIR": "/var/log/w", "LOG_MAX_BYTES": "1000", "LOG_MAX_AGE_H": "1.5",
                                  "LOG_BACKUPS": "3", "LOG_FORMAT": "text"})
    assert settings == LogFileSettings(dir="/var/log/w", format="text", max_bytes=1000, max_age_h=1.5, backups=3)


def test_triton_lines_give_their_level_and_request_id_and_continuations_inherit_them() -> None:
    start = (logging.INFO, None)
    error = triton_line('E1205 08:02:16.123456 4242 pb_stub.cc:123] "[request_id=req-1] whisper: request failed: '
                        'Traceback (most recent call last):', start)
    assert error == (logging.ERROR, "req-1")
    assert triton_line('  File "model.py", line 3, in _respond', error) == error
    assert triton_line("I1205 08:02:17.000001 4242 server.cc:1] started", error) == (logging.INFO, None)
    assert triton_line("W1205 08:02:17.000001 1 model.py:1] x", start)[0] == logging.WARNING
    assert triton_line("V1205 08:02:17.000001 1 model.py:1] x", start)[0] == logging.DEBUG


def test_engine_ids_are_unique_and_name_their_request() -> None:
    first, second = engine_request_id("abc"), engine_request_id("abc")
    assert first != second and logged_request_id(first) == logged_request_id(second) == "abc"
    assert logged_request_id(None) == "" and tagged("abc", "m") == "[request_id=abc] m" and tagged("", "m") == "m"


@pytest.fixture
def logging_to(tmp_path: Path) -> Iterator[Path]:
    """configure_logging with LOG_DIR=tmp_path (console to a buffer); the loggers put back afterwards."""
    root, triton = logging.getLogger(), logging.getLogger("tritonserver")
    saved = (root.level, list(root.handlers), list(triton.handlers))
    handler = configure_logging("debug", json=True, files=LogFileSettings(dir=str(tmp_path)))
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(io.StringIO())
    yield tmp_path
    for installed in [*root.handlers, *triton.handlers]:
        installed.close()
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    triton.handlers[:] = saved[2]


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_each_source_has_its_file_with_the_ids_of_the_request_or_task(logging_to: Path) -> None:
    with request_context("req-7", "task-9"):
        logging.getLogger("frontend.tasks").info("task started", extra={"text": "secret words"})
    logging.getLogger("tritonserver").error("E1205 ...] [request_id=req-7] failed", extra={"request_id": "req-7"})
    [frontend] = lines(logging_to / "frontend.log")
    assert frontend["request_id"] == "req-7" and frontend["task_id"] == "task-9" and "text" not in frontend
    [triton] = lines(logging_to / "triton.log")
    assert triton["request_id"] == "req-7" and triton["level"] == "error" and triton["logger"] == "tritonserver"


def write(path: Path, *entries: tuple[float, str, str, dict[str, str]]) -> None:
    with path.open("a") as handle:
        for created, level, message, extra in entries:
            entry = record(message, logging.getLevelName(level.upper()), created, **extra)
            handle.write(JsonFormatter().format(entry) + "\n")


def found(folder: Path, **query: object) -> list[dict[str, object]]:
    return [json.loads(line) for line in search(folder, LogQuery(**query))]  # type: ignore[arg-type]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Two sources, the frontend's rotated once: request r1 at t=100-103, r2 at t=200-201."""
    write(tmp_path / "frontend.log.1", (100, "info", "r1 in", {"request_id": "r1"}),
          (103, "warning", "r1 out 500", {"request_id": "r1"}))
    write(tmp_path / "frontend.log", (200, "info", "r2 in", {"request_id": "r2", "task_id": "t2"}),
          (201, "debug", "r2 detail", {"request_id": "r2"}))
    write(tmp_path / "triton.log", (101, "info", "r1 started", {"request_id": "r1"}),
          (102, "error", "r1 failed", {"request_id": "r1"}), (200.5, "info", "r2 started", {"request_id": "r2"}))
    for name, when in (("frontend.log.1", 103), ("frontend.log", 201), ("triton.log", 200.5)):
        os.utime(tmp_path / name, (when, when))
    return tmp_path


def test_one_request_is_followed_through_both_sources_in_time_order(folder: Path) -> None:
    entries = found(folder, request_id="r1")
    assert [e["message"] for e in entries] == ["r1 in", "r1 started", "r1 failed", "r1 out 500"]
    assert [e["source"] for e in entries] == ["frontend", "triton", "triton", "frontend"]
    assert entries[0]["file"] == "frontend.log.1"


def test_filters_by_level_time_task_source_and_the_newest_lines_within_the_limit(folder: Path) -> None:
    assert [e["message"] for e in found(folder, level=logging.WARNING)] == ["r1 failed", "r1 out 500"]
    assert [e["message"] for e in found(folder, since=150.0)] == ["r2 in", "r2 started", "r2 detail"]
    assert [e["message"] for e in found(folder, until=101.5)] == ["r1 in", "r1 started"]
    assert [e["message"] for e in found(folder, task_id="t2")] == ["r2 in"]
    assert [e["message"] for e in found(folder, source="triton")] == ["r1 started", "r1 failed", "r2 started"]
    assert [e["message"] for e in found(folder, limit=2)] == ["r2 started", "r2 detail"]


def test_files_older_than_since_are_not_opened(folder: Path) -> None:
    write(folder / "frontend.log.1", (300, "info", "written after its last change?", {}))
    os.utime(folder / "frontend.log.1", (103, 103))  # its mtime says: nothing after t=103 in it
    assert [e["message"] for e in found(folder, since=150.0, source="frontend")] == ["r2 in", "r2 detail"]


def test_text_lines_are_read_with_their_ids_and_tracebacks(tmp_path: Path) -> None:
    formatter = TextFormatter()
    failure = record("request failed", logging.ERROR, 100.0, request_id="r9")
    text = formatter.format(failure) + "\nTraceback (most recent call last):\n  boom\n"
    (tmp_path / "frontend.log").write_text(text + formatter.format(record("next", created=101.0)) + "\n")
    entries = found(tmp_path)
    assert entries[0]["request_id"] == "r9" and entries[0]["level"] == "error"
    assert str(entries[0]["message"]).endswith("Traceback (most recent call last):\n  boom")
    assert entries[1]["message"] == "next" and [e["message"] for e in found(tmp_path, request_id="r9")] == [
        entries[0]["message"]]


def test_lines_that_are_no_log_lines_are_skipped() -> None:
    assert parse_line(b"{not json\n") is None and parse_line(b'{"no": "time"}\n') is None
    assert parse_line(b"garbage\n") is None


def test_times_are_iso_8601_or_unix_seconds() -> None:
    assert parse_time("1700000000") == 1700000000.0
    assert parse_time("2023-11-14T22:13:20Z") == parse_time("2023-11-14T22:13:20+00:00") == 1700000000.0
    assert parse_time("2023-11-14T22:13:20") == 1700000000.0  # UTC unless said otherwise
    with pytest.raises(ValueError):
        parse_time("yesterday")


def test_only_listed_files_can_be_named(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    outside = tmp_path_factory.mktemp("outside") / "secret.log"
    outside.write_text("secret")
    (folder / "triton.log.2").symlink_to(outside)
    (folder / "notes.txt").write_text("x")
    assert [f.name for f in list_files(folder)] == ["frontend.log.1", "frontend.log", "triton.log"]
    assert find_file(folder, "frontend.log.1") == folder / "frontend.log.1"
    for name in ("triton.log.2", "../outside/secret.log", str(outside), "notes.txt", "frontend.log/..", "",
                 "frontend.log\x00"):
        assert find_file(folder, name) is None
    assert list_files(folder / "missing") == []
