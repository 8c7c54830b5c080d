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


def split_by_speaker(
    segments: Sequence[Mapping[str, Any]], turns: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Speakers on segments and words; a segment whose words change speaker is split there.

    Without word timings a segment keeps its bounds and gets the speaker it overlaps most.
    Segments are renumbered.
    """
    result: list[dict[str, Any]] = []
    for segment in assign_speakers(segments, turns):
        groups = _smooth(_runs(segment.get("words") or []))
        if len(groups) <= 1:
            result.append(segment)
            continue
        for group in groups:
            tokens = [t for word in group for t in word.get("tokens", [])]
            result.append({**segment, "start": group[0]["start"], "end": group[-1]["end"],
                           "text": "".join(w["word"] for w in group), "tokens": tokens or segment["tokens"],
                           "words": group, "speaker": group[0]["speaker"]})
    for index, segment in enumerate(result):
        segment["id"] = index
    return result


def _runs(words: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    runs: list[list[dict[str, Any]]] = []
    for word in words:
        if runs and runs[-1][-1]["speaker"] == word["speaker"]:
            runs[-1].append(word)
        else:
            runs.append([word])
    return runs


def _smooth(
    runs: list[list[dict[str, Any]]], max_words: int = 1, max_seconds: float = 0.6
) -> list[list[dict[str, Any]]]:
    """A lone short word between turns is a timing artefact more often than a speaker change:
    it joins the run before it (or after it, at the start)."""
    smoothed: list[list[dict[str, Any]]] = []
    for index, run in enumerate(runs):
        short = len(run) <= max_words and run[-1]["end"] - run[0]["start"] <= max_seconds and len(runs) > 1
        if short and smoothed:
            smoothed[-1].extend({**w, "speaker": smoothed[-1][0]["speaker"]} for w in run)
        elif short and index + 1 < len(runs):
            runs[index + 1][0:0] = [{**w, "speaker": runs[index + 1][0]["speaker"]} for w in run]
        elif smoothed and smoothed[-1][0]["speaker"] == run[0]["speaker"]:
            smoothed[-1].extend(run)
        else:
            smoothed.append(run)
    return smoothed


def speaker_letters(segments: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Diarization labels to OpenAI's `A`, `B`, ... in order of first appearance."""
    letters: dict[str, str] = {}
    for segment in segments:
        speaker = segment.get("speaker")
        if speaker is not None and speaker not in letters:
            index = len(letters)
            letters[speaker] = chr(ord("A") + index) if index < 26 else f"S{index + 1}"
    return letters
