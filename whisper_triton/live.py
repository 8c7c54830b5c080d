"""Live audio: voice activity as the audio arrives, turns (utterances) cut where the speaker stops, and the
buffer of one live session. Pure logic (NumPy and the Silero model); the Triton model and the WebSocket use it.

`LiveVad` gives the probabilities the file VAD (`whisper_triton.vad`) gives for the same audio: the same
model, the same restarts every CHUNK_FRAMES from WARM_FRAMES of warm-up, the LSTM state carried between
pushes. Only the level gain differs: a file's gain per 30 s block looks at the whole block, live audio's
looks at the last 30 s heard.

`TurnDetector` is OpenAI's `server_vad` turn detection: speech starts when a frame's probability reaches
`threshold` (the turn keeps `prefix_padding_ms` of audio before it) and stops after `silence_duration_ms`
below it (with Silero's hysteresis: below `threshold - 0.15`); the turn's audio then ends there, its
trailing silence included. A turn never runs longer than one Whisper window (30 s).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from whisper_triton.audio import SAMPLE_RATE
from whisper_triton.vad import CHUNK_FRAMES, CONTEXT_SAMPLES, FRAME_SAMPLES, WARM_FRAMES, LstmState, SileroVad
from whisper_triton.windows import LEVEL_BLOCK_S, LEVEL_CEILING_DB, LEVEL_MAX_GAIN_DB, LEVEL_TARGET_DB

__all__ = ["FRAME_MS", "LiveVad", "PauseEnded", "PauseStarted", "SpeechStarted", "SpeechStopped", "TurnDetector",
           "TurnOptions"]

FRAME_MS = FRAME_SAMPLES * 1000 // SAMPLE_RATE  # 32 ms
MAX_TURN_MS = 30_000  # one Whisper window


class LiveVad:
    """Silero VAD over audio pushed as it arrives (16 kHz float32): a probability per whole 32 ms frame."""

    def __init__(self, vad: SileroVad | None = None, level: bool = True) -> None:
        self._vad = vad or SileroVad.load()
        self._level = level
        self._pending = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)  # the next frame's context, then a partial frame
        self._recent = np.zeros((0, 128), dtype=np.float32)  # LSTM inputs of the last WARM_FRAMES frames
        self._state: LstmState | None = None
        self._loudness: deque[float] = deque(maxlen=round(LEVEL_BLOCK_S * SAMPLE_RATE / FRAME_SAMPLES))
        self.frames = 0  # whole frames heard

    def push(self, samples: np.ndarray) -> np.ndarray:
        """The speech probabilities of the frames these samples complete (none while a frame is partial)."""
        audio = np.concatenate([self._pending, np.asarray(samples, dtype=np.float32)])
        count = (len(audio) - CONTEXT_SAMPLES) // FRAME_SAMPLES
        if count <= 0:
            self._pending = audio
            return np.zeros(0, dtype=np.float32)
        whole = audio[: CONTEXT_SAMPLES + count * FRAME_SAMPLES]
        self._pending = audio[count * FRAME_SAMPLES :]
        features = self._vad.encode_frames(whole, self._gains(whole[CONTEXT_SAMPLES:]) if self._level else None)
        history = np.concatenate([self._recent, features])
        probs = []
        done = 0
        while done < count:
            frame = self.frames + done
            if frame % CHUNK_FRAMES == 0 and frame > 0:  # a new chunk: from the state after its warm-up frames
                at = len(self._recent) + done
                _, self._state = self._vad.run_lstm(history[at - WARM_FRAMES : at], None)
            stop = min(count, done + CHUNK_FRAMES - frame % CHUNK_FRAMES)
            chunk, self._state = self._vad.run_lstm(features[done:stop], self._state)
            probs.append(chunk)
            done = stop
        self._recent = history[-WARM_FRAMES:]
        self.frames += count
        return np.concatenate(probs)

    def _gains(self, frames: np.ndarray) -> np.ndarray:
        """One gain for these frames, as `windows.level_gains` computes a block's, from the last 30 s heard."""
        rms = np.sqrt(np.mean(np.square(frames.reshape(-1, FRAME_SAMPLES)), axis=1))
        self._loudness.extend(float(v) for v in rms)
        heard = np.fromiter(self._loudness, dtype=np.float32)
        loud, peak = float(np.percentile(heard, 95)), float(heard.max())
        gain = 1.0
        if loud > 0:
            gain = max(1.0, min(10 ** (LEVEL_MAX_GAIN_DB / 20), 10 ** (LEVEL_TARGET_DB / 20) / loud,
                                10 ** (LEVEL_CEILING_DB / 20) / peak))
        return np.full(len(rms), gain, dtype=np.float32)


