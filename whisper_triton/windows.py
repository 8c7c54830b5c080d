"""Voice activity detection and packing of speech into Whisper windows of at most 30 s.

Windows are cut only in silence found by Silero VAD, so no word is split between two windows and every
word is decoded exactly once. Each window keeps its absolute offset, which turns window-relative
timestamps into absolute ones, and the speech VAD found in it, which tells the engine whether a window
where Whisper stopped early still holds speech to decode.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from whisper_triton.audio import SAMPLE_RATE
from whisper_triton.features import WINDOW_SAMPLES, WINDOW_SECONDS
from whisper_triton.vad import SileroVad, VadOptions, speech_timestamps

__all__ = ["WINDOW_SAMPLES", "WINDOW_SECONDS", "Window", "pack_windows", "plan_windows", "speech_spans"]

VAD_THRESHOLD = 0.5
SPAN_PAD_MS = 200  # speech spans are widened by this much on each side before packing


@dataclass(frozen=True)
class Window:
    """A slice of the audio, in samples: [start, end), with the speech VAD found in it (window seconds)."""

    start: int
    end: int
    speech: tuple[tuple[float, float], ...] = field(default=(), compare=False)

    @property
    def offset(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def duration(self) -> float:
        return (self.end - self.start) / SAMPLE_RATE


def _options(pad_ms: int) -> VadOptions:
    # Leave room for the padding so that a maximal span still fits one window.
    return VadOptions(threshold=VAD_THRESHOLD, min_silence_duration_ms=160, speech_pad_ms=pad_ms,
                      max_speech_duration_s=WINDOW_SECONDS - 1)


def speech_probabilities(samples: np.ndarray) -> np.ndarray:
    """Silero VAD's speech probability of each 512-sample frame."""
    return SileroVad.load().probabilities(samples)


def speech_spans(samples: np.ndarray, pad_ms: int = SPAN_PAD_MS, probs: np.ndarray | None = None) -> list[Window]:
    """Speech regions by Silero VAD (widened by `pad_ms` on each side), each at most one window long."""
    if probs is None:
        probs = speech_probabilities(samples)
    return [Window(start, end) for start, end in speech_timestamps(probs, len(samples), _options(pad_ms))]


def pack_windows(spans: list[Window], max_samples: int = WINDOW_SAMPLES) -> list[Window]:
    """Greedily merges consecutive speech spans into windows no longer than `max_samples`.

    Silence between spans inside one window is kept, so timestamps within a window map linearly
    onto the audio. Spans longer than a window (VAD found no pause) are cut into window-sized parts.
    """
    windows: list[Window] = []
    current: Window | None = None
    for span in spans:
        for part in _split(span, max_samples):
            if current is not None and part.end - current.start <= max_samples:
                current = Window(current.start, part.end)
            else:
                if current is not None:
                    windows.append(current)
                current = part
    if current is not None:
        windows.append(current)
    return windows


def fixed_windows(num_samples: int, max_samples: int = WINDOW_SAMPLES) -> list[Window]:
    """Consecutive windows covering the whole audio, for when VAD is turned off."""
    return [Window(s, min(s + max_samples, num_samples)) for s in range(0, num_samples, max_samples)]


def plan_windows(samples: np.ndarray, use_vad: bool = True) -> list[Window]:
    """Windows to transcribe, each with the (unpadded) speech VAD found in it.

    Audio that fits one window stays one window (Whisper's own no-speech detection handles a short clip
    better than cutting it); longer audio is cut in silence, or every 30 s when `use_vad` is off. VAD runs
    either way: the speech it finds decides whether a window is decoded on where Whisper stopped early.
    """
    if len(samples) == 0:
        return []
    probs = speech_probabilities(samples)
    if len(samples) <= WINDOW_SAMPLES:
        windows = [Window(0, len(samples))]
    elif not use_vad:
        windows = fixed_windows(len(samples))
    else:
        windows = pack_windows(speech_spans(samples, SPAN_PAD_MS, probs))
    speech = speech_spans(samples, 0, probs)
    return [_with_speech(window, speech) for window in windows]


def _with_speech(window: Window, speech: list[Window]) -> Window:
    inside = tuple(
        (round((max(s.start, window.start) - window.start) / SAMPLE_RATE, 3),
         round((min(s.end, window.end) - window.start) / SAMPLE_RATE, 3))
        for s in speech
        if s.end > window.start and s.start < window.end
    )
    return Window(window.start, window.end, inside)


def _split(span: Window, max_samples: int) -> list[Window]:
    return [
        Window(s, min(s + max_samples, span.end)) for s in range(span.start, span.end, max_samples)
    ]


def warm_up() -> None:
    """Loads the VAD model before the first request."""
    speech_probabilities(np.zeros(SAMPLE_RATE, dtype=np.float32))
