"""Voice activity detection and packing of speech into Whisper windows of at most 30 s.

Windows are cut only in silence found by Silero VAD, so no word is split between two windows and every
word is decoded exactly once. Each window keeps its absolute offset, which turns window-relative
timestamps into absolute ones, and the speech VAD found in it, which tells the engine whether a window
where Whisper stopped early still holds speech to decode.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np

from whisper_triton.audio import SAMPLE_RATE
from whisper_triton.contract import VadParameters
from whisper_triton.features import WINDOW_SAMPLES, WINDOW_SECONDS
from whisper_triton.vad import (
    FRAME_SAMPLES,
    SettledSpeech,
    SileroVad,
    VadOptions,
    frame_count,
    speech_timestamps,
)

__all__ = ["WINDOW_SAMPLES", "WINDOW_SECONDS", "Window", "meets_speech", "pack_windows", "plan_windows",
           "planned_windows", "speech_regions", "speech_spans"]

log = logging.getLogger("whisper_triton.windows")

VAD_THRESHOLD = 0.5
SPAN_PAD_MS = 200  # speech spans are widened by this much on each side before packing
LEVEL_TARGET_DB = -25.0  # loud frames of quiet audio are brought to this RMS before VAD...
LEVEL_MAX_GAIN_DB = 30.0  # ...by at most this much...
LEVEL_CEILING_DB = -10.0  # ...and never the loudest frame above this
LEVEL_BLOCK_S = 30.0  # one gain per this much audio
SEGMENT_SPEECH_MARGIN = 0.5  # seconds: a decoded segment this far from all VAD speech is dropped
CLIP_MARGIN_S = 1.0  # non-speech kept before the first and after the last speech of a one-window clip


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
    """Silero VAD's speech probability of each 512-sample frame, the audio brought to speaking level
    (see `level_gains`)."""
    return SileroVad.load().probabilities(samples, level_gains(samples))


def level_gains(samples: np.ndarray) -> np.ndarray:
    """A gain per VAD frame that brings quiet audio to the level of speech close to a microphone.

    Silero VAD misses quiet speech: a talk recorded 20 dB below a close microphone (loud frames near
    -45 dBFS) gets no speech frame at all, and neither would a far speaker or a quiet phone line. Each
    LEVEL_BLOCK_S of audio gets its own gain, so that its loud frames (the 95th percentile of frame RMS)
    reach LEVEL_TARGET_DB, but its loudest frame no more than LEVEL_CEILING_DB (a word in a block of
    silence stays a word at speaking level); never more than LEVEL_MAX_GAIN_DB (noise stays noise),
    never less than 1.
    """
    num_frames = frame_count(len(samples))
    whole = len(samples) // FRAME_SAMPLES
    rms = np.zeros(num_frames, dtype=np.float32)
    block = max(1, round(LEVEL_BLOCK_S * SAMPLE_RATE / FRAME_SAMPLES))
    for first in range(0, whole, block):  # (in blocks: no float64 copy of hours of audio)
        frames = samples[first * FRAME_SAMPLES : min(first + block, whole) * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)
        rms[first : first + len(frames)] = np.sqrt(np.mean(np.square(frames, dtype=np.float32), axis=1))
    if len(samples) > whole * FRAME_SAMPLES:  # the last, partial frame
        rms[whole] = np.sqrt(np.mean(np.square(samples[whole * FRAME_SAMPLES :], dtype=np.float32)))
    gains = np.ones(num_frames, dtype=np.float32)
    target, most = 10 ** (LEVEL_TARGET_DB / 20), 10 ** (LEVEL_MAX_GAIN_DB / 20)
    ceiling = 10 ** (LEVEL_CEILING_DB / 20)
    for first in range(0, num_frames, block):
        frames = rms[first : first + block]
        loud, peak = float(np.percentile(frames, 95)), float(frames.max())
        if loud > 0:  # (a block of digital silence stays as it is)
            gains[first : first + block] = max(1.0, min(most, target / loud, ceiling / peak))
    return gains


def speech_spans(samples: np.ndarray, pad_ms: int = SPAN_PAD_MS, probs: np.ndarray | None = None) -> list[Window]:
    """Speech regions by Silero VAD (widened by `pad_ms` on each side), each at most one window long."""
    if probs is None:
        probs = speech_probabilities(samples)
    return [Window(start, end) for start, end in speech_timestamps(probs, len(samples), _options(pad_ms))]


def speech_regions(samples: np.ndarray, parameters: VadParameters) -> list[tuple[float, float]]:
    """Speech regions (seconds) by the pipeline's VAD (the audio brought to speaking level first), found with
    a client's parameters instead of the windowing's: TASK=vad, `POST /v1/audio/speech/timestamps`."""
    options = VadOptions(
        threshold=parameters.threshold, neg_threshold=parameters.neg_threshold,
        min_speech_duration_ms=parameters.min_speech_duration_ms,
        max_speech_duration_s=parameters.max_speech_duration_s or float("inf"),
        min_silence_duration_ms=parameters.min_silence_duration_ms, speech_pad_ms=parameters.speech_pad_ms)
    spans = speech_timestamps(speech_probabilities(samples), len(samples), options)
    return [(round(start / SAMPLE_RATE, 3), round(end / SAMPLE_RATE, 3)) for start, end in spans]


def pack_windows(spans: list[Window], max_samples: int = WINDOW_SAMPLES, start: int = 0) -> list[Window]:
    """Greedily merges consecutive speech spans into windows no longer than `max_samples`.

    Silence between spans inside one window is kept, so timestamps within a window map linearly
    onto the audio. Spans longer than a window (VAD found no pause) are cut into window-sized parts.
    With `start` (where an earlier window of the same spans ended), the windows from there on: the
    packing starts afresh at each window, so they are the whole packing's from there.
    """
    windows: list[Window] = []
    current: Window | None = None
    for span in spans:
        for part in _split(span, max_samples):
            if part.start < start:
                continue
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

    Audio where VAD finds no speech gives no window: Whisper, given silence, noise or music, invents
    text ("you", "Thank you."). Audio that fits one window stays one window, from CLIP_MARGIN_S before
    the first speech to CLIP_MARGIN_S after the last (a long silence before the words invites inventions
    and pulls Whisper's word timings into it); longer audio is cut in silence. With `use_vad` off every
    sample is decoded, in windows of 30 s. VAD runs either way: the speech it finds decides whether a
    window is decoded on where Whisper stopped early.
    """
    if len(samples) == 0:
        return []
    return _plan(samples, speech_probabilities(samples), use_vad)


