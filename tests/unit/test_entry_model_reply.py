"""The entry model's `Reply`: once a request's final response is sent, Triton may release the request, so the
request is never asked again whether it was cancelled (tritonserver would read a freed request) and nothing more
is sent for it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class FakeSender:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []

    def send(self, response: str, flags: int = 0) -> None:
        self.sent.append((response, flags))


class FakeRequest:
    def __init__(self) -> None:
        self.sender = FakeSender()
        self.asked = 0

    def get_response_sender(self) -> FakeSender:
        return self.sender

    def is_cancelled(self) -> bool:
        self.asked += 1
        return False


def test_a_finished_request_is_not_asked_about_cancellation_again(triton_model: Callable[[str], Any]) -> None:
    entry = triton_model("whisper")
    request = FakeRequest()
    reply = entry.Reply(request)
    reply.send("segment")
    assert not reply.is_cancelled() and request.asked == 1  # still running: Triton is asked
    reply.send("done", final=True)
    reply.send("cancelled", final=True)  # e.g. the cancel path racing the end: dropped
    assert not reply.is_cancelled() and request.asked == 1
    assert request.sender.sent == [("segment", 0), ("done", entry.FINAL)]
