"""Logging of the frontend: JSON lines (or plain text) on stderr, never a transcript.

`configure_logging(level, json)` installs one handler on the root logger; uvicorn's loggers
(access log included) propagate to it when uvicorn runs with `log_config=None`. Lines logged while a
request is handled (uvicorn's access line included) carry the name of its API key as `key` (never the
key): `KeyNameMiddleware` remembers the request, `KeyNameFilter` reads whom the guard identified.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

import msgspec
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

# Keys that carry what was said: never logged, whether passed as `extra=` or inside a logged dict.
TRANSCRIPT_KEYS = frozenset({"text", "transcript", "segments", "words", "delta", "content", "prompt", "messages"})
REDACTED = "[redacted]"
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")
_encoder = msgspec.json.Encoder(enc_hook=repr)
# The request being handled in this task (its scope's state, where the guard puts the principal).
_request_state: ContextVar[Mapping[str, Any] | None] = ContextVar("frontend_request_state", default=None)


def short_id(task_id: str) -> str:
    """The first 8 characters of a request or task id: enough to grep, short enough to read."""
    return task_id[:8]


def _redact(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: REDACTED if k in TRANSCRIPT_KEYS else _redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_redact(v) for v in value)
    return value


class TranscriptFilter(logging.Filter):
    """Drops transcript-bearing extras and blanks them inside logged dicts; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key in TRANSCRIPT_KEYS & record.__dict__.keys():
            del record.__dict__[key]
        if isinstance(record.args, Mapping):
            record.args = _redact(record.args)
        elif isinstance(record.args, tuple):
            record.args = tuple(_redact(arg) for arg in record.args)
        return True


class KeyNameMiddleware(ASGIMiddleware):
    """Remembers the request being handled, for `KeyNameFilter` (the access line is logged inside `send`,
    in the same task)."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        token = _request_state.set(scope.get("state"))
        try:
            await next_app(scope, receive, send)
        finally:
            _request_state.reset(token)


class KeyNameFilter(logging.Filter):
    """Adds `key`, the name of the request's API key, to the lines logged while it is handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        state = _request_state.get()
        principal = state.get("principal") if state is not None else None
        if principal is not None and not hasattr(record, "key"):
            record.key = str(principal.name)
        return True


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}
    fields.pop("color_message", None)  # uvicorn's message again, with terminal colours
    if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
        fields |= dict(zip(_ACCESS_FIELDS, record.args, strict=True))
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
    """The plain format the frontend always had, with extra fields appended as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {k: v for k, v in extra_fields(record).items() if k not in _ACCESS_FIELDS}
        return " ".join([line, *(f"{k}={v}" for k, v in fields.items())]) if fields else line


class _FrontendHandler(logging.StreamHandler[TextIO]):
    """Marks the handler we installed, so configuring twice replaces it instead of doubling lines."""


def configure_logging(level: str = "info", json: bool = True) -> logging.Handler:
    """Installs the frontend's handler on the root logger and routes uvicorn's loggers through it."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"Unknown log level '{level}'.")
    handler = _FrontendHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    # On the handler, not a logger: handler filters also see records propagated from child loggers.
    handler.addFilter(TranscriptFilter())
    handler.addFilter(KeyNameFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _FrontendHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)  # the root's level decides (uvicorn's config may have set one)
    return handler
