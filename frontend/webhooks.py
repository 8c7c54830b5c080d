"""Signed webhook delivery for task notifications, with retries and the URL policy of `frontend.net`.

Receivers verify `X-Webhook-Signature: sha256=<hex>`, an HMAC-SHA256 over `"{timestamp}." + body`
with the shared secret, and reject timestamps older than a few minutes (`verify` does both).
Payloads carry transcripts, so only the host and the status are ever logged.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import httpx
import msgspec

from frontend.net import FetchError, UnsafeUrlError, UrlPolicy, check_peer, check_url, parse_url, safe_client

log = logging.getLogger("frontend.webhooks")

TIMESTAMP_HEADER = "X-Webhook-Timestamp"
SIGNATURE_HEADER = "X-Webhook-Signature"
# Custom headers may not replace these: ours, and the ones that frame the request.
RESERVED_HEADERS = frozenset(
    {TIMESTAMP_HEADER.lower(), SIGNATURE_HEADER.lower(), "content-type", "content-length", "host",
     "transfer-encoding", "connection"}
)  # fmt: skip
RETRY_STATUSES = frozenset({408, 429})

DeliveryState = Literal["pending", "delivered", "failed"]


class Delivery(msgspec.Struct, frozen=True):
    """A webhook's delivery state as stored on its task."""

    state: DeliveryState = "pending"
    attempts: int = 0
    last_status: int | None = None
    last_error: str | None = None
    delivered_at: float | None = None


class _Outcome(msgspec.Struct, frozen=True):
    status: int | None
    error: str | None
    retry: bool
    retry_after_s: float | None = None


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def verify(
    secret: bytes,
    timestamp: int | str,
    body: bytes,
    signature_header: str,
    tolerance_s: float = 300,
    now: float | None = None,
) -> bool:
    """True when the signature header matches and the timestamp is within `tolerance_s` of now."""
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        return False
    scheme, _, digest = signature_header.strip().partition("=")
    if scheme != "sha256" or not digest:
        return False
    return hmac.compare_digest(sign(secret, ts, body).encode(), digest.encode())


def signed_headers(secret: bytes, timestamp: int, body: bytes, custom: Mapping[str, str]) -> dict[str, str]:
    headers = {name: value for name, value in custom.items() if name.lower() not in RESERVED_HEADERS}
    headers[TIMESTAMP_HEADER] = str(timestamp)
    headers[SIGNATURE_HEADER] = f"sha256={sign(secret, timestamp, body)}"
    headers["Content-Type"] = "application/json"
    return headers


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None when absent or unreadable."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


async def deliver(
    url: str,
    payload: dict[str, Any],
    headers: dict[str, str],
    secret: bytes,
    policy: UrlPolicy,
    *,
    attempts: int = 5,
    backoff_s: float = 1.0,
    max_backoff_s: float = 60.0,
    timeout_s: float = 10.0,
    on_attempt: Callable[[Delivery], Awaitable[None]] | None = None,
    client: httpx.AsyncClient | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Delivery:
    """POSTs the signed payload until a 2xx, a final failure, or `attempts` tries; returns the final state."""
    try:
        host = parse_url(url).host
        await check_url(url, policy)
    except UnsafeUrlError as exc:
        log.warning("webhook refused: %s", exc)
        return Delivery(state="failed", last_error=str(exc))
    except FetchError:  # a resolution failure now may pass later: the attempts decide
        pass
    body = msgspec.json.encode(payload)
    owned = client is None
    http = safe_client(policy, timeout_s=timeout_s) if client is None else client
    delivery = Delivery()
    try:
        for attempt in range(1, max(attempts, 1) + 1):
            outcome = await _attempt(http, url, body, signed_headers(secret, int(time.time()), body, headers),
                                     policy, timeout_s)  # fmt: skip
            log.info("webhook to %s: attempt %d, %s", host, attempt, outcome.status or outcome.error)
            delivery = _next(delivery, outcome, last=attempt >= attempts)
            if on_attempt is not None:
                await on_attempt(delivery)
            if delivery.state != "pending":
                return delivery
            await sleep(_delay(attempt, outcome, backoff_s, max_backoff_s))
        return delivery
    finally:
        if owned:
            await http.aclose()


async def _attempt(
    client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str], policy: UrlPolicy, timeout_s: float
) -> _Outcome:
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream("POST", url, content=body, headers=headers, follow_redirects=False) as response:
                check_peer(response, policy)
                status = response.status_code
                retry_after = retry_after_s(response.headers.get("retry-after"))
    except UnsafeUrlError as exc:
        return _Outcome(status=None, error=str(exc), retry=False)
    except (TimeoutError, httpx.TimeoutException):
        return _Outcome(status=None, error=f"timed out after {timeout_s:g} s", retry=True)
    except httpx.HTTPError as exc:
        return _Outcome(status=None, error=f"network error: {type(exc).__name__}", retry=True)
    if 200 <= status < 300:
        return _Outcome(status=status, error=None, retry=False)
    retry = status >= 500 or status in RETRY_STATUSES
    return _Outcome(status=status, error=f"HTTP {status}", retry=retry, retry_after_s=retry_after)


def _next(delivery: Delivery, outcome: _Outcome, *, last: bool) -> Delivery:
    attempts = delivery.attempts + 1
    if outcome.error is None:
        return Delivery("delivered", attempts, outcome.status, None, time.time())
    state: DeliveryState = "pending" if outcome.retry and not last else "failed"
    return Delivery(state, attempts, outcome.status, outcome.error, None)


def _delay(attempt: int, outcome: _Outcome, backoff_s: float, max_backoff_s: float) -> float:
    if outcome.retry_after_s is not None:
        return min(outcome.retry_after_s, max_backoff_s)
    return min(backoff_s * 2 ** (attempt - 1), max_backoff_s)
