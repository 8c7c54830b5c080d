"""One live transcription session: what its client sends (`LiveControl`), what it is told (`LiveEvent`), and
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
from dataclasses import dataclass
from typing import Literal

import msgspec
import numpy as np

from whisper_triton.audio import SAMPLE_RATE
from whisper_triton.contract import AUDIO, LIVE_MODEL
from whisper_triton.errors import InvalidRequestError
from whisper_triton.live import (
    FRAME_MS,
    LiveVad,
    PauseEnded,
    PauseStarted,
    SpeechStarted,
    SpeechStopped,
    TurnDetector,
    TurnOptions,
)
from whisper_triton.live_audio import LiveDecoder, LiveFormat
from whisper_triton.vad import FRAME_SAMPLES

SESSION, SEQ, CONTROL = "SESSION", "SEQ", "CONTROL"
__all__ = ["AUDIO", "CONTROL", "LIVE_MODEL", "SEQ", "SESSION", "LiveConfig", "LiveControl", "LiveEvent", "LiveSession",
           "Retract", "Turn", "decode_control", "decode_event", "encode"]
SESSION_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
# semantic_vad has no turn-end classifier here: its eagerness picks how long a pause ends a turn.
EAGERNESS_SILENCE_MS = {"high": 300, "auto": 700, "medium": 700, "low": 1500}
MIN_TURN_MS = 100  # a manual commit of less audio is refused, as OpenAI refuses an empty buffer
# After this much of a pause the turn's transcription starts, before the pause is long enough to end the
# turn: if the turn does end, its transcript is ready that much sooner (the rest of its audio is silence).
SPECULATE_MS = 200


class TurnDetection(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """OpenAI's `turn_detection`: `server_vad` or `semantic_vad` (fields it does not use are ignored)."""

    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    eagerness: Literal["low", "medium", "high", "auto"] = "auto"

    def options(self) -> TurnOptions:
        if not 0.0 <= self.threshold <= 1.0:
            raise InvalidRequestError("turn_detection.threshold must be between 0 and 1.", param="threshold")
        if not 0 <= self.prefix_padding_ms <= 5000 or not 0 <= self.silence_duration_ms <= 10_000:
            raise InvalidRequestError("turn_detection: prefix_padding_ms must be 0-5000 and silence_duration_ms "
                                      "0-10000.", param="turn_detection")
        silence = EAGERNESS_SILENCE_MS[self.eagerness] if self.type == "semantic_vad" else self.silence_duration_ms
        speculate = SPECULATE_MS if silence > SPECULATE_MS + FRAME_MS else 0
        return TurnOptions(self.threshold, self.prefix_padding_ms, max(silence, FRAME_MS), speculate_ms=speculate)


class LiveConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """A session's settings. `turn_detection` None: the client commits each turn itself."""

    format: str = "pcm16"  # pcm16 | pcmu | pcma, or OpenAI's names (audio/pcm, g711_ulaw, ...)
    rate: int | None = None  # pcm16 only; default 24000
    model: str = ""  # a served model id; "" = the default
    language: str | None = None
    prompt: str | None = None
    turn_detection: TurnDetection | None = TurnDetection()


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


class ClearedEvent(msgspec.Struct, tag="cleared", frozen=True):
    pass


class DeltaEvent(msgspec.Struct, tag="delta", frozen=True):
    item: int
    text: str


class CompletedEvent(msgspec.Struct, tag="completed", frozen=True):
    item: int
    text: str
    language: str
    audio_seconds: float  # the turn's audio, for usage


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


LiveEvent = (SpeechStartedEvent | SpeechStoppedEvent | CommittedEvent | ClearedEvent | DeltaEvent | CompletedEvent
             | FailedEvent | ErrorEvent | EndedEvent | AckEvent)

_control = msgspec.json.Decoder(LiveControl)
_event = msgspec.json.Decoder(LiveEvent)
_encoder = msgspec.json.Encoder()


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


@dataclass(frozen=True)
class Turn:
    """Audio to transcribe: one turn of the session (`item`), where it lies in the session's audio.

    `tentative`: the speaker paused, the turn may end here; its transcription may start now, and serves
    the turn if it does end with no more speech (`speculated` on the final turn). `Retract` takes it back."""

    item: int
    start_ms: int
    end_ms: int
    samples: np.ndarray  # 16 kHz float32
    tentative: bool = False
    speculated: bool = False  # a tentative turn of this item stands: only silence came after it


@dataclass(frozen=True)
class Retract:
    """The speaker went on: the tentative turn of `item` is not its end."""

    item: int


