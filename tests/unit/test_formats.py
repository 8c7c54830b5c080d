"""srt / vtt / text rendering."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from frontend.formats import format_timestamp, to_srt, to_text, to_vtt


@dataclass
class Cue:
    start: float
    end: float
    text: str


@pytest.mark.parametrize(
    ("seconds", "srt", "vtt"),
    [
        (0.0, "00:00:00,000", "00:00:00.000"),
        (3.3199999, "00:00:03,320", "00:00:03.320"),
        (59.9996, "00:01:00,000", "00:01:00.000"),
        (3661.5, "01:01:01,500", "01:01:01.500"),
        (90061.25, "25:01:01,250", "25:01:01.250"),
        (-0.2, "00:00:00,000", "00:00:00.000"),
    ],
)
def test_timestamps(seconds: float, srt: str, vtt: str) -> None:
    assert format_timestamp(seconds, ",") == srt
    assert format_timestamp(seconds, ".") == vtt


CUES = [Cue(0.0, 3.32, " The beach was a popular spot on a hot summer day."),
        Cue(3.32, 8.47, " People were swimming in the ocean.")]


def test_srt_matches_openai_layout() -> None:
    assert to_srt(CUES) == (
        "1\n00:00:00,000 --> 00:00:03,320\n The beach was a popular spot on a hot summer day.\n\n"
        "2\n00:00:03,320 --> 00:00:08,470\n People were swimming in the ocean.\n\n"
    )


def test_vtt_matches_openai_layout() -> None:
    assert to_vtt(CUES) == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:03.320\n The beach was a popular spot on a hot summer day.\n\n"
        "00:00:03.320 --> 00:00:08.470\n People were swimming in the ocean.\n\n"
    )


def test_cue_text_cannot_break_the_format() -> None:
    srt = to_srt([Cue(0, 1, "first\n\nsecond --> third")])
    assert srt == "1\n00:00:00,000 --> 00:00:01,000\nfirst\nsecond -> third\n\n"


def test_empty_transcripts() -> None:
    assert to_srt([]) == ""
    assert to_vtt([]) == "WEBVTT\n\n"
    assert to_text("  hello ") == "hello\n"
