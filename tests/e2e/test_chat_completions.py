"""Chat completions with audio input, through the openai SDK, and `/metrics`, on the served Triton.

The served process does not mount the chat controller and the metrics plugin yet, so a second
frontend (`create_app`, with them added) runs in this process on the served Triton.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.assets import JFK_TEXT, jfk_wav
from harness.stack import Served, run_frontend
from harness.text import normalize, wer


@pytest.fixture(scope="module")
def base_url(served: Served) -> Iterator[str]:
    with run_frontend(served) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def jfk_b64() -> str:
    return base64.b64encode(jfk_wav().read_bytes()).decode()


def user(*parts: dict[str, Any]) -> list[Any]:
    return [{"role": "user", "content": [{"type": "text", "text": "Transcribe this"}, *parts]}]


def audio_part(data: str, fmt: str = "wav") -> dict[str, Any]:
    return {"type": "input_audio", "input_audio": {"data": data, "format": fmt}}


def test_transcript_is_the_assistant_message(client: openai.OpenAI, jfk_b64: str) -> None:
    result = client.chat.completions.create(model="whisper-1", messages=user(audio_part(jfk_b64)))
    assert result.object == "chat.completion"
    assert result.id.startswith("chatcmpl-")
    assert result.model == "whisper-1"
    assert abs(result.created - time.time()) < 300
    [choice] = result.choices
    assert choice.index == 0 and choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content is not None
    assert wer(JFK_TEXT, choice.message.content) < 0.1
    assert result.usage is not None
    assert result.usage.prompt_tokens == 0
    assert result.usage.completion_tokens > 10
    assert result.usage.total_tokens == result.usage.completion_tokens


def test_every_audio_part_is_transcribed_in_order(client: openai.OpenAI, jfk_b64: str) -> None:
    messages = [
        {"role": "system", "content": "You transcribe."},
        *user(audio_part(jfk_b64)),
        {"role": "user", "content": [audio_part(f"data:audio/wav;base64,{jfk_b64}")]},
    ]
    result = client.chat.completions.create(model="tiny.en", messages=messages)
    content = result.choices[0].message.content or ""
    first, second = content.split("\n")
    assert wer(JFK_TEXT, first) < 0.1 and wer(JFK_TEXT, second) < 0.1


def test_streaming_chunks_concatenate_to_the_transcript(client: openai.OpenAI, jfk_b64: str) -> None:
    stream = client.chat.completions.create(model="whisper-1", messages=user(audio_part(jfk_b64)), stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert chunks[0].choices[0].delta.role == "assistant"
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in with_choices[:-1])
    deltas = [c.choices[0].delta.content for c in with_choices if c.choices[0].delta.content]
    assert deltas, "no content delta"
    assert wer(JFK_TEXT, "".join(deltas)) < 0.1
    assert not chunks[-1].choices and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 10


def test_stream_wire_format(base_url: str, jfk_b64: str) -> None:
    body = {"model": "whisper-1", "messages": user(audio_part(jfk_b64)), "stream": True}
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=300) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    assert '"usage":null' in lines[0]  # no usage chunk unless stream_options.include_usage
    assert "fellow americans" in normalize(" ".join(lines))


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "user", "content": "Transcribe this"}], "messages"),
        (user(), "messages"),
        (user(audio_part("!!! not base64 !!!")), "messages[0].content[1].input_audio.data"),
        (user(audio_part("")), "messages[0].content[1].input_audio.data"),
        (user(audio_part("UklGRg==", fmt="midi")), "messages[0].content[1].input_audio.format"),
        (user({"type": "input_audio", "input_audio": {"format": "wav"}}), "messages[0].content[1].input_audio"),
        ([{"content": "no role"}], "messages[0]"),
    ],
    ids=["text-only", "no-audio-part", "bad-base64", "empty-data", "bad-format", "no-data", "no-role"],
)
def test_bad_input_is_400(client: openai.OpenAI, messages: list[Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="whisper-1", messages=messages)
    assert info.value.param == param
    assert "Traceback" not in info.value.message


def test_undecodable_audio_is_400_invalid_audio(client: openai.OpenAI) -> None:
    text = base64.b64encode(b"Hello, this is a text file pretending to be audio.\n" * 20).decode()
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="whisper-1", messages=user(audio_part(text)))
    assert info.value.code == "invalid_audio"


def test_undecodable_audio_while_streaming_raises(client: openai.OpenAI) -> None:
    text = base64.b64encode(b"Not audio at all.\n" * 50).decode()
    with pytest.raises(openai.APIError) as info:
        list(client.chat.completions.create(model="whisper-1", messages=user(audio_part(text)), stream=True))
    assert "decoded" in info.value.message


def test_unknown_model_is_404(client: openai.OpenAI, jfk_b64: str) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-9", messages=user(audio_part(jfk_b64)))
    assert info.value.code == "model_not_found"


def test_not_json_is_400(base_url: str) -> None:
    response = httpx.post(f"{base_url}/v1/chat/completions", content=b"{not json",
                          headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_api_key_is_enforced(served: Served, jfk_b64: str) -> None:
    with run_frontend(served, api_keys=["sk-right"]) as url:
        wrong = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.chat.completions.create(model="whisper-1", messages=user(audio_part(jfk_b64)))
        right = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-right", max_retries=0, timeout=300)
        result = right.chat.completions.create(model="whisper-1", messages=user(audio_part(jfk_b64)))
        assert "fellow americans" in normalize(result.choices[0].message.content or "")


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_requests_errors_and_audio(served: Served, jfk_b64: str) -> None:
    with run_frontend(served) as url:
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)
        before = _samples(httpx.get(f"{url}/metrics").text)
        for _ in range(2):
            sdk.chat.completions.create(model="whisper-1", messages=user(audio_part(jfk_b64)))
        list(sdk.chat.completions.create(model="whisper-1", messages=user(audio_part(jfk_b64)), stream=True))
        with pytest.raises(openai.BadRequestError):
            sdk.chat.completions.create(model="whisper-1", messages=user())
        sdk.audio.transcriptions.create(model="whisper-1", file=jfk_wav().open("rb"))
        response = httpx.get(f"{url}/metrics")
    assert response.status_code == 200
    after = _samples(response.text)
    route = "/v1/chat/completions"
    # No keys configured: the one caller is `open`.
    ok = ("whisper_frontend_requests_total",
          frozenset({("route", route), ("method", "POST"), ("status", "200"), ("key", "open")}))
    bad = ("whisper_frontend_requests_total",
           frozenset({("route", route), ("method", "POST"), ("status", "400"), ("key", "open")}))
    assert ok not in before and after[ok] == 3
    assert after[bad] == 1
    audio_route = ("whisper_frontend_requests_total",
                   frozenset({("route", "/v1/audio/transcriptions"), ("method", "POST"), ("status", "200"),
                              ("key", "open")}))
    assert after[audio_route] == 1
    errors = ("whisper_frontend_errors_total", frozenset({("status", "400"), ("code", "missing_required_parameter")}))
    assert after[errors] == 1
    # Three chat transcriptions and one audio transcription of 11 s each.
    audio = ("whisper_frontend_audio_seconds_total", frozenset({("task", "transcribe"), ("key", "open")}))
    assert after[audio] == pytest.approx(44)
    latency = ("whisper_frontend_request_duration_seconds_count", frozenset({("route", route), ("method", "POST")}))
    assert after[latency] == 4
    assert after[("whisper_frontend_transcriptions_in_flight", frozenset())] == 0
