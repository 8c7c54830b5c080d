"""One live transcription session: its audio buffer cut into turns by VAD or by the client's commits.
Pure logic; the wire types are in `live_contract`, `model_repository/whisper_live` serves it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from whisper_triton.audio import SAMPLE_RATE
from whisper_triton.errors import InvalidRequestError
from whisper_triton.live import (
    FRAME_MS,
    IdleTimeout,
    LiveVad,
    PauseEnded,
    PauseStarted,
    SpeechStarted,
    SpeechStopped,
    TurnDetector,
    TurnOptions,
)
from whisper_triton.live_audio import LiveDecoder, LiveFormat
from whisper_triton.live_contract import (
    ClearedEvent,
    CommittedEvent,
    LiveConfig,
    LiveEvent,
    SpeechStartedEvent,
    SpeechStoppedEvent,
    TimeoutEvent,
    TurnDetection,
)
from whisper_triton.vad import FRAME_SAMPLES

__all__ = ["LiveSession", "Retract", "Turn", "turn_options"]
MIN_TURN_MS = 100  # a manual commit of less audio is refused, as OpenAI refuses an empty buffer
# After this much of a pause the turn's transcription starts, before the pause is long enough to end the
# turn: if the turn does end, its transcript is ready that much sooner (the rest of its audio is silence).
SPECULATE_MS = 200


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
    silent: bool = False  # an idle timeout's turn: only silence, nothing to transcribe


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
        turns = turn_options(config.turn_detection) if config.turn_detection is not None else None
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
            if isinstance(event, IdleTimeout):
                silence = self._idle(event)
                turns.append(silence)
                events += [TimeoutEvent(silence.item, silence.start_ms, silence.end_ms),
                           CommittedEvent(silence.item, silence.start_ms, silence.end_ms)]
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
        if self._detector is not None and self._detector.stop() is not None:
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
        if self._detector is not None:
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

    def _idle(self, timeout: IdleTimeout) -> Turn:
        """The silence of an idle timeout as a turn of its own (no audio: there is nothing to transcribe)."""
        start, end = (self._vad_start + ms * SAMPLE_RATE // 1000 for ms in (timeout.audio_start_ms,
                                                                              timeout.audio_end_ms))
        self._drop_before(end)
        self.item += 1
        return Turn(self.item - 1, _ms(start), _ms(end), np.zeros(0, dtype=np.float32), silent=True)

    def _drop_before(self, sample: int) -> None:
        cut = min(max(0, sample - self._buffer_start), len(self._buffer))
        if cut:
            self._buffer, self._buffer_start = self._buffer[cut:], self._buffer_start + cut


def turn_options(detection: TurnDetection) -> TurnOptions:
    """The turn detector's options for a session's `turn_detection` (InvalidRequestError when out of range)."""
    detection.check()
    silence = detection.silence_ms
    speculate = SPECULATE_MS if silence > SPECULATE_MS + FRAME_MS else 0
    return TurnOptions(detection.threshold, detection.prefix_padding_ms, silence, speculate_ms=speculate,
                       idle_timeout_ms=detection.idle_timeout_ms or 0)


def event_ms(event: SpeechStarted | SpeechStopped | PauseStarted) -> int:
    if isinstance(event, PauseStarted):
        return event.at_ms
    return event.audio_start_ms if isinstance(event, SpeechStarted) else event.audio_end_ms


def _ms(samples: int) -> int:
    return samples * 1000 // SAMPLE_RATE
