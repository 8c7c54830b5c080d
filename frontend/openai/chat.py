"""`POST /v1/chat/completions` with audio input: the transcript is the assistant's answer.

Every `input_audio` part of the user messages is transcribed, in order, through the entry model;
the transcripts, one per line, are the assistant message. Text parts are instructions to a chat
model and are ignored (they are not a Whisper prompt). `temperature` and the other sampling
fields are ignored too: decoding uses Whisper's own temperature fallback.

`usage`: `completion_tokens` counts the Whisper tokens of the transcript; `prompt_tokens` is 0,
as audio is not counted in chat tokens here.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIType

from frontend.errors import api_error, bad_request, error_body, error_responses, too_large
from frontend.guards import require_api_key
from frontend.keys import Principal
from frontend.request_bodies import data_url_bytes, read_body
from frontend.settings import FrontendSettings
from frontend.streams import awaited, event_stream, sse
from frontend.transcription import Transcriptions
from whisper_triton.contract import DoneEvent, Event, SegmentsEvent, TranscriptionRequest
from whisper_triton.errors import ServiceError

# What the chat API's `input_audio.format` may name; the bytes are sniffed by FFmpeg anyway.
AUDIO_FORMATS = ("wav", "mp3", "flac", "ogg", "opus", "m4a", "aac", "webm", "mp4", "mpeg", "mpga", "oga", "amr")
JSON_OVERHEAD = 1024 * 1024  # messages, text parts and JSON syntax around the base64 audio
_VALIDATION_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")


# Request (only the fields used; the others OpenAI defines are accepted and ignored)


class InputAudio(msgspec.Struct, frozen=True):
    data: str
    format: str


class ChatMessage(msgspec.Struct, frozen=True):
    role: str
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(msgspec.Struct, frozen=True):
    include_usage: bool = False


class ChatCompletionRequest(msgspec.Struct, frozen=True):
    model: str
    messages: list[ChatMessage]
    stream: bool | None = False
    stream_options: StreamOptions | None = None


# Response: openai-python `types/chat`


class CompletionUsage(msgspec.Struct, frozen=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletionMessage(msgspec.Struct, frozen=True):
    content: str
    role: Literal["assistant"] = "assistant"
    refusal: str | None = None


class Choice(msgspec.Struct, frozen=True):
    message: ChatCompletionMessage
    index: int = 0
    finish_reason: Literal["stop"] = "stop"
    logprobs: None = None


class ChatCompletion(msgspec.Struct, frozen=True):
    id: str
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    object: Literal["chat.completion"] = "chat.completion"


class ChoiceDelta(msgspec.Struct, frozen=True, omit_defaults=True):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(msgspec.Struct, frozen=True):
    delta: ChoiceDelta
    index: int = 0
    finish_reason: Literal["stop"] | None = None
    logprobs: None = None


class ChatCompletionChunk(msgspec.Struct, frozen=True):
    id: str
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"


_decoder = msgspec.json.Decoder(ChatCompletionRequest)
_input_audio = msgspec.json.Decoder(InputAudio)
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class ChatTurn:
    """A validated request: the audio files in order, and how to answer."""

    model: str
    audio: list[bytes]
    stream: bool
    include_usage: bool


def max_body_bytes(max_upload_bytes: int) -> int:
    return 4 * math.ceil(max_upload_bytes / 3) + JSON_OVERHEAD


def parse_request(body: bytes, max_upload_bytes: int) -> ChatTurn:
    try:
        parsed = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        message = str(exc)
        match = _VALIDATION_PATH.search(message)
        raise bad_request(message, param=match["path"] if match else None) from exc
    except msgspec.DecodeError as exc:
        raise bad_request(f"The body must be a JSON chat completion request: {exc}", code="invalid_request") from exc
    if not parsed.model:
        raise bad_request("You must provide a model parameter.", param="model", code="missing_required_parameter")
    audio = [
        _audio(part, f"messages[{i}].content[{j}]", max_upload_bytes)
        for i, message in enumerate(parsed.messages)
        if message.role == "user" and isinstance(message.content, list)
        for j, part in enumerate(message.content)
        if part.get("type") == "input_audio"
    ]
    if not audio:
        raise bad_request("The request has no audio: add a user message content part of type 'input_audio'.",
                          param="messages", code="missing_required_parameter")
    include_usage = parsed.stream_options is not None and parsed.stream_options.include_usage
    return ChatTurn(parsed.model, audio, bool(parsed.stream), include_usage)


def _audio(part: dict[str, Any], param: str, max_upload_bytes: int) -> bytes:
    try:
        spec = msgspec.convert(part.get("input_audio"), InputAudio)
    except msgspec.ValidationError as exc:
        raise bad_request(f"Invalid '{param}.input_audio': {exc}", param=f"{param}.input_audio") from exc
    if spec.format not in AUDIO_FORMATS:
        raise bad_request(f"Unsupported audio format '{spec.format}'. Supported: {', '.join(AUDIO_FORMATS)}.",
                          param=f"{param}.input_audio.format", code="unsupported_value")
    try:  # base64, or a data URL as some clients send
        audio = data_url_bytes(spec.data, bare=True)
    except ValueError as exc:
        raise bad_request(f"Invalid base64 in '{param}.input_audio.data'.", param=f"{param}.input_audio.data") from exc
    if not audio:
        raise bad_request(f"'{param}.input_audio.data' is empty.", param=f"{param}.input_audio.data",
                          code="invalid_audio")
    if len(audio) > max_upload_bytes:
        raise too_large(max_upload_bytes, param="messages")
    return audio


_ERRORS = error_responses({
    400: "Bad parameters, no audio part, bad base64 or audio that cannot be decoded",
    401: "Missing or wrong API key",
    404: "Unknown model",
    413: "Body larger than the limit",
    503: "Overloaded or inference server unavailable (see Retry-After)",
})


@dataclass
class _ChatOperation(Operation):
    def __post_init__(self) -> None:
        audio_part = Schema(type=OpenAPIType.OBJECT, properties={
            "type": Schema(type=OpenAPIType.STRING, enum=["input_audio"]),
            "input_audio": Schema(type=OpenAPIType.OBJECT, required=["data", "format"], properties={
                "data": Schema(type=OpenAPIType.STRING, description="Base64-encoded audio."),
                "format": Schema(type=OpenAPIType.STRING, enum=list(AUDIO_FORMATS)),
            }),
        })  # fmt: skip
        message = Schema(type=OpenAPIType.OBJECT, required=["role"], properties={
            "role": Schema(type=OpenAPIType.STRING),
            "content": Schema(type=OpenAPIType.ARRAY, items=audio_part,
                              description="Parts; `input_audio` parts are transcribed, text parts ignored."),
        })  # fmt: skip
        body = Schema(type=OpenAPIType.OBJECT, required=["model", "messages"], properties={
            "model": Schema(type=OpenAPIType.STRING, description="The served model id or an alias such as whisper-1."),
            "messages": Schema(type=OpenAPIType.ARRAY, items=message),
            "stream": Schema(type=OpenAPIType.BOOLEAN, default=False),
        })  # fmt: skip
        self.request_body = RequestBody(content={"application/json": OpenAPIMediaType(schema=body)}, required=True)


class ChatController(Controller):
    path = "/v1/chat"
    guards = [require_api_key]  # noqa: RUF012
    tags = ["chat"]  # noqa: RUF012

    # Base64 audio is 4/3 of the file: this route enforces its own limit (`read_body`).
    @post("/completions", operation_id="createChatCompletion", operation_class=_ChatOperation,
          responses=_ERRORS, status_code=200, request_max_body_size=None)
    async def create_chat_completion(self, request: Request[Any, Any, Any], settings: NamedDependency[FrontendSettings],
                                     transcriptions: NamedDependency[Transcriptions],
                                     principal: NamedDependency[Principal]) -> Response[Any]:
        """Transcribes the `input_audio` parts of the messages; the transcript is the answer."""
        body = await read_body(request, max_body_bytes(settings.max_upload_bytes), param="messages")
        turn = parse_request(body, settings.max_upload_bytes)
        answer = ChatAnswer(transcriptions, turn, await transcriptions.served_model(settings, turn.model), principal)
        slot = await transcriptions.admit(principal)
        if turn.stream:
            return event_stream(answer.chunks(), slot.release)
        completion = await awaited(request.receive, slot, answer.completion())
        return Response(_encoder.encode(completion), media_type="application/json")


class ChatAnswer:
    """Transcribes a turn's audio files one after the other, as a whole or as SSE chunks."""

    def __init__(self, transcriptions: Transcriptions, turn: ChatTurn, model: str,
                 principal: Principal | None = None) -> None:
        self.transcriptions = transcriptions
        self.principal = principal
        self.turn = turn
        self.model = model  # the served model id; answers name the model as requested, as OpenAI does
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.tokens = 0

    async def _events(self, audio: bytes, stream: bool) -> AsyncGenerator[Event, None]:
        call = TranscriptionRequest(model=self.model, stream=stream)
        async with contextlib.aclosing(self.transcriptions.events(audio, call, principal=self.principal)) as events:
            async for event in events:
                if isinstance(event, DoneEvent):
                    self.tokens += sum(len(s.tokens) for s in event.segments)
                yield event

    def _usage(self) -> CompletionUsage:
        return CompletionUsage(prompt_tokens=0, completion_tokens=self.tokens, total_tokens=self.tokens)

    async def completion(self) -> ChatCompletion:
        texts = []
        for audio in self.turn.audio:
            async for event in self._events(audio, stream=False):
                if isinstance(event, DoneEvent):
                    texts.append(event.text)
        message = ChatCompletionMessage(content="\n".join(texts))
        return ChatCompletion(id=self.id, created=self.created, model=self.turn.model,
                              choices=[Choice(message=message)], usage=self._usage())

    def _chunk(self, delta: ChoiceDelta, finish: bool = False) -> bytes:
        chunk = ChatCompletionChunk(id=self.id, created=self.created, model=self.turn.model,
                                    choices=[ChunkChoice(delta=delta, finish_reason="stop" if finish else None)])
        return sse(chunk)

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """Role first, a content delta per decoded segment, `stop`, usage if asked, `[DONE]`.

        A failure after the stream started is sent as an `error` event and ends the stream
        (the SDK raises it), as the transcription stream does.
        """
        try:
            yield self._chunk(ChoiceDelta(role="assistant", content=""))
            said = False
            for audio in self.turn.audio:
                first = True
                async for event in self._events(audio, stream=True):
                    if not isinstance(event, SegmentsEvent):
                        continue
                    for segment in event.segments:
                        text = segment.text.lstrip() if first else segment.text
                        if first and said:
                            text = "\n" + text
                        first, said = False, True
                        yield self._chunk(ChoiceDelta(content=text))
            yield self._chunk(ChoiceDelta(), finish=True)
            if self.turn.include_usage:
                usage = ChatCompletionChunk(id=self.id, created=self.created, model=self.turn.model, choices=[],
                                            usage=self._usage())
                yield sse(usage)
            yield b"data: [DONE]\n\n"
        except ServiceError as exc:
            yield sse(error_body(api_error(exc)))