def planned_windows(samples: np.ndarray, use_vad: bool = True) -> Generator[list[Window], None, None]:
    """`plan_windows` as VAD goes: yields the windows known so far, in order, each as soon as no later audio
    can change it; together exactly `plan_windows(samples, use_vad)`.

    VAD of an hour takes about a second: the first windows are decoded meanwhile. Closing the iterator
    early stops VAD.
    """
    if len(samples) == 0:
        return
    if len(samples) <= WINDOW_SAMPLES or not use_vad:  # one window, or windows that need no VAD to be cut
        yield plan_windows(samples, use_vad)
        return
    prefixes = SileroVad.load().probability_prefixes(samples, level_gains(samples))
    sent: list[Window] = []
    padded, unpadded = SettledSpeech(len(samples), _options(SPAN_PAD_MS)), SettledSpeech(len(samples), _options(0))
    # Each step costs what the audio since the last window sent holds, not the whole audio so far: a
    # 4-hour file would otherwise spend seconds repacking its first hours.
    try:
        for frames, probs in prefixes:
            if frames >= len(probs):
                break
            spans, _ = padded.settled(probs, frames)
            speech, known_until = unpadded.settled(probs, frames)
            after = sent[-1].end if sent else 0
            fresh = spans[bisect.bisect_right(spans, after, key=lambda span: span[1]) :]  # those ending after it
            closed = pack_windows(_spans(fresh), start=after)[:-1]  # the last may still grow
            new = [w for w in closed if w.end <= known_until]
            if new:
                batch = _attach(new, speech)
                sent.extend(batch)
                yield batch
        # The rest from the scans as they stand (the whole audio's regions, as `plan_windows` finds them).
        rest = _attach(pack_windows(_spans(padded.finish(probs))), unpadded.finish(probs))
    finally:
        prefixes.close()
    if rest[: len(sent)] == sent:
        rest = rest[len(sent) :]
    else:  # cannot happen (the tests check it); if it did, the audio after what was sent is still decoded once
        log.error("windows planned early differ from the whole plan; the rest is planned again")
        end = sent[-1].end
        rest = [w for w in rest if w.start >= end] or [_with_speech(Window(end, len(samples)), [])]
    if rest:
        yield rest


def _plan(samples: np.ndarray, probs: np.ndarray, use_vad: bool) -> list[Window]:
    speech = speech_spans(samples, 0, probs)
    if use_vad and not speech:
        return []
    if len(samples) <= WINDOW_SAMPLES:
        windows = [_around(speech, len(samples)) if use_vad else Window(0, len(samples))]
    elif not use_vad:
        windows = fixed_windows(len(samples))
    else:
        windows = pack_windows(speech_spans(samples, SPAN_PAD_MS, probs))
    return _attach(windows, [(s.start, s.end) for s in speech])


def _spans(regions: list[tuple[int, int]]) -> list[Window]:
    return [Window(start, end) for start, end in regions]


def _attach(windows: list[Window], speech: list[tuple[int, int]]) -> list[Window]:
    """The windows (in order) with the speech (sorted regions, in samples) found in each: each window looks
    only at the regions that can meet it."""
    ends = [end for _, end in speech]
    attached = []
    for window in windows:
        first = bisect.bisect_right(ends, window.start)  # the first region ending after the window starts
        last = bisect.bisect_left(ends, window.end, lo=first)  # ... and the one that ends at or after its end
        attached.append(_with_speech(window, speech[first : last + 1]))
    return attached


def meets_speech(start: float, end: float, speech: tuple[tuple[float, float], ...],
                 margin: float = SEGMENT_SPEECH_MARGIN) -> bool:
    """Whether a segment of a window (window seconds) meets the speech VAD found in it, give or take
    `margin` (Whisper's segment times may be that far off). A segment that does not was invented over
    silence or noise (the usual "Thank you." after the last words of a window)."""
    return any(start < speech_end + margin and end > speech_start - margin for speech_start, speech_end in speech)


def _around(speech: list[Window], num_samples: int) -> Window:
    margin = round(CLIP_MARGIN_S * SAMPLE_RATE)
    return Window(max(0, speech[0].start - margin), min(num_samples, speech[-1].end + margin))


def _with_speech(window: Window, speech: list[tuple[int, int]]) -> Window:
    inside = tuple(
        (round((max(start, window.start) - window.start) / SAMPLE_RATE, 3),
         round((min(end, window.end) - window.start) / SAMPLE_RATE, 3))
        for start, end in speech
        if end > window.start and start < window.end
    )
    return Window(window.start, window.end, inside)


def _split(span: Window, max_samples: int) -> list[Window]:
    return [
        Window(s, min(s + max_samples, span.end)) for s in range(span.start, span.end, max_samples)
    ]


def warm_up() -> None:
    """Loads the VAD model before the first request."""
    speech_probabilities(np.zeros(SAMPLE_RATE, dtype=np.float32))
