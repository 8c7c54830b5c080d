"""The openai SDK against a real `make serve` process (tiny.en): every response format."""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest

from harness.assets import JFK_TEXT, jfk_wav
from harness.stack import Served
from harness.text import normalize, wer


@pytest.fixture(scope="module")
def client(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.base_url}/v1", api_key="unused", max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def jfk() -> Path:
    return jfk_wav()


def test_json_is_the_default_and_has_usage(client: openai.OpenAI, jfk: Path) -> None:
    result = client.audio.transcriptions.create(model="whisper-1", file=jfk.open("rb"))
    assert isinstance(result, openai.types.audio.Transcription)
    assert wer(JFK_TEXT, result.text) < 0.1
    assert result.usage is not None and result.usage.type == "duration"
    assert result.usage.seconds == 11  # ceil(11.0)


@pytest.mark.parametrize("model", ["whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "tiny.en"])
def test_model_aliases(client: openai.OpenAI, jfk: Path, model: str) -> None:
    result = client.audio.transcriptions.create(model=model, file=jfk.open("rb"), response_format="json")
    assert "fellow americans" in normalize(result.text)


def test_text_is_plain_and_not_json_quoted(client: openai.OpenAI, jfk: Path) -> None:
    raw = client.audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=jfk.open("rb"), response_format="text"
    )
    assert raw.headers["content-type"].startswith("text/plain")
    body = raw.http_response.text
    assert not body.startswith('"')
    assert wer(JFK_TEXT, body) < 0.1


def test_srt(client: openai.OpenAI, jfk: Path) -> None:
    srt = client.audio.transcriptions.create(model="whisper-1", file=jfk.open("rb"), response_format="srt")
    blocks = [b for b in str(srt).strip().split("\n\n") if b]
    assert len(blocks) >= 1
    for number, block in enumerate(blocks, start=1):
        lines = block.split("\n")
        assert lines[0] == str(number)
        assert " --> " in lines[1] and "," in lines[1]
    assert wer(JFK_TEXT, " ".join(b.split("\n", 2)[2] for b in blocks)) < 0.1


def test_vtt(client: openai.OpenAI, jfk: Path) -> None:
    raw = client.audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=jfk.open("rb"), response_format="vtt"
    )
    assert raw.headers["content-type"].startswith("text/vtt")
    vtt = raw.http_response.text
    assert vtt.startswith("WEBVTT\n\n")
    assert "00:00:00.000 --> " in vtt
    assert "fellow americans" in normalize(vtt)


def test_verbose_json_segments_and_words(client: openai.OpenAI, jfk: Path) -> None:
    result = client.audio.transcriptions.create(
        model="whisper-1",
        file=jfk.open("rb"),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert result.language == "english"
    assert result.duration == pytest.approx(11.0, abs=0.05)
    assert wer(JFK_TEXT, result.text) < 0.1
    assert result.segments
    previous_end = 0.0
    for index, segment in enumerate(result.segments):
        data = segment.model_dump()
        for field in ("id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob",
                      "compression_ratio", "no_speech_prob"):
            assert data[field] is not None, field
        assert segment.id == index
        assert previous_end - 0.01 <= segment.start <= segment.end <= 11.0
        assert all(isinstance(t, int) for t in segment.tokens)
        assert segment.avg_logprob < 0 and 0 <= segment.no_speech_prob <= 1 and segment.compression_ratio > 0
        previous_end = segment.end
    assert result.words
    names = [w.word for w in result.words]
    assert names[:4] == ["And", "so", "my", "fellow"]
    starts = [w.start for w in result.words]
    assert starts == sorted(starts)
    country = [w for w in result.words if w.word.startswith("country")]
    assert len(country) == 2 and country[0].end < 8.5 < country[1].start and country[1].end > 9.5
    assert result.usage is not None and result.usage.seconds == 11


def test_verbose_json_without_word_granularity_has_no_words(client: openai.OpenAI, jfk: Path) -> None:
    result = client.audio.transcriptions.create(model="whisper-1", file=jfk.open("rb"),
                                                response_format="verbose_json")
    assert result.segments and not result.words


def test_prompt_language_and_temperature_are_accepted(client: openai.OpenAI, jfk: Path) -> None:
    result = client.audio.transcriptions.create(
        model="whisper-1", file=jfk.open("rb"), language="en-US", prompt="Kennedy, inaugural address.",
        temperature=0.2,
    )
    assert "your country" in normalize(result.text)


def test_streaming_sends_deltas_then_done(client: openai.OpenAI, jfk: Path) -> None:
    stream = client.audio.transcriptions.create(model="whisper-1", file=jfk.open("rb"), stream=True)
    events = list(stream)
    types = [e.type for e in events]
    assert types[-1] == "transcript.text.done"
    assert types.count("transcript.text.delta") >= 1 and set(types[:-1]) == {"transcript.text.delta"}
    done = events[-1]
    assert wer(JFK_TEXT, done.text) < 0.1
    assert normalize("".join(e.delta for e in events[:-1])) == normalize(done.text)


def test_streaming_deltas_arrive_before_the_end(client: openai.OpenAI, served: Served) -> None:
    from harness.assets import long_recording

    recording = long_recording(2.0)
    arrivals: list[tuple[float, str]] = []
    start = time.monotonic()
    with recording.path.open("rb") as audio:
        for event in client.audio.transcriptions.create(model="whisper-1", file=audio, stream=True):
            arrivals.append((time.monotonic() - start, event.type))
    deltas = [t for t, kind in arrivals if kind == "transcript.text.delta"]
    done = [t for t, kind in arrivals if kind == "transcript.text.done"]
    assert len(deltas) >= 4 and len(done) == 1
    # The first window is decoded (and sent) before the others are batched: well before the end.
    assert done[0] - deltas[0] > 0.5, arrivals


def test_translation_with_an_english_only_model_is_a_clear_400(client: openai.OpenAI, jfk: Path) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.translations.create(model="whisper-1", file=jfk.open("rb"))
    assert "english-only" in info.value.message.lower()


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids[0] == "tiny.en" and "whisper-1" in ids and "gpt-4o-transcribe" in ids
    assert client.models.retrieve("whisper-1").id == "whisper-1"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
