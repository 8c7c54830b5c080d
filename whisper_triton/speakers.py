"""Merging a transcript with speaker turns: each segment and word gets the speaker it overlaps most."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def overlap(a_start: float, a_end: float, b_start: float, b_end: float) -> float:
    return max(0.0, min(a_end, b_end) - max(a_start, b_start))


def speaker_at(start: float, end: float, turns: Sequence[Mapping[str, Any]]) -> str | None:
    """The speaker with the most overlap with [start, end]; for no overlap, the nearest turn's."""
    if not turns:
        return None
    totals: dict[str, float] = {}
    for turn in turns:
        shared = overlap(start, end, float(turn["start"]), float(turn["end"]))
        if shared > 0:
            totals[str(turn["speaker"])] = totals.get(str(turn["speaker"]), 0.0) + shared
    if totals:
        return max(totals, key=lambda speaker: totals[speaker])
    middle = (start + end) / 2
    nearest = min(turns, key=lambda t: min(abs(middle - float(t["start"])), abs(middle - float(t["end"]))))
    return str(nearest["speaker"])


def assign_speakers(
    segments: Sequence[Mapping[str, Any]], turns: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Copies of `segments` with `speaker` set on each segment and on each of its words."""
    merged = []
    for segment in segments:
        copy = dict(segment)
        copy["speaker"] = speaker_at(float(segment["start"]), float(segment["end"]), turns)
        if segment.get("words"):
            copy["words"] = [
                {**word, "speaker": speaker_at(float(word["start"]), float(word["end"]), turns)}
                for word in segment["words"]
            ]
        merged.append(copy)
    return merged
