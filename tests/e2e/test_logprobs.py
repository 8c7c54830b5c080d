"""`include[]=logprobs` through the real openai SDK and stack: OpenAI's `logprobs` on `json`, streamed too."""

from __future__ import annotations

import math
from pathlib import Path

import openai
import pytest

from harness.assets import JFK_TEXT
from harness.text import wer
from tests.e2e.test_openai_sdk import client, jfk

__all__ = ["client", "jfk"]  # fixtures of test_openai_sdk, shared


def squeezed(text: str) -> str:
    return "".join(text.split())


def test_json_with_logprobs_has_every_token_of_the_text(client: openai.OpenAI, jfk: Path) -> None:
    result = client.audio.transcriptions.create(model="whisper-1", file=jfk.open("rb"), response_format="json",
                                                include=["logprobs"])
    assert wer(JFK_TEXT, result.text) < 0.1
    assert result.logprobs
    assert squeezed("".join(item.token or "" for item in result.logprobs)) == squeezed(result.text)
    for item in result.logprobs:
        assert item.logprob is not None and item.logprob <= 0.0 and math.isfinite(item.logprob)
        assert item.bytes is not None and bytes(int(b) for b in item.bytes).decode() == item.token
    assert any(item.logprob is not None and item.logprob < -1e-3 for item in result.logprobs)


def test_without_include_there_are_no_logprobs(client: openai.OpenAI, jfk: Path) -> None:
    raw = client.audio.transcriptions.with_raw_response.create(model="whisper-1", file=jfk.open("rb"))
    assert "logprobs" not in raw.http_response.json()


@pytest.mark.parametrize("response_format", ["text", "verbose_json"])
def test_other_formats_ignore_include(client: openai.OpenAI, jfk: Path, response_format: str) -> None:
    raw = client.audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=jfk.open("rb"), response_format=response_format,  # type: ignore[call-overload]
        include=["logprobs"])
    assert raw.http_response.status_code == 200
    assert "logprobs" not in raw.http_response.text


def test_streamed_deltas_carry_their_tokens_and_done_carries_all(client: openai.OpenAI, jfk: Path) -> None:
    stream = client.audio.transcriptions.create(model="whisper-1", file=jfk.open("rb"), response_format="json",
                                                include=["logprobs"], stream=True)
    deltas, done = [], None
    for event in stream:
        if event.type == "transcript.text.delta":
            deltas.append(event)
        elif event.type == "transcript.text.done":
            done = event
    assert deltas and done is not None
    for delta in deltas:
        assert delta.logprobs
        assert squeezed("".join(item.token or "" for item in delta.logprobs)) == squeezed(delta.delta)
    assert [item.model_dump() for item in done.logprobs or []] == [
        item.model_dump() for delta in deltas for item in delta.logprobs or []]
    assert squeezed("".join(item.token or "" for item in done.logprobs or [])) == squeezed(done.text)


def test_an_unknown_include_value_is_a_400(client: openai.OpenAI, jfk: Path) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.audio.transcriptions.create(model="whisper-1", file=jfk.open("rb"),
                                           include=["everything"])  # type: ignore[list-item]
    assert raised.value.body["param"] == "include"  # type: ignore[index]
