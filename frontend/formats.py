"""Rendering of a transcript as text, SubRip (srt) and WebVTT (vtt)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Protocol

_ARROW = re.compile(r"--+>")


class TimedText(Protocol):
    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...
    @property
    def text(self) -> str: ...


def format_timestamp(seconds: float, decimal_marker: str) -> str:
    """HH:MM:SS,mmm (srt) or HH:MM:SS.mmm (vtt); hours are not wrapped at 24."""
    scaled = seconds * 1000
    milliseconds = round(scaled) if 0 < scaled < math.inf else 0  # negative (and NaN, inf) times read as 0
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    secs, milliseconds = divmod(milliseconds, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_marker}{milliseconds:03d}"


def _cue_text(text: str) -> str:
    # A blank line would end the cue early in both formats; "-->" would read as a time line (a plain
    # replace would turn "--->" into "-->" again, hence every run of dashes before ">").
    lines = [line for line in _ARROW.sub("->", text).splitlines() if line.strip()]
    return "\n".join(lines) or " "


def to_srt(segments: Sequence[TimedText]) -> str:
    cues = [
        f"{number}\n{format_timestamp(s.start, ',')} --> {format_timestamp(s.end, ',')}\n{_cue_text(s.text)}\n"
        for number, s in enumerate(segments, start=1)
    ]
    return "\n".join(cues) + ("\n" if cues else "")


def to_vtt(segments: Sequence[TimedText]) -> str:
    cues = [
        f"{format_timestamp(s.start, '.')} --> {format_timestamp(s.end, '.')}\n{_cue_text(s.text)}\n"
        for s in segments
    ]
    return "WEBVTT\n\n" + "\n".join(cues) + ("\n" if cues else "")


def to_text(text: str) -> str:
    return text.strip() + "\n"
