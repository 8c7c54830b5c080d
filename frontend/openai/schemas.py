"""Wire types, named after OpenAI's objects (openai-python `types/audio`, the OpenAPI spec)."""

from __future__ import annotations

from typing import Literal

import msgspec
from msgspec import UNSET, UnsetType

from whisper_triton.contract import Segment, TokenLogprob


class TranscriptionWord(msgspec.Struct, frozen=True):
    word: str
    start: float
    end: float


# OpenAI's segment is the entry model's, words left out (they are `TranscriptionVerbose.words`) and `speaker`
# a letter (only with diarization).
TranscriptionSegment = Segment


class UsageDuration(msgspec.Struct, frozen=True, tag_field="type", tag="duration"):
    seconds: int


class Transcription(msgspec.Struct, frozen=True):
    text: str
    usage: UsageDuration | None = None
    logprobs: list[TokenLogprob] | UnsetType = UNSET  # with include[]=logprobs


class TranscriptionVerbose(msgspec.Struct, frozen=True, omit_defaults=True):
    task: str
    language: str
    duration: float
    text: str
    segments: list[TranscriptionSegment]
    words: list[TranscriptionWord] | None = None
    usage: UsageDuration | None = None


class TranscriptionDiarizedSegment(msgspec.Struct, frozen=True):
    id: str
    start: float
    end: float
    text: str
    speaker: str
    type: Literal["transcript.text.segment"] = "transcript.text.segment"


class TranscriptionDiarized(msgspec.Struct, frozen=True, omit_defaults=True):
    task: Literal["transcribe"]  # required, so never omitted
    duration: float
    text: str
    segments: list[TranscriptionDiarizedSegment]
    usage: UsageDuration | None = None


class TranscriptTextSegmentEvent(msgspec.Struct, frozen=True, tag_field="type", tag="transcript.text.segment"):
    id: str
    start: float
    end: float
    text: str
    speaker: str


class TranscriptTextDeltaEvent(msgspec.Struct, frozen=True, tag_field="type", tag="transcript.text.delta"):
    delta: str
    logprobs: list[TokenLogprob] | UnsetType = UNSET  # with include[]=logprobs: the delta's tokens


class TranscriptTextDoneEvent(msgspec.Struct, frozen=True, tag_field="type", tag="transcript.text.done"):
    text: str
    usage: UsageDuration | None = None
    logprobs: list[TokenLogprob] | UnsetType = UNSET  # with include[]=logprobs: every token


class SpeechTimestamp(msgspec.Struct, frozen=True):
    """A speech region of `POST /v1/audio/speech/timestamps`, in milliseconds (speaches' shape)."""

    start: int
    end: int


class Model(msgspec.Struct, frozen=True):
    id: str
    created: int
    owned_by: str
    object: Literal["model"] = "model"


class ModelList(msgspec.Struct, frozen=True):
    data: list[Model]
    object: Literal["list"] = "list"


class ErrorDetail(msgspec.Struct, frozen=True):
    """OpenAI's `Error`: all four keys are always present; `param` and `code` may be null."""

    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(msgspec.Struct, frozen=True):
    error: ErrorDetail
