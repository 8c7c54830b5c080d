"""From the entry model's events to OpenAI's response bodies, content types and SSE events."""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import msgspec
from litestar import Response
from litestar.response import Stream
from litestar.response.base import ASGIResponse
from litestar.types import Receive, Scope, Send

from frontend.errors import APIError, error_body, from_service_error
from frontend.formats import to_srt, to_text, to_vtt
from frontend.forms import AudioForm
from frontend.schemas import (
    Transcription,
    TranscriptionDiarized,
    TranscriptionDiarizedSegment,
    TranscriptionSegment,
    TranscriptionVerbose,
    TranscriptionWord,
    TranscriptTextDeltaEvent,
    TranscriptTextDoneEvent,
    TranscriptTextSegmentEvent,
    UsageDuration,
)
from whisper_triton.contract import DoneEvent, Event, SegmentsEvent
from whisper_triton.errors import ServiceError
from whisper_triton.languages import language_name
from whisper_triton.speakers import speaker_letters

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
VTT = "text/vtt; charset=utf-8"
_encoder = msgspec.json.Encoder()


def usage(done: DoneEvent) -> UsageDuration:
    return UsageDuration(seconds=math.ceil(done.duration))


def segments(done: DoneEvent) -> list[TranscriptionSegment]:
    """OpenAI segments (no words); with diarization, `speaker` is the letter (A, B, ...) and text has no prefix."""
    letters = speaker_letters(s.speaker for s in done.segments)
    return [msgspec.structs.replace(s, words=[], speaker=letters.get(s.speaker or "")) for s in done.segments]


def cues(done: DoneEvent) -> list[TranscriptionSegment]:
    """Segments for srt/vtt: with diarization, the text starts with the speaker (`A: ...`)."""
    return [msgspec.structs.replace(s, text=f"{s.speaker}: {s.text.strip()}") if s.speaker else s
            for s in segments(done)]


def diarized_text(done: DoneEvent) -> str:
    """`A: ...` lines, one per speaker turn (consecutive segments of one speaker are joined)."""
    lines: list[tuple[str, str]] = []
    for segment in segments(done):
        if lines and lines[-1][0] == segment.speaker:
            lines[-1] = (lines[-1][0], lines[-1][1] + " " + segment.text.strip())
        else:
            lines.append((segment.speaker or "?", segment.text.strip()))
    return "\n".join(f"{speaker}: {text}" for speaker, text in lines)


def diarized_segments(done: DoneEvent) -> list[TranscriptionDiarizedSegment]:
    return [TranscriptionDiarizedSegment(id=f"seg_{(s.id or 0) + 1:03d}", start=s.start, end=s.end,
                                         text=s.text.strip(), speaker=s.speaker or "A") for s in segments(done)]


def words(done: DoneEvent) -> list[TranscriptionWord]:
    return [TranscriptionWord(word=w.word.strip(), start=w.start, end=w.end) for s in done.segments for w in s.words]


def render(done: DoneEvent, form: AudioForm) -> Response[Any]:
    """The body for `response_format`, with the content type clients such as aiohttp require."""
    fmt = form.response_format
    diarized = done.speakers is not None
    text = diarized_text(done) if diarized else done.text
    if fmt == "text":
        return Response(to_text(text), media_type=TEXT)
    if fmt == "srt":
        return Response(to_srt(cues(done)), media_type=TEXT)
    if fmt == "vtt":
        return Response(to_vtt(cues(done)), media_type=VTT)
    if fmt == "diarized_json":
        diarized_body = TranscriptionDiarized(task="transcribe", duration=done.duration, text=text,
                                              segments=diarized_segments(done), usage=usage(done))
        return Response(_encoder.encode(diarized_body), media_type=JSON)
    if fmt == "verbose_json":
        language = "english" if form.task == "translate" else language_name(done.language or "en")
        body: msgspec.Struct = TranscriptionVerbose(
            task=form.task,
            language=language,
            duration=done.duration,
            text=done.text,
            segments=segments(done),
            words=words(done) if form.word_timestamps else None,
            usage=usage(done) if form.task == "transcribe" else None,
        )
    else:
        body = Transcription(text=text, usage=usage(done) if form.task == "transcribe" else None)
    return Response(_encoder.encode(body), media_type=JSON)


def sse(data: msgspec.Struct | dict[str, Any]) -> bytes:
    return b"data: " + _encoder.encode(data) + b"\n\n"


async def stream_events(events: AsyncIterator[Event], diarized: bool = False) -> AsyncGenerator[bytes, None]:
    """`transcript.text.delta` per decoded segment, then `transcript.text.done`.

    A failure after the response started is sent as an `error` event (the SDK raises it), and the
    stream ends.
    """
    first = True
    try:
        async for event in events:
            if isinstance(event, SegmentsEvent):
                for segment in event.segments:
                    delta = segment.text.lstrip() if first else segment.text
                    first = False
                    yield sse(TranscriptTextDeltaEvent(delta=delta))
                if diarized:
                    letters = speaker_letters(s.speaker for s in event.segments)
                    for segment in event.segments:
                        yield sse(TranscriptTextSegmentEvent(
                            id=f"seg_{(segment.id or 0) + 1:03d}", start=segment.start, end=segment.end,
                            text=segment.text.strip(), speaker=letters.get(segment.speaker or "", "A")))
            else:
                yield sse(TranscriptTextDoneEvent(text=event.text, usage=usage(event)))
    except (APIError, ServiceError) as exc:
        error = exc if isinstance(exc, APIError) else from_service_error(exc)
        yield sse(msgspec.to_builtins(error_body(error)))
    finally:
        if isinstance(events, AsyncGenerator):
            await events.aclose()  # now, not when collected: it cancels the Triton call


class ClosingStream(Stream):
    """A streamed response that closes its body generator and calls `on_close` once, however it ends.

    Litestar runs the body in a task that it cancels when the client disconnects. A `finally` inside
    the generator then runs only if the generator had started, and a generator left at a `yield` (a
    send that failed or timed out: the client stopped reading) is closed only when it is collected.
    Releasing what the response holds (an admission slot, the Triton call) therefore happens here,
    around the whole ASGI response, whatever the generator's state.
    """

    def __init__(self, content: AsyncGenerator[bytes, None], on_close: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._body = content
        self._on_close: Callable[[], None] | None = on_close

    async def close(self) -> None:
        try:
            await self._body.aclose()
        finally:
            on_close, self._on_close = self._on_close, None
            if on_close is not None:
                on_close()

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> ASGIResponse:
        return _Closing(super().to_asgi_response(*args, **kwargs), self)


class _Closing(ASGIResponse):
    __slots__ = ("_inner", "_owner")

    def __init__(self, inner: ASGIResponse, owner: ClosingStream) -> None:
        super().__init__(status_code=inner.status_code)
        self._inner = inner
        self._owner = owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._inner(scope, receive, send)
        except BaseExceptionGroup as group:
            # The body task's failure, wrapped by the task group Litestar streams in: unwrapped, it reaches
            # the handler registered for its type.
            if len(group.exceptions) == 1 and isinstance(group.exceptions[0], Exception):
                raise group.exceptions[0] from None
            raise
        finally:
            with contextlib.suppress(Exception):
                await self._owner.close()
