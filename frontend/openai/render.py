"""From the entry model's events to OpenAI's response bodies, content types and SSE events."""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import msgspec
from litestar import Response
from msgspec import UNSET, UnsetType

from frontend.errors import api_error, error_body
from frontend.formats import to_srt, to_text, to_vtt
from frontend.openai.audio_form import AudioForm
from frontend.openai.schemas import (
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
from frontend.streams import sse
from whisper_triton.contract import DoneEvent, Event, Segment, SegmentsEvent, TokenLogprob, token_logprobs
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


def logprobs(segments: list[Segment], asked: bool) -> list[TokenLogprob] | UnsetType:
    """OpenAI's `logprobs` of the segments' tokens: absent unless asked."""
    return token_logprobs(segments) if asked else UNSET


def render(done: DoneEvent, form: AudioForm) -> Response[Any]:
    """The body for `response_format`, with the content type clients such as aiohttp require."""
    fmt, task = form.response_format, form.request.task
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
        language = "english" if task == "translate" else language_name(done.language or "en")
        body: msgspec.Struct = TranscriptionVerbose(
            task=task,
            language=language,
            duration=done.duration,
            text=done.text,
            segments=segments(done),
            words=words(done) if form.request.word_timestamps else None,
            usage=usage(done) if task == "transcribe" else None,
        )
    else:
        body = Transcription(text=text, usage=usage(done) if task == "transcribe" else None,
                             logprobs=logprobs(done.segments, form.request.logprobs))
    return Response(_encoder.encode(body), media_type=JSON)


async def stream_events(events: AsyncIterator[Event], diarized: bool = False,
                        with_logprobs: bool = False) -> AsyncGenerator[bytes, None]:
    """`transcript.text.delta` per decoded segment, then `transcript.text.done` (with `with_logprobs`, each
    carrying the log-probabilities of its tokens).

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
                    yield sse(TranscriptTextDeltaEvent(delta=delta, logprobs=logprobs([segment], with_logprobs)))
                if diarized:
                    letters = speaker_letters(s.speaker for s in event.segments)
                    for segment in event.segments:
                        yield sse(TranscriptTextSegmentEvent(
                            id=f"seg_{(segment.id or 0) + 1:03d}", start=segment.start, end=segment.end,
                            text=segment.text.strip(), speaker=letters.get(segment.speaker or "", "A")))
            else:
                yield sse(TranscriptTextDoneEvent(text=event.text, usage=usage(event),
                                                  logprobs=logprobs(event.segments, with_logprobs)))
    except ServiceError as exc:
        yield sse(error_body(api_error(exc)))
    finally:
        if isinstance(events, AsyncGenerator):
            await events.aclose()  # now, not when collected: it cancels the Triton call


