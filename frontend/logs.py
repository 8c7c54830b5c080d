"""Logging of the frontend: JSON lines (or plain text) on stderr and, with LOG_DIR, in rotated files; never a
transcript.

`configure_logging(level, json, files)` installs one handler on the root logger (and, with `files.dir`, the
files `frontend.log` and `triton.log`, tritonserver's lines in the second); uvicorn's loggers (access log
included) propagate to it when uvicorn runs with `log_config=None`. Lines logged while a request is handled
(uvicorn's access line included) carry its id as `request_id` (the client's `x-request-id` when it is a
plain one, else a new one; sent back on every response) and the name of its API key as `key` (never the key):
`RequestContext` remembers the request, `ContextFilter` reads it and whom the guard identified. A task's lines
carry `task_id` and the `request_id` of the request that created it (`request_context`).
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TextIO

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from whisper_triton.log_files import (
    FRONTEND_FILE,
    REQUEST_ID,
    TRITON_FILE,
    JsonFormatter,
    LogFileSettings,
    TextFormatter,
    formatter,
    log_file,
)

# Keys that carry what was said: never logged, whether passed as `extra=` or inside a logged dict.
TRANSCRIPT_KEYS = frozenset({"text", "transcript", "segments", "words", "delta", "content", "prompt", "messages"})
REDACTED = "[redacted]"
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
REQUEST_ID_HEADER = "x-request-id"
TRITON_LOGGER = "tritonserver"  # the launcher's logger of tritonserver's lines (whisper_triton.launcher)
_STATE_KEY = "request_id"
_FILE_HANDLER = "frontend.logs:file"
# The request being handled in this task (its scope's state, where the guard puts the principal).
_request_state: ContextVar[Mapping[str, Any] | None] = ContextVar("frontend_request_state", default=None)
# The request (or the task, and the request that created it) whose work this task does.
_request_id: ContextVar[str | None] = ContextVar("frontend_request_id", default=None)
_task_id: ContextVar[str | None] = ContextVar("frontend_task_id", default=None)
__all__ = ["JsonFormatter", "TextFormatter"]


def current_request_id() -> str | None:
    """The id of the request (or of the request that created the task) being worked on, if any."""
    return _request_id.get()


@contextmanager
def request_context(request_id: str | None, task_id: str | None = None) -> Iterator[None]:
    """Lines logged inside carry these ids (a task's work, outside any HTTP request)."""
    tokens = (_request_id.set(request_id), _task_id.set(task_id))
    try:
        yield
    finally:
        _request_id.reset(tokens[0])
        _task_id.reset(tokens[1])


def request_id_of(scope: Scope) -> str:
    """The request's id: the client's `x-request-id` when it is 1-128 letters, digits or `._:-`, else a new
    one; decided once per request (kept in its scope's state)."""
    state = scope.setdefault("state", {})
    if _STATE_KEY not in state:
        given = next((value.decode("latin-1").strip() for name, value in scope.get("headers", ())
                      if name.lower() == REQUEST_ID_HEADER.encode()), "")
        state[_STATE_KEY] = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    return str(state[_STATE_KEY])


async def send_request_id(message: Message, scope: Scope) -> None:
    """Litestar's `before_send`: every HTTP response carries the request's id, errors and unknown routes too."""
    if message["type"] == "http.response.start":
        headers = [(n, v) for n, v in message.get("headers", ()) if n.lower() != REQUEST_ID_HEADER.encode()]
        message["headers"] = [*headers, (REQUEST_ID_HEADER.encode(), request_id_of(scope).encode())]


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


class RequestContext(ASGIMiddleware):
    """Remembers the request being handled and its id, for `ContextFilter` and the calls to Triton (the access
    line is logged inside `send`, in the same task)."""

    scopes = (ScopeType.HTTP, ScopeType.WEBSOCKET)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        tokens = (_request_state.set(scope.get("state")), _request_id.set(request_id_of(scope)))
        try:
            await next_app(scope, receive, send)
        finally:
            _request_state.reset(tokens[0])
            _request_id.reset(tokens[1])


class ContextFilter(logging.Filter):
    """Adds `request_id`, `task_id` and `key` (the name of the request's API key) to the lines logged while a
    request or a task is worked on."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in (("request_id", _request_id.get()), ("task_id", _task_id.get())):
            if value is not None and not hasattr(record, name):
                setattr(record, name, value)
        state = _request_state.get()
        principal = state.get("principal") if state is not None else None
        if principal is not None and not hasattr(record, "key"):
            record.key = str(principal.name)
        return True


class _NotTriton(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(TRITON_LOGGER)


class _FrontendHandler(logging.StreamHandler[TextIO]):
    """Marks the handler we installed, so configuring twice replaces it instead of doubling lines."""


def configure_logging(level: str = "info", json: bool = True, files: LogFileSettings | None = None) -> logging.Handler:
    """Installs the frontend's handler on the root logger and routes uvicorn's loggers through it; with
    `files.dir`, also the files `frontend.log` (every line but tritonserver's) and `triton.log` (those)."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"Unknown log level '{level}'.")
    handler = _FrontendHandler(sys.stderr)
    handler.setFormatter(formatter(json))
    root = logging.getLogger()
    triton = logging.getLogger(TRITON_LOGGER)
    for logger in (root, triton):
        for old in [h for h in logger.handlers if isinstance(h, _FrontendHandler) or h.name == _FILE_HANDLER]:
            logger.removeHandler(old)
            old.close()
    frontend_file = _our_file(files, FRONTEND_FILE)
    for installed in (handler, frontend_file):
        if installed is not None:
            # On the handler, not a logger: handler filters also see records propagated from child loggers.
            installed.addFilter(TranscriptFilter())
            installed.addFilter(ContextFilter())
            root.addHandler(installed)
    if frontend_file is not None:
        frontend_file.addFilter(_NotTriton())
    triton_file = _our_file(files, TRITON_FILE)
    if triton_file is not None:
        triton.addHandler(triton_file)
    root.setLevel(numeric)
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)  # the root's level decides (uvicorn's config may have set one)
    return handler


def _our_file(files: LogFileSettings | None, name: str) -> logging.Handler | None:
    handler = log_file(files, name) if files is not None else None
    if handler is not None:
        handler.name = _FILE_HANDLER  # so configuring twice replaces it
    return handler
