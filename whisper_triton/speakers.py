"""Merging a transcript with speaker turns: each segment and word gets the speaker it overlaps most."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from whisper_triton.errors import InvalidRequestError


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

    With word timings each word gets the speaker of the turn it overlaps most, a segment the speaker of its
    words, and it spans its words (Whisper's segment bounds often include the pause before or after the
    speech), widened to the edges of its speaker's turn where those lie within TURN_REACH seconds (see
    `_reach_turn_edges`); without, a segment keeps its bounds and gets the speaker it overlaps most.
    Segments are renumbered.
    """
    result: list[dict[str, Any]] = []
    by_words: list[bool] = []  # whether each segment's bounds come from its words
    for segment in assign_speakers(segments, turns):
        groups = _smooth(_runs(segment.get("words") or []))
        if len(groups) == 1:
            words = groups[0]
            result.append({**segment, "start": words[0]["start"], "end": words[-1]["end"], "words": words,
                           "speaker": words[0]["speaker"]})
            by_words.append(True)
            continue
        if not groups:
            result.append(segment)
            by_words.append(False)
            continue
        for group in groups:
            tokens = [t for word in group for t in word.get("tokens", [])]
            result.append({**segment, "start": group[0]["start"], "end": group[-1]["end"],
                           "text": "".join(w["word"] for w in group), "tokens": tokens or segment["tokens"],
                           "words": group, "speaker": group[0]["speaker"]})
            by_words.append(True)
    _reach_turn_edges(result, by_words, turns)
    for index, segment in enumerate(result):
        segment["id"] = index
    return result


# Whisper's word timings miss the edges of speech: the first word of an utterance starts late, the last one
# ends early, and a hesitation or a word it did not transcribe leaves speech outside every word. A segment
# placed by its words starts at its speaker's turn (the diarizer's speech, which ends where the voice
# does) when that turn began at most TURN_REACH s before its first word, and ends likewise; never across
# a neighbouring segment. Chosen on the tuning excerpts of bench/der.py (AMI "trn"; reference speech given
# to the wrong speaker or none in diarized_json: 20.5 % at 0 s, 20.0 % at 0.5 s, 19.3 % at 1 s, 19.1 % at
# 2 s; the smallest reach past which little more is gained).
TURN_REACH = 1.0


def _reach_turn_edges(segments: list[dict[str, Any]], by_words: Sequence[bool],
                      turns: Sequence[Mapping[str, Any]], reach: float = TURN_REACH) -> None:
    """Widens (in place) each segment placed by its words to its speaker's turn edges within `reach`."""
    previous_end = 0.0
    for index, segment in enumerate(segments):
        start, end = float(segment["start"]), float(segment["end"])
        if by_words[index]:
            following = float(segments[index + 1]["start"]) if index + 1 < len(segments) else float("inf")
            for turn in turns:
                if str(turn["speaker"]) != segment.get("speaker"):
                    continue
                first, last = float(turn["start"]), float(turn["end"])
                if first <= start < last and start - first <= reach:
                    start = min(start, max(first, previous_end))
                if first < end <= last and last - end <= reach:
                    end = max(end, min(last, following))
            segment["start"], segment["end"] = round(start, 3), round(end, 3)
        previous_end = max(previous_end, float(segment["end"]))


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


def speaker_letters(speakers: Iterable[str | None]) -> dict[str, str]:
    """Diarization labels (of segments, in order) to OpenAI's `A`, `B`, ... in order of first appearance; known
    speakers keep their names."""
    letters: dict[str, str] = {}
    for speaker in speakers:
        if speaker is not None and speaker not in letters:
            if not is_unnamed(str(speaker)):
                letters[speaker] = str(speaker)
                continue
            index = sum(1 for label in letters if is_unnamed(str(label)))
            letters[speaker] = chr(ord("A") + index) if index < 26 else f"S{index + 1}"
    return letters


# Cosine similarity of a CAM++ reference clip to the centroid of its own cluster measured 0.74-0.94 here,
# to other speakers' clusters at most 0.55 (two voices on one phone line): the default cut sits between.
MATCH_THRESHOLD = 0.65
MAX_NAME_LENGTH = 64
_UNNAMED = re.compile(r"SPEAKER_\d+")


@dataclass(frozen=True)
class KnownSpeaker:
    name: str
    embedding: np.ndarray  # one L2-normalised vector, same embedding model as the diarization


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings (0.0 when either is all zeros)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / norms) if norms > 0 else 0.0


def match_speakers(
    centroids: Mapping[str, np.ndarray], known: Sequence[KnownSpeaker], threshold: float = MATCH_THRESHOLD
) -> dict[str, str]:
    """Cluster label -> known name: the one-to-one assignment of highest total similarity, keeping only
    pairs at or above `threshold` (a known speaker absent from the audio names nobody)."""
    labels = list(centroids)
    if not labels or not known:
        return {}
    from scipy.optimize import linear_sum_assignment

    scores = np.array([[cosine(centroids[label], speaker.embedding) for speaker in known] for label in labels])
    rows, columns = linear_sum_assignment(scores, maximize=True)
    return {labels[r]: known[c].name for r, c in zip(rows, columns, strict=True) if scores[r, c] >= threshold}


def check_name(name: str) -> None:
    """A known speaker's name: 1 to MAX_NAME_LENGTH printable characters."""
    if not name.strip() or len(name) > MAX_NAME_LENGTH or any(ord(c) < 32 for c in name):
        raise InvalidRequestError(
            f"A speaker name must be 1 to {MAX_NAME_LENGTH} printable characters.", param="known_speaker_names"
        )


def is_unnamed(label: str) -> bool:
    """Labels the diarization pipeline made up (`SPEAKER_00`, ...), as opposed to known speakers' names."""
    return bool(_UNNAMED.fullmatch(label))
