"""Voice activity detection and packing of speech into Whisper windows of at most 30 s.

Windows are cut only in silence found by Silero VAD (v6, ONNX, shipped in faster-whisper), so no
word is split between two windows and every word is decoded exactly once. Each window keeps its
absolute offset, which turns window-relative timestamps into absolute ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from faster_whisper.vad import VadOptions, get_speech_timestamps

from whisper_triton.audio import SAMPLE_RATE

WINDOW_SECONDS = 30
WINDOW_SAMPLES = WINDOW_SECONDS * SAMPLE_RATE


@dataclass(frozen=True)
class Window:
    """A slice of the audio, in samples: [start, end)."""

    start: int
    end: int

    @property
    def offset(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def duration(self) -> float:
        return (self.end - self.start) / SAMPLE_RATE


def speech_spans(samples: np.ndarray, threshold: float = 0.5, pad_ms: int = 200) -> list[Window]:
    """Speech regions by Silero VAD (widened by `pad_ms` on each side), each at most one window long."""
    options = VadOptions(
        threshold=threshold,
        min_silence_duration_ms=160,
        speech_pad_ms=pad_ms,
        # Leave room for the padding so that a maximal span still fits one window.
        max_speech_duration_s=WINDOW_SECONDS - 1,
    )
    return [
        Window(int(span["start"]), int(span["end"]))
        for span in get_speech_timestamps(samples, options, sampling_rate=SAMPLE_RATE)
    ]


def has_speech(samples: np.ndarray, min_seconds: float = 0.5) -> bool:
    """Whether Silero VAD finds at least `min_seconds` of speech (unpadded) in the samples."""
    if len(samples) < min_seconds * SAMPLE_RATE:
        return False
    spans = speech_spans(samples, pad_ms=0)
    return sum(span.end - span.start for span in spans) >= min_seconds * SAMPLE_RATE


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


def plan_windows(samples: np.ndarray, use_vad: bool = True, vad_threshold: float = 0.5) -> list[Window]:
    """Windows to transcribe: one for audio that fits a window, else VAD-packed windows."""
    if len(samples) == 0:
        return []
    if len(samples) <= WINDOW_SAMPLES:
        # Whisper's own no-speech detection handles a short clip better than cutting it.
        return [Window(0, len(samples))]
    if not use_vad:
        return fixed_windows(len(samples))
    return pack_windows(speech_spans(samples, vad_threshold))


def _split(span: Window, max_samples: int) -> list[Window]:
    return [
        Window(s, min(s + max_samples, span.end)) for s in range(span.start, span.end, max_samples)
    ]


def warm_up() -> None:
    """Loads the VAD model (and the log-mel filters of both mel sizes) before the first long request."""
    from whisper_triton.features import window_features

    speech_spans(np.zeros(SAMPLE_RATE, dtype=np.float32))
    for n_mels in (80, 128):
        window_features(np.zeros(SAMPLE_RATE, dtype=np.float32), n_mels)
