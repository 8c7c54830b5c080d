"""Webhook signing and delivery against a real local receiver (sleeps injected, so no waiting)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Iterator

import msgspec
import pytest

from frontend.net import UrlPolicy
from frontend.webhooks import Delivery, deliver, retry_after_s, sign, signed_headers, verify
from tests.unit.test_net import Reply, serving

SECRET = b"whsec_test"
PAYLOAD = {"id": "task_123", "status": "completed", "text": "the secret transcript"}
OPEN = UrlPolicy(allow_private=True)


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def scripted(*replies: Reply) -> Iterator[Reply]:
    return iter(replies)


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET, b"1700000000.{}", hashlib.sha256).hexdigest()
    assert sign(SECRET, 1700000000, b"{}") == expected


def test_verify_round_trip_and_rejections() -> None:
    ts, body = 1_700_000_000, b'{"text":"hi"}'
    header = f"sha256={sign(SECRET, ts, body)}"
    assert verify(SECRET, ts, body, header, now=ts + 10)
    assert verify(SECRET, str(ts), body, header, now=ts - 10)
    assert not verify(SECRET, ts, body + b" ", header, now=ts)  # tampered body
    assert not verify(b"other", ts, body, header, now=ts)  # wrong secret
    assert not verify(SECRET, ts + 1, body, header, now=ts)  # tampered timestamp
    assert not verify(SECRET, ts, body, header, now=ts + 301)  # too old
    assert not verify(SECRET, ts, body, header, now=ts - 301)  # too far ahead
    assert verify(SECRET, ts, body, header, tolerance_s=600, now=ts + 301)
    assert not verify(SECRET, ts, body, sign(SECRET, ts, body), now=ts)  # no scheme prefix
    assert not verify(SECRET, ts, body, "sha1=" + sign(SECRET, ts, body), now=ts)
    assert not verify(SECRET, "soon", body, header, now=ts)


def test_custom_headers_cannot_override_signature_headers() -> None:
    custom = {"X-Task-Id": "task_123", "x-webhook-signature": "sha256=forged", "X-Webhook-Timestamp": "1",
              "content-type": "text/plain", "Host": "evil.example"}  # fmt: skip
    headers = signed_headers(SECRET, 42, b"{}", custom)
    signature = f"sha256={sign(SECRET, 42, b'{}')}"
    assert headers == {"X-Task-Id": "task_123", "X-Webhook-Timestamp": "42", "X-Webhook-Signature": signature,
                       "Content-Type": "application/json"}  # fmt: skip


def test_retry_after_parsing() -> None:
    assert retry_after_s("7") == 7.0
    assert retry_after_s("Thu, 01 Jan 2099 00:00:00 GMT", now=4070908790.0) == pytest.approx(10.0)
    assert retry_after_s("soon") is None
    assert retry_after_s(None) is None


async def test_delivery_retries_503_then_succeeds(caplog: pytest.LogCaptureFixture) -> None:
    replies = scripted(Reply(503), Reply(503), Reply(204))
    progress: list[Delivery] = []
    sleeps = Sleeps()

    async def record(delivery: Delivery) -> None:
        progress.append(delivery)

    caplog.set_level(logging.DEBUG)
    async with serving(lambda _: next(replies)) as server:
        custom = {"X-Task-Id": "task_123", "X-Webhook-Signature": "sha256=forged"}
        before = time.time()
        result = await deliver(f"{server.url}/hook", PAYLOAD, custom, SECRET, OPEN, on_attempt=record, sleep=sleeps)

    assert (result.state, result.attempts, result.last_status, result.last_error) == ("delivered", 3, 204, None)
    assert result.delivered_at is not None and result.delivered_at >= before
    assert [(d.state, d.attempts, d.last_status) for d in progress] == [
        ("pending", 1, 503), ("pending", 2, 503), ("delivered", 3, 204)]  # fmt: skip
    assert sleeps.delays == [1.0, 2.0]
    assert len(server.requests) == 3
    for request in server.requests:
        assert (request.method, request.path) == ("POST", "/hook")
        assert request.headers["x-task-id"] == "task_123"
        assert request.headers["content-type"] == "application/json"
        signature = request.headers["x-webhook-signature"]
        assert verify(SECRET, request.headers["x-webhook-timestamp"], request.body, signature)
        assert msgspec.json.decode(request.body) == PAYLOAD
    assert "the secret transcript" not in caplog.text
    assert "127.0.0.1" in caplog.text


async def test_client_error_fails_without_retry() -> None:
    sleeps = Sleeps()
    async with serving(lambda _: Reply(400, b"bad")) as server:
        result = await deliver(f"{server.url}/hook", PAYLOAD, {}, SECRET, OPEN, sleep=sleeps)
    assert (result.state, result.attempts, result.last_status) == ("failed", 1, 400)
    assert result.last_error == "HTTP 400" and result.delivered_at is None
    assert len(server.requests) == 1 and sleeps.delays == []


async def test_server_errors_exhaust_the_attempts_with_capped_backoff() -> None:
    sleeps = Sleeps()
    async with serving(lambda _: Reply(500)) as server:
        result = await deliver(f"{server.url}/h", PAYLOAD, {}, SECRET, OPEN, attempts=4, backoff_s=10.0,
                               max_backoff_s=25.0, sleep=sleeps)  # fmt: skip
    assert (result.state, result.attempts, result.last_status) == ("failed", 4, 500)
    assert sleeps.delays == [10.0, 20.0, 25.0]
    assert len(server.requests) == 4


async def test_retry_after_is_honoured_up_to_the_cap() -> None:
    replies = scripted(Reply(429, headers={"Retry-After": "7"}), Reply(408, headers={"Retry-After": "500"}), Reply(200))
    sleeps = Sleeps()
    async with serving(lambda _: next(replies)) as server:
        result = await deliver(f"{server.url}/h", PAYLOAD, {}, SECRET, OPEN, max_backoff_s=60.0, sleep=sleeps)
    assert (result.state, result.attempts) == ("delivered", 3)
    assert sleeps.delays == [7.0, 60.0]


async def test_redirect_is_not_followed() -> None:
    async with serving(lambda _: Reply(302, headers={"Location": "/elsewhere"})) as server:
        result = await deliver(f"{server.url}/h", PAYLOAD, {}, SECRET, OPEN, sleep=Sleeps())
    assert (result.state, result.attempts, result.last_status) == ("failed", 1, 302)
    assert [r.path for r in server.requests] == ["/h"]


@pytest.mark.parametrize("policy", [UrlPolicy(), None])
async def test_unsafe_target_is_refused_without_a_request(policy: UrlPolicy | None) -> None:
    progress: list[Delivery] = []

    async def record(delivery: Delivery) -> None:
        progress.append(delivery)

    async with serving(lambda _: Reply(200)) as server:
        url = f"{server.url}/hook" if policy else "file:///etc/passwd"
        result = await deliver(url, PAYLOAD, {}, SECRET, policy or OPEN, on_attempt=record, sleep=Sleeps())
    assert (result.state, result.attempts, result.last_status) == ("failed", 0, None)
    assert result.last_error
    assert server.requests == [] and progress == []


async def test_network_errors_are_retried() -> None:
    async with serving(lambda _: Reply(200)) as server:
        closed = server.url  # the port is free again once the server stops
    sleeps = Sleeps()
    result = await deliver(f"{closed}/h", PAYLOAD, {}, SECRET, OPEN, attempts=3, sleep=sleeps)
    assert (result.state, result.attempts, result.last_status) == ("failed", 3, None)
    assert result.last_error is not None and "network error" in result.last_error
    assert sleeps.delays == [1.0, 2.0]


async def test_slow_receiver_times_out_and_is_retried() -> None:
    replies = scripted(Reply(200, delay_s=5.0), Reply(200))
    async with serving(lambda _: next(replies)) as server:
        result = await deliver(f"{server.url}/h", PAYLOAD, {}, SECRET, OPEN, timeout_s=0.2, sleep=Sleeps())
    assert (result.state, result.attempts) == ("delivered", 2)
    assert len(server.requests) == 2