class LiveSession:
    """The audio of one session since its last turn, cut into turns by VAD (or by the client's commits)."""

    def __init__(self, config: LiveConfig, max_buffer_s: float = 300.0) -> None:
        self.max_buffer_samples = round(max_buffer_s * SAMPLE_RATE)
        self.item = 0  # the next turn's number
        self.heard = 0  # samples of 16 kHz audio received so far
        self._buffer = np.zeros(0, dtype=np.float32)
        self._buffer_start = 0  # sample of the session's audio where the buffer starts
        self.config: LiveConfig | None = None
        self._decoder: LiveDecoder | None = None
        self._turn_options: TurnOptions | None = None
        self._vad: LiveVad | None = None
        self._detector: TurnDetector | None = None
        self._vad_start = 0  # sample of the session's audio where the VAD's frame 0 starts
        self._tentative = False  # a tentative turn of the current item stands
        self.configure(config)

    def configure(self, config: LiveConfig) -> None:
        """Applies settings (InvalidRequestError for a bad one, nothing changed then). A new audio format
        applies to the audio that follows; new turn detection starts afresh."""
        fmt = LiveFormat.of(config.format, config.rate)
        turns = config.turn_detection.options() if config.turn_detection is not None else None
        if self._decoder is None or fmt != self._decoder.format:
            self._decoder = LiveDecoder(fmt)
        if self.config is None or turns != self._turn_options:
            self._vad = LiveVad() if turns is not None else None
            self._detector = TurnDetector(turns) if turns is not None else None
            self._vad_start = self.heard
        self.config, self._turn_options = config, turns

    def append(self, data: bytes) -> tuple[list[LiveEvent], list[Turn | Retract]]:
        """Audio bytes in the session's format: the events they cause and the turns they end."""
        assert self._decoder is not None
        samples = self._decoder.push(data)
        if self._detector is None and len(self._buffer) + len(samples) > self.max_buffer_samples:
            raise InvalidRequestError(
                f"The audio buffer holds {self.max_buffer_samples // SAMPLE_RATE} s at most: commit it first.",
                param="audio", code="input_audio_buffer_full")
        self._buffer = np.concatenate([self._buffer, samples])
        self.heard += len(samples)
        if self._vad is None or self._detector is None:
            return [], []
        events: list[LiveEvent] = []
        turns: list[Turn | Retract] = []
        for event in self._detector.push(self._vad.push(samples)):
            if isinstance(event, PauseEnded):
                self._tentative = False
                turns.append(Retract(self.item))
                continue
            at = self._vad_start + event_ms(event) * SAMPLE_RATE // 1000
            if isinstance(event, SpeechStarted):
                self._drop_before(at)
                events.append(SpeechStartedEvent(self.item, _ms(at)))
            elif isinstance(event, PauseStarted):
                self._tentative = True
                cut = max(0, at - self._buffer_start)
                turns.append(Turn(self.item, _ms(self._buffer_start), _ms(at), self._buffer[:cut].copy(),
                                  tentative=True))
            else:
                speculated, self._tentative = self._tentative, False
                turn = self._take(at, speculated)
                events += [SpeechStoppedEvent(turn.item, turn.end_ms),
                           CommittedEvent(turn.item, turn.start_ms, turn.end_ms)]
                turns.append(turn)
        if not self._detector.speaking:  # keep only what a turn's prefix padding may need
            keep = round(self._detector.options.prefix_padding_ms * SAMPLE_RATE / 1000) + 2 * FRAME_SAMPLES
            self._drop_before(self.heard - keep)
        return events, turns

    def commit(self) -> tuple[list[LiveEvent], Turn]:
        """The buffer as a turn, on the client's word (a turn in progress ends here)."""
        events: list[LiveEvent] = []
        self._tentative = False  # the turn takes in audio after its tentative end
        if self._detector is not None and self._detector.speaking:
            self._detector.stop()
            events.append(SpeechStoppedEvent(self.item, _ms(self.heard)))
        if len(self._buffer) < MIN_TURN_MS * SAMPLE_RATE // 1000:
            raise InvalidRequestError(
                f"Error committing input audio buffer: buffer too small. Expected at least {MIN_TURN_MS}ms of "
                f"audio, but buffer only has {_ms(len(self._buffer)):.2f}ms of audio.", param="audio",
                code="input_audio_buffer_commit_empty")
        turn = self._take(self.heard)
        return [*events, CommittedEvent(turn.item, turn.start_ms, turn.end_ms)], turn

    def clear(self) -> list[LiveEvent]:
        """Drops the audio not yet committed (a turn in progress ends without a transcript)."""
        self._tentative = False
        if self._detector is not None and self._detector.speaking:
            self._detector.stop()
        self._drop_before(self.heard)
        return [ClearedEvent()]

    def _take(self, end: int, speculated: bool = False) -> Turn:
        cut = max(0, end - self._buffer_start)
        turn = Turn(self.item, _ms(self._buffer_start), _ms(self._buffer_start + cut), self._buffer[:cut].copy(),
                    speculated=speculated)
        self._buffer, self._buffer_start = self._buffer[cut:], self._buffer_start + cut
        self.item += 1
        return turn

    def _drop_before(self, sample: int) -> None:
        cut = min(max(0, sample - self._buffer_start), len(self._buffer))
        if cut:
            self._buffer, self._buffer_start = self._buffer[cut:], self._buffer_start + cut


def event_ms(event: SpeechStarted | SpeechStopped | PauseStarted) -> int:
    if isinstance(event, PauseStarted):
        return event.at_ms
    return event.audio_start_ms if isinstance(event, SpeechStarted) else event.audio_end_ms


def _ms(samples: int) -> int:
    return samples * 1000 // SAMPLE_RATE
