"""From the entry model's events to OpenAI's response bodies, content types and SSE events."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from litestar import Response

from frontend.errors import APIError, error_body, from_service_error
from frontend.formats import to_srt, to_text, to_vtt
from frontend.forms import AudioForm
from frontend.schemas import (
    Transcription,
    TranscriptionSegment,
    TranscriptionVerbose,
    TranscriptionWord,
    TranscriptTextDeltaEvent,
    TranscriptTextDoneEvent,
    UsageDuration,
)
from whisper_triton.errors import ServiceError
from whisper_triton.languages import language_name

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
VTT = "text/vtt; charset=utf-8"
_encoder = msgspec.json.Encoder()
_SEGMENT_FIELDS = TranscriptionSegment.__struct_fields__


def usage(done: dict[str, Any]) -> UsageDuration:
    return UsageDuration(seconds=math.ceil(float(done["duration"])))


def segments(done: dict[str, Any]) -> list[TranscriptionSegment]:
    return [TranscriptionSegment(**{k: s[k] for k in _SEGMENT_FIELDS}) for s in done["segments"]]


def words(done: dict[str, Any]) -> list[TranscriptionWord]:
    return [
        TranscriptionWord(word=w["word"].strip(), start=w["start"], end=w["end"])
        for s in done["segments"]
        for w in s.get("words", [])
    ]


def render(done: dict[str, Any], form: AudioForm) -> Response[Any]:
    """The body for `response_format`, with the content type clients such as aiohttp require."""
    fmt = form.response_format
    if fmt == "text":
        return Response(to_text(done["text"]), media_type=TEXT)
    if fmt == "srt":
        return Response(to_srt(segments(done)), media_type=TEXT)
    if fmt == "vtt":
        return Response(to_vtt(segments(done)), media_type=VTT)
    if fmt == "verbose_json":
        language = "english" if form.task == "translate" else language_name(done["language"])
        body: msgspec.Struct = TranscriptionVerbose(
            task=form.task,
            language=language,
            duration=float(done["duration"]),
            text=done["text"],
            segments=segments(done),
            words=words(done) if form.word_timestamps else None,
            usage=usage(done) if form.task == "transcribe" else None,
        )
    else:
        body = Transcription(text=done["text"], usage=usage(done) if form.task == "transcribe" else None)
    return Response(_encoder.encode(body), media_type=JSON)


def sse(data: msgspec.Struct | dict[str, Any]) -> bytes:
    return b"data: " + _encoder.encode(data) + b"\n\n"


async def stream_events(
    events: AsyncIterator[dict[str, Any]], on_close: Callable[[], None]
) -> AsyncIterator[bytes]:
    """`transcript.text.delta` per decoded segment, then `transcript.text.done`.

    A failure after the response started is sent as an `error` event (the SDK raises it), and the
    stream ends.
    """
    first = True
    try:
        async for event in events:
            if event["type"] == "segments":
                for segment in event["segments"]:
                    delta = segment["text"].lstrip() if first else segment["text"]
                    first = False
                    yield sse(TranscriptTextDeltaEvent(delta=delta))
            elif event["type"] == "done":
                yield sse(TranscriptTextDoneEvent(text=event["text"], usage=usage(event)))
    except (APIError, ServiceError) as exc:
        error = exc if isinstance(exc, APIError) else from_service_error(exc)
        yield sse(msgspec.to_builtins(error_body(error)))
    finally:
        on_close()
