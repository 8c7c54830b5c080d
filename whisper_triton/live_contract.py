"""The live model's wire: what a client sends it (`LiveControl`) and what it is told (`LiveEvent`), with the
session's settings. msgspec only: the frontend imports it without the audio and VAD code.

One live transcription session: what its client sends (`LiveControl`), what it is told (`LiveEvent`), and
its audio buffer cut into turns. Pure logic; `model_repository/whisper_live` serves it over gRPC streaming.

Live model `whisper_live` (decoupled; call it with gRPC streaming, one stream per client or many sessions
on one stream):
  inputs  SESSION  BYTES [1]  the session's id, chosen by the client ([A-Za-z0-9_.:-], at most 128)
          SEQ      INT64 [1]  the request's number in its session, from 0: requests are applied in this order
                              whatever order Triton runs them in (a gap waits for the missing number)
          AUDIO    BYTES [1]  optional: audio bytes that continue the session's audio, in its format
          CONTROL  BYTES [1]  optional: one JSON `LiveControl` (`start` first, with the session's settings)
  output  EVENT    BYTES [1]  one JSON `LiveEvent` per response
Each request gets the events it causes (speech started or stopped, a turn committed); a request that
commits a turn also gets that turn's `delta` and `completed` (or `failed`) events; every request's last
response is an `ack` event with the FINAL flag.
Turns are transcribed by the entry model `whisper` (VAD-gated windows, the same filters as files), so
their windows meet those of file requests at the engine's batcher.
"""

from __future__ import annotations

import re
from typing import Literal

import msgspec
import numpy as np

from whisper_triton.contract import AUDIO, LIVE_MODEL, TokenLogprob
from whisper_triton.errors import InvalidRequestError

SESSION, SEQ, CONTROL = "SESSION", "SEQ", "CONTROL"
__all__ = ["AUDIO", "CONTROL", "LIVE_MODEL", "OPENAI_NAMES", "SEQ", "SESSION", "LiveConfig", "LiveControl",
           "LiveEvent", "decode_control", "decode_event", "encode", "request_arrays"]

SESSION_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
# semantic_vad has no turn-end classifier here: its eagerness picks how long a pause ends a turn.
EAGERNESS_SILENCE_MS = {"high": 300, "auto": 700, "medium": 700, "low": 1500}
# Audio encodings by their names here and OpenAI's (the GA `format.type`, the beta `input_audio_format`).
OPENAI_NAMES = {"audio/pcm": "pcm16", "pcm16": "pcm16", "audio/pcmu": "pcmu", "g711_ulaw": "pcmu",
                "audio/pcma": "pcma", "g711_alaw": "pcma", "pcmu": "pcmu", "pcma": "pcma"}
FRAME_MS = 32  # Silero VAD's frame
MIN_IDLE_TIMEOUT_MS, MAX_IDLE_TIMEOUT_MS = 1000, 3_600_000


