"""The HTTP edge of errors: every failure in OpenAI's error shape with the right HTTP status.

Below the routes, code raises domain errors (`whisper_triton.errors`: client faults, not found, conflicts,
unavailable); `api_error` maps them here and only here. Routes raise `APIError` for what only HTTP knows
(a malformed body, a missing key). Client faults are 4xx (with `x-should-retry: false`, so SDKs do not
re-upload the file); 5xx is only for our faults, and 503/429 carry `Retry-After`.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.openapi import ResponseSpec
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_401_UNAUTHORIZED,
    HTTP_404_NOT_FOUND,
    HTTP_409_CONFLICT,
    HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    HTTP_429_TOO_MANY_REQUESTS,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from litestar.types import ExceptionHandlersMap

from frontend.openai.schemas import ErrorDetail, ErrorResponse
from frontend.settings import FrontendSettings
from whisper_triton.errors import ConflictError, NotFoundError, RateLimitError, ServiceError, UnavailableError

log = logging.getLogger("frontend.errors")


class APIError(Exception):
    """An error with its HTTP status and OpenAI `type`/`param`/`code`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retry_after = retry_after


def bad_request(message: str, param: str | None = None, code: str | None = "invalid_value") -> APIError:
    return APIError(HTTP_400_BAD_REQUEST, message, param=param, code=code)


def unauthorized(message: str = "Incorrect API key provided.") -> APIError:
    return APIError(HTTP_401_UNAUTHORIZED, message, code="invalid_api_key")


def too_large(limit: int, param: str = "file") -> APIError:
    return APIError(HTTP_413_REQUEST_ENTITY_TOO_LARGE, f"Maximum content size limit ({limit}) exceeded.", param=param,
                    code="request_too_large")


def overloaded(message: str, retry_after: int = 5, status: int = HTTP_503_SERVICE_UNAVAILABLE,
               code: str = "server_overloaded") -> APIError:
    kind = "rate_limit_error" if status == HTTP_429_TOO_MANY_REQUESTS else "server_error"
    return APIError(status, message, type=kind, code=code, retry_after=retry_after)


def api_error(error: ServiceError, retry_after: int = 5) -> APIError:
    """A domain error as HTTP: its status, OpenAI type and code."""
    if isinstance(error, NotFoundError):
        return APIError(HTTP_404_NOT_FOUND, error.message, param=error.param, code=error.code)
    if isinstance(error, ConflictError):
        return APIError(HTTP_409_CONFLICT, error.message, param=error.param, code=error.code)
    if error.client_fault:
        return APIError(HTTP_400_BAD_REQUEST, error.message, param=error.param, code=error.code)
    if isinstance(error, UnavailableError):
        code = "server_overloaded" if error.code == UnavailableError.code else error.code
        return overloaded(error.message, retry_after=retry_after, code=code)
    return APIError(
        HTTP_500_INTERNAL_SERVER_ERROR, "The server failed to transcribe the audio.", type="server_error",
        code=error.code,
    )


def error_responses(descriptions: dict[int, str]) -> dict[int, ResponseSpec]:
    """OpenAPI responses documenting OpenAI's error body for each status."""
    return {status: ResponseSpec(data_container=ErrorResponse, description=text)
            for status, text in descriptions.items()}


def error_body(error: APIError) -> ErrorResponse:
    return ErrorResponse(ErrorDetail(message=error.message, type=error.type, param=error.param, code=error.code))


def to_response(error: APIError, headers: dict[str, str] | None = None) -> Response[Any]:
    headers = dict(headers or {})
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    if 400 <= error.status < 500 and error.status != HTTP_429_TOO_MANY_REQUESTS:
        headers["x-should-retry"] = "false"
    return Response(content=error_body(error), status_code=error.status, headers=headers,
                    media_type="application/json")


def handle_api_error(_: Request[Any, Any, Any], exc: APIError) -> Response[Any]:
    return to_response(exc)


def handle_service_error(request: Request[Any, Any, Any], exc: ServiceError) -> Response[Any]:
    if isinstance(exc, RateLimitError):
        return rate_limited(exc)
    settings: FrontendSettings | None = request.app.state.get("settings")
    return to_response(api_error(exc, retry_after=settings.retry_after_s if settings else 5))


def rate_limited(error: RateLimitError) -> Response[Any]:
    """429 in OpenAI's shape, with `Retry-After` (whole seconds, at least 1), `retry-after-ms` (which
    OpenAI's SDKs prefer) and the key's `x-ratelimit-*` headers."""
    seconds = max(1, math.ceil(error.retry_after))
    refusal = overloaded(error.message, retry_after=seconds, status=HTTP_429_TOO_MANY_REQUESTS, code=error.code or "")
    refusal.param = error.param
    headers = {**error.headers, "retry-after-ms": str(max(1, round(error.retry_after * 1000)))}
    return to_response(refusal, headers)


_HTTP_CODES = {
    HTTP_400_BAD_REQUEST: "invalid_request",
    HTTP_404_NOT_FOUND: "not_found",
    405: "method_not_allowed",
    HTTP_413_REQUEST_ENTITY_TOO_LARGE: "request_too_large",
}


def handle_http_exception(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    kind = "invalid_request_error" if status < 500 else "server_error"
    message = exc.detail or "Request failed."
    if status == HTTP_413_REQUEST_ENTITY_TOO_LARGE:
        message = "The request body exceeds the maximum upload size."
    elif status == HTTP_400_BAD_REQUEST and exc.extra:
        message = f"{message}: {exc.extra}"
    # Litestar's own headers stay: `Allow` on a 405 (RFC 9110 requires it).
    headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() == "allow"}
    return to_response(APIError(status, message, type=kind, code=_HTTP_CODES.get(status)), headers)


def handle_too_deep(request: Request[Any, Any, Any], exc: RecursionError) -> Response[Any]:
    """JSON (or a form field) nested deeper than the decoder's recursion limit: the client's fault."""
    log.warning("refused a request nested too deeply on %s %r", request.method, request.url.path)
    return to_response(bad_request("The request body is nested too deeply.", code="invalid_json"))


def not_found(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """For routers whose file lookups fail on names no file can have (NUL bytes, over-long names)."""
    return to_response(APIError(HTTP_404_NOT_FOUND, "Not Found", code="not_found"))


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    # %r: the decoded path may hold control characters (CR, LF, NUL) that would forge log lines.
    log.exception("unhandled error on %s %r", request.method, request.url.path)
    return to_response(
        APIError(HTTP_500_INTERNAL_SERVER_ERROR, "Internal server error.", type="server_error", code=None)
    )


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    APIError: handle_api_error,
    ServiceError: handle_service_error,
    HTTPException: handle_http_exception,
    RecursionError: handle_too_deep,
    Exception: handle_unexpected,
}