@dataclass(frozen=True)
class TurnOptions:
    """OpenAI's `server_vad` settings (its defaults)."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    max_turn_ms: int = MAX_TURN_MS
    # A pause this long (shorter than silence_duration_ms) may end the turn: `PauseStarted`, so that its
    # transcription can start before the turn is known to end; 0 = never.
    speculate_ms: int = 0
    # No speech for this long since the last turn (or timeout) ended: `IdleTimeout`; 0 = never.
    idle_timeout_ms: int = 0


@dataclass(frozen=True)
class SpeechStarted:
    audio_start_ms: int  # where the turn's audio starts (its prefix padding included)


@dataclass(frozen=True)
class SpeechStopped:
    audio_end_ms: int  # where the turn's audio ends (its trailing silence included)


@dataclass(frozen=True)
class PauseStarted:
    """The speaker has paused for `speculate_ms`: the turn may end here (its speech ends by `at_ms`)."""

    at_ms: int


@dataclass(frozen=True)
class PauseEnded:
    """The speaker went on after a `PauseStarted`: the turn did not end there."""


@dataclass(frozen=True)
class IdleTimeout:
    """No speech from `audio_start_ms` (where the last turn or timeout ended) to `audio_end_ms`."""

    audio_start_ms: int
    audio_end_ms: int


TurnEvent = SpeechStarted | SpeechStopped | PauseStarted | PauseEnded | IdleTimeout


class TurnDetector:
    """Turns in a stream of frame probabilities (one per FRAME_MS, from the session's start)."""

    def __init__(self, options: TurnOptions | None = None) -> None:
        self.options = options or TurnOptions()
        self._neg = max(self.options.threshold - 0.15, 0.01)
        self.frame = 0  # frames seen
        self.speaking = False
        self.turn_start_ms = 0
        self._silence_from: int | None = None  # ms where the current silence began, while speaking
        self._paused = False  # a PauseStarted was sent for the current silence
        self._floor_ms = 0  # audio before this belongs to a turn already ended

    def push(self, probs: np.ndarray) -> list[TurnEvent]:
        events: list[TurnEvent] = []
        options = self.options
        for prob in np.asarray(probs, dtype=np.float64):
            now = self.frame * FRAME_MS
            self.frame += 1
            if not self.speaking:
                if prob >= options.threshold:
                    self.speaking, self._silence_from = True, None
                    self.turn_start_ms = max(self._floor_ms, now - options.prefix_padding_ms)
                    events.append(SpeechStarted(self.turn_start_ms))
                elif 0 < options.idle_timeout_ms <= now + FRAME_MS - self._floor_ms:
                    events.append(IdleTimeout(self._floor_ms, now + FRAME_MS))
                    self._floor_ms = now + FRAME_MS
                continue
            if prob >= options.threshold:
                self._silence_from = None
                if self._paused:
                    self._paused = False
                    events.append(PauseEnded())
            elif prob < self._neg and self._silence_from is None:
                self._silence_from = now
            end = now + FRAME_MS
            silent = self._silence_from is not None and end - self._silence_from >= options.silence_duration_ms
            if silent or end - self.turn_start_ms >= options.max_turn_ms:
                events.append(self._stop(end))
            elif (self._silence_from is not None and not self._paused and
                  0 < options.speculate_ms <= end - self._silence_from):
                self._paused = True
                events.append(PauseStarted(end))
        return events

    def stop(self) -> SpeechStopped | None:
        """Ends a turn in progress where the audio heard so far ends (the client committed or cleared the
        buffer); the idle time starts again there in any case."""
        if self.speaking:
            return self._stop(self.frame * FRAME_MS)
        self._floor_ms = self.frame * FRAME_MS
        return None

    def _stop(self, end_ms: int) -> SpeechStopped:
        self.speaking, self._silence_from, self._floor_ms, self._paused = False, None, end_ms, False
        return SpeechStopped(end_ms)