class TurnDetection(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """OpenAI's `turn_detection`: `server_vad` or `semantic_vad` (fields it does not use are ignored)."""

    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    eagerness: Literal["low", "medium", "high", "auto"] = "auto"
    # server_vad: with no speech for this long after the last turn, the silence is committed as an empty turn
    idle_timeout_ms: int | None = None

    def check(self) -> TurnDetection:
        """Itself, or InvalidRequestError for a value out of range."""
        if not 0.0 <= self.threshold <= 1.0:
            raise InvalidRequestError("turn_detection.threshold must be between 0 and 1.", param="threshold")
        if not 0 <= self.prefix_padding_ms <= 5000 or not 0 <= self.silence_duration_ms <= 10_000:
            raise InvalidRequestError("turn_detection: prefix_padding_ms must be 0-5000 and silence_duration_ms "
                                      "0-10000.", param="turn_detection")
        if self.idle_timeout_ms is not None:
            if self.type != "server_vad":
                raise InvalidRequestError("turn_detection.idle_timeout_ms is supported with server_vad only.",
                                          param="idle_timeout_ms")
            if not MIN_IDLE_TIMEOUT_MS <= self.idle_timeout_ms <= MAX_IDLE_TIMEOUT_MS:
                raise InvalidRequestError(f"turn_detection.idle_timeout_ms must be {MIN_IDLE_TIMEOUT_MS}-"
                                          f"{MAX_IDLE_TIMEOUT_MS}.", param="idle_timeout_ms")
        return self

    @property
    def silence_ms(self) -> int:
        """The pause that ends a turn."""
        silence = EAGERNESS_SILENCE_MS[self.eagerness] if self.type == "semantic_vad" else self.silence_duration_ms
        return max(silence, FRAME_MS)


class LiveConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """A session's settings. `turn_detection` None: the client commits each turn itself."""

    format: str = "pcm16"  # pcm16 | pcmu | pcma, or OpenAI's names (audio/pcm, g711_ulaw, ...)
    rate: int | None = None  # pcm16 only; default 24000
    model: str = ""  # a served model id; "" = the default
    language: str | None = None
    prompt: str | None = None
    turn_detection: TurnDetection | None = TurnDetection()
    logprobs: bool = False  # deltas and completed transcripts carry their tokens' log-probabilities


class Start(msgspec.Struct, tag="start", frozen=True):
    config: LiveConfig = LiveConfig()


class Update(msgspec.Struct, tag="update", frozen=True):
    config: LiveConfig


class Commit(msgspec.Struct, tag="commit", frozen=True):
    pass


class Clear(msgspec.Struct, tag="clear", frozen=True):
    pass


class End(msgspec.Struct, tag="end", frozen=True):
    pass


LiveControl = Start | Update | Commit | Clear | End


class SpeechStartedEvent(msgspec.Struct, tag="speech_started", frozen=True):
    item: int
    audio_start_ms: int


class SpeechStoppedEvent(msgspec.Struct, tag="speech_stopped", frozen=True):
    item: int
    audio_end_ms: int


class CommittedEvent(msgspec.Struct, tag="committed", frozen=True):
    item: int
    audio_start_ms: int
    audio_end_ms: int


class TimeoutEvent(msgspec.Struct, tag="timeout_triggered", frozen=True):
    """No speech for `idle_timeout_ms`: the silence from `audio_start_ms` is committed as turn `item`
    (its `committed` event follows, then a `completed` with an empty transcript)."""

    item: int
    audio_start_ms: int
    audio_end_ms: int


class ClearedEvent(msgspec.Struct, tag="cleared", frozen=True):
    pass


class DeltaEvent(msgspec.Struct, tag="delta", frozen=True):
    item: int
    text: str
    logprobs: list[TokenLogprob] | None = None  # with `logprobs`: its tokens'


class CompletedEvent(msgspec.Struct, tag="completed", frozen=True):
    item: int
    text: str
    language: str
    audio_seconds: float  # the turn's audio, for usage
    logprobs: list[TokenLogprob] | None = None  # with `logprobs`: every token's, in order


class FailedEvent(msgspec.Struct, tag="failed", frozen=True):
    item: int
    code: str
    message: str


class ErrorEvent(msgspec.Struct, tag="error", frozen=True):
    code: str
    message: str
    param: str | None = None


class EndedEvent(msgspec.Struct, tag="ended", frozen=True):
    pass


class AckEvent(msgspec.Struct, tag="ack", frozen=True):
    """The last response of every request (it carries the FINAL flag): the request is done."""


LiveEvent = (SpeechStartedEvent | SpeechStoppedEvent | CommittedEvent | TimeoutEvent | ClearedEvent | DeltaEvent
             | CompletedEvent | FailedEvent | ErrorEvent | EndedEvent | AckEvent)

_control = msgspec.json.Decoder(LiveControl)
_event = msgspec.json.Decoder(LiveEvent)
_encoder = msgspec.json.Encoder()


def request_arrays(session: str, seq: int, audio: bytes | None = None,
                   control: LiveControl | None = None) -> dict[str, np.ndarray]:
    """The live model's input tensors for one request of a session."""
    arrays = {SESSION: np.array([session.encode()], dtype=object), SEQ: np.array([seq], dtype=np.int64)}
    if audio is not None:
        arrays[AUDIO] = np.array([audio], dtype=object)  # dtype=object keeps trailing zero bytes
    if control is not None:
        arrays[CONTROL] = np.array([encode(control)], dtype=object)
    return arrays


def decode_control(data: bytes) -> LiveControl:
    try:
        return _control.decode(data)
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(f"Invalid control message: {exc}", param="control", code="invalid_value") from exc
    except msgspec.DecodeError as exc:
        raise InvalidRequestError("The control message is not valid JSON.", param="control",
                                  code="invalid_json") from exc


def encode(message: LiveControl | LiveEvent) -> bytes:
    return _encoder.encode(message)


def decode_event(data: bytes) -> LiveEvent:
    return _event.decode(data)


