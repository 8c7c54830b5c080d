"""Domain errors shared by the Triton models and the frontend.

Errors cross the gRPC boundary as text (errors on a decoupled stream carry no status code), so
each error is sent as ``[code] message`` and parsed back on the other side.
"""

from __future__ import annotations

import re


class ServiceError(Exception):
    """Base of the errors the service reports to clients."""

    code = "internal_error"
    client_fault = False

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:  # a more specific code than the class's (e.g. task_not_found)
            self.code = code

    def to_wire(self) -> str:
        param = f"({self.param})" if self.param else ""
        return f"[{self.code}{param}] {self.message}"


class InvalidRequestError(ServiceError):
    """A request parameter is missing, malformed or out of range."""

    code = "invalid_value"
    client_fault = True


class InvalidAudioError(InvalidRequestError):
    """The audio cannot be decoded, is empty, too short or too long."""

    code = "invalid_audio"

    def __init__(self, message: str, param: str | None = "file") -> None:
        super().__init__(message, param)


class AudioTooShortError(InvalidAudioError):
    """Less audio than Whisper can transcribe (OpenAI's minimum is 0.1 s)."""

    code = "audio_too_short"


class NotFoundError(InvalidRequestError):
    """The request names something that does not exist (a model, a task, a stored speaker)."""

    code = "not_found"


class ConflictError(InvalidRequestError):
    """The request contradicts what exists (a name or an id already taken, a task that already ended)."""

    code = "conflict"


class FetchFailedError(InvalidRequestError):
    """The audio URL of a task could not be fetched (status, size, timeout, address refused)."""

    code = "fetch_failed"


class EngineError(ServiceError):
    """The Whisper engine failed on input that was valid."""

    code = "engine_error"


class UnavailableError(ServiceError):
    """Retrying shortly helps: a model the request needs is down for a moment (its process died and is being
    restarted), the inference server or the database cannot be reached, or the service is busy."""

    code = "unavailable"


class RateLimitError(ServiceError):
    """One API key is over one of its own limits (requests per minute, audio seconds, concurrent
    transcriptions, queued tasks): that key waits `retry_after` seconds; other keys are not affected.

    `limit` names what was exceeded (`requests`, `audio_seconds`, ...); `headers` are the
    `x-ratelimit-*` headers to send with the refusal (OpenAI's names where OpenAI has one)."""

    code = "rate_limit_exceeded"

    def __init__(self, message: str, retry_after: float, limit: str = "requests",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.retry_after = max(0.0, retry_after)
        self.limit = limit
        self.headers = dict(headers or {})


# What Triton says about a model whose process died, or that is being loaded again, or about a server it
# cannot reach.
_UNAVAILABLE = ("not healthy", "not ready", "unavailable", "unknown model", "is not found", "failed to connect")


def is_unavailable(message: str) -> bool:
    """Whether a Triton error message says the server or a model cannot answer for now (retry later)."""
    lowered = message.lower()
    return any(words in lowered for words in _UNAVAILABLE)


_WIRE = re.compile(r"\[(?P<code>[a-z_]+)(?:\((?P<param>[^)]*)\))?\] (?P<message>.*)$", re.S)
_BY_CODE: dict[str, type[ServiceError]] = {
    cls.code: cls
    for cls in (InvalidRequestError, InvalidAudioError, AudioTooShortError, FetchFailedError, EngineError,
                UnavailableError, NotFoundError, ConflictError)
}


def is_client_fault(code: str | None) -> bool:
    """Whether an error code (as stored on a failed task) is the client's fault."""
    cls = _BY_CODE.get(code or "")
    return cls is not None and cls.client_fault


def from_wire(text: str) -> ServiceError:
    """Rebuilds the error sent by `ServiceError.to_wire`, tolerating prefixes added by Triton."""
    match = _WIRE.search(text)
    if not match:
        return ServiceError(text)
    cls = _BY_CODE.get(match["code"], ServiceError)
    error = cls.__new__(cls)
    ServiceError.__init__(error, match["message"], match["param"] or None)
    return error
