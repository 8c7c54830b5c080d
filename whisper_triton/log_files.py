"""Log lines and log files, shared by the frontend and the Triton launcher (no web framework imported here).

One line format for every process: JSON objects (time, level, logger, message, then the record's extra
fields such as `request_id`) or plain text. With `LOG_DIR` set, each process also writes its own file there
(`frontend.log`, `triton.log`), rotated by size and by age, `LOG_BACKUPS` old files kept
(`frontend.log.1` is the newest); the console keeps every line. `GET /v1/logs` (frontend.log_search) reads them.

Tritonserver's own lines (`I1205 08:02:16.123456 42 pb_stub.cc:123] message`) are read by `triton_line`: their
level, and the request id the Triton models put in their messages (`[request_id=...]`, `tagged`).
"""

from __future__ import annotations

import faulthandler
import logging
import os
import re
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from whisper_triton.settings import SettingsError, load_settings

FRONTEND_FILE = "frontend.log"
TRITON_FILE = "triton.log"
LOG_FORMATS = ("json", "text")
# A request id: what x-request-id may carry, and what Triton's lines are searched for.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_TAG = re.compile(rf"\[request_id=({REQUEST_ID.pattern})\]")
# Triton's prefix: severity, month and day, time, thread, source location.
_TRITON = re.compile(r"^([IWEV])\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ [^\]]*\] ?(.*)$")
_TRITON_LEVELS = {"I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR, "V": logging.DEBUG}
# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")
_encoder = msgspec.json.Encoder(enc_hook=repr)


class LogFileSettings(msgspec.Struct, frozen=True):
    dir: str = ""  # empty: the console only
    format: str = "json"
    max_bytes: int = 10 * 1024 * 1024
    max_age_h: float = 24.0
    backups: int = 10


# What each LOG_* setting means (docs/configuration.md is generated from these: `python -m harness.docs`).
LOG_SETTINGS_HELP = {
    "dir": "folder of the log files (`frontend.log`, `triton.log` and their rotated copies), served to the admin "
           "key by `GET /v1/logs`; empty = the console only. Docker: one volume shared by the frontend's and Triton's "
           "containers, set in both",
    "format": "`json` (one object a line) or `text`; the console follows `FRONTEND_LOG_JSON`",
    "max_bytes": "a log file is rotated when it would grow past this size",
    "max_age_h": "a log file is also rotated when its first line is older than this many hours; 0 = no age limit",
    "backups": "rotated files kept per log (`frontend.log.1` is the newest)",
}


def log_file_settings(environ: dict[str, str] | None = None) -> LogFileSettings:
    settings = load_settings(LogFileSettings, "LOG_", os.environ if environ is None else environ)
    if settings.format not in LOG_FORMATS:
        raise SettingsError(f"Invalid value for LOG_FORMAT: use one of {', '.join(LOG_FORMATS)}.")
    if settings.max_bytes <= 0 or settings.backups <= 0 or settings.max_age_h < 0:
        raise SettingsError("Invalid value for LOG_MAX_BYTES, LOG_BACKUPS or LOG_MAX_AGE_H: sizes and counts must be "
                            "positive, the age 0 or more.")
    return settings


def trace_fatal_signals() -> None:
    """On a crash of this process (SIGSEGV, SIGFPE, SIGABRT, SIGBUS, SIGILL), the Python traceback of every thread
    on stderr: in a Triton model process, Triton's log (`triton.log`). The stub embeds Python in isolated mode,
    which ignores PYTHONFAULTHANDLER, so each model turns it on here, and off again in `finalize`
    (`untrace_fatal_signals`)."""
    faulthandler.enable(all_threads=True)


def untrace_fatal_signals() -> None:
    """Stops `trace_fatal_signals`, once a model is finalized: Triton 2.51's stub then dies of SIGSEGV in its own
    teardown (its shared memory is gone when the interpreter's last objects are freed), which is no crash of
    ours and is not to read as one in the log."""
    faulthandler.disable()


def tagged(request_id: str, message: str) -> str:
    """A Triton model's log message about one request: `[request_id=<id>] message` (the id as Triton got it)."""
    return f"[request_id={request_id}] {message}" if request_id else message


def engine_request_id(request_id: str) -> str:
    """The id a request's windows carry at the engine: its Triton request id, made unique (clients may send
    one x-request-id twice, and cancelling one request must not drop the other's windows)."""
    return f"{request_id}/{uuid.uuid4().hex[:12]}"


def logged_request_id(engine_id: str | None) -> str:
    """The request id in an engine id (`engine_request_id`), for the engine's log lines."""
    return (engine_id or "").partition("/")[0]


def triton_line(text: str, previous: tuple[int, str | None]) -> tuple[int, str | None]:
    """The level and request id of one line of tritonserver's output; a line without Triton's prefix (the rest
    of a multi-line message, a traceback) continues the previous one: its level and request id."""
    match = _TRITON.match(text)
    if match is None:
        return previous
    tag = _TAG.search(match.group(2))
    return _TRITON_LEVELS[match.group(1)], tag.group(1) if tag else None


def log_triton_lines(lines: Iterable[bytes], logger: logging.Logger, echo: BinaryIO | None = None) -> None:
    """Tritonserver's output through `logger`, each line at its level and with the request id the models tag
    it with (`triton_line`); with `echo`, each line is first written there as it came (a console that fails
    stops the echo, never the reading: a pipe left unread would block tritonserver)."""
    context: tuple[int, str | None] = (logging.INFO, None)
    for line in lines:
        if echo is not None:
            try:
                echo.write(line)
                echo.flush()
            except (OSError, ValueError):
                echo = None
        text = line.decode("utf-8", errors="replace").rstrip()
        if text:
            context = triton_line(text, context)
            level, request_id = context
            logger.log(level, "%s", text, extra={"request_id": request_id} if request_id else None)


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}
    fields.pop("color_message", None)  # uvicorn's message again, with terminal colours
    if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
        fields |= dict(zip(ACCESS_FIELDS, record.args, strict=True))
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _encoder.encode(entry).decode()


class TextFormatter(logging.Formatter):
    """`<time> <LEVEL> <logger>: <message>`, extra fields appended as key=value; times in UTC, ISO 8601."""

    converter = staticmethod(time.gmtime)

    def __init__(self) -> None:
        super().__init__("%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s", datefmt="%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {k: v for k, v in extra_fields(record).items() if k not in ACCESS_FIELDS}
        return " ".join([line, *(f"{k}={v}" for k, v in fields.items())]) if fields else line


def formatter(json: bool) -> logging.Formatter:
    return JsonFormatter() if json else TextFormatter()


class RotatingLogFile(RotatingFileHandler):
    """A log file rotated when it would pass `max_bytes` or when its first line is older than `max_age_s`
    (a file found at start counts from its last change)."""

    def __init__(self, path: Path, max_bytes: int, backups: int, max_age_s: float = 0.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True)
        self.max_age_s = max_age_s
        self.started = path.stat().st_mtime if path.exists() and path.stat().st_size else time.time()

    def shouldRollover(self, record: logging.LogRecord) -> int:
        if self.max_age_s and time.time() - self.started >= self.max_age_s:
            path = Path(self.baseFilename)
            if path.exists() and path.stat().st_size:
                return 1
        return super().shouldRollover(record)

    def doRollover(self) -> None:
        super().doRollover()
        self.started = time.time()


def log_file(settings: LogFileSettings, name: str,
             kind: type[RotatingLogFile] = RotatingLogFile) -> RotatingLogFile | None:
    """The rotated file `name` in LOG_DIR with the configured format, or None without LOG_DIR."""
    if not settings.dir:
        return None
    handler = kind(Path(settings.dir).expanduser() / name, settings.max_bytes, settings.backups,
                   settings.max_age_h * 3600)
    handler.setFormatter(formatter(settings.format == "json"))
    return handler
