"""Several live turns in one Whisper window: one encoder pass for them all.

A live turn is a few seconds of speech, yet each costs a whole 30 s window (the encoder always sees 30 s;
a shorter input is accepted but erratic, see docs/benchmarks.md). On CPU that encoder pass is most of a
turn's cost, so when many sessions' turns wait at once the engine falls behind however they are batched.
Turns waiting together that decode alike (same task, language, beam, ...) are instead laid end to end,
`GAP_S` of digital silence between them, in one window of at most 30 s; the window is decoded with word
timings, and each word goes back to the turn whose audio it lies in, timed in that turn's own seconds.

Only turns whose language is known are packed (a packed window has one language; a live session's
language is kept once two of its turns agree on it, see `whisper_triton.live_service.pin_language`), and
only without a prompt (one turn's prompt would steer the others), forced alignment or per-token
log-probabilities (a token's probability depends on the text of the other turns before it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from whisper_triton.audio import SAMPLE_RATE
from whisper_triton.contract import Segment, Word
from whisper_triton.decoding import DecodeOptions, WindowResult
from whisper_triton.features import WINDOW_SECONDS

__all__ = ["GAP_S", "Pack", "plan_packs", "unpack"]

GAP_S = 1.0  # digital silence between two turns: Whisper ends a segment there, and word timings fall clear of it


@dataclass(frozen=True)
class Pack:
    """Turns laid end to end: `members` index the batch; `offsets` are their starts (seconds) in `samples`."""

    members: tuple[int, ...]
    offsets: tuple[float, ...]
    durations: tuple[float, ...]
    samples: np.ndarray
    options: DecodeOptions


def _key(options: DecodeOptions) -> DecodeOptions | None:
    """What packed turns must share (None: the turn decodes alone)."""
    if (not options.live or options.language is None or options.prompt or options.given is not None
            or options.logprobs):
        return None
    return replace(options, request=None, window=0, speech=None, word_timestamps=False)


def plan_packs(payloads: Sequence[np.ndarray], options: Sequence[DecodeOptions]) -> list[Pack]:
    """Packs of two or more of these windows (in batch order, each into the first pack it fits); windows in
    no pack decode alone."""
    groups: list[tuple[DecodeOptions, list[int]]] = []
    for index, (samples, window) in enumerate(zip(payloads, options, strict=True)):
        key = _key(window)
        if key is None:
            continue
        seconds = len(samples) / SAMPLE_RATE
        fits = (members for other, members in groups
                if other == key and _length(payloads, members) + GAP_S + seconds <= WINDOW_SECONDS)
        members = next(fits, None)
        if members is None:
            members = []
            groups.append((key, members))
        members.append(index)
    return [_pack(payloads, options, key, members) for key, members in groups if len(members) > 1]


def _length(payloads: Sequence[np.ndarray], members: list[int]) -> float:
    return sum(len(payloads[i]) for i in members) / SAMPLE_RATE + GAP_S * (len(members) - 1)


def _pack(payloads: Sequence[np.ndarray], options: Sequence[DecodeOptions], key: DecodeOptions,
          members: list[int]) -> Pack:
    gap = np.zeros(round(GAP_S * SAMPLE_RATE), dtype=np.float32)
    pieces: list[np.ndarray] = []
    offsets, durations, speech = [], [], []
    at = 0
    for index in members:
        if pieces:
            pieces.append(gap)
            at += len(gap)
        samples = np.asarray(payloads[index], dtype=np.float32)
        offset, duration = at / SAMPLE_RATE, len(samples) / SAMPLE_RATE
        own = options[index].speech
        speech += [(offset + a, offset + b) for a, b in (own if own is not None else ((0.0, duration),))]
        offsets.append(offset)
        durations.append(duration)
        pieces.append(samples)
        at += len(samples)
    # Words are what the turns are told apart by; the first turn's id stays for the engine's logs.
    packed = replace(key, speech=tuple(speech), word_timestamps=True, request=options[members[0]].request)
    return Pack(tuple(members), tuple(offsets), tuple(durations), np.concatenate(pieces), packed)


def unpack(pack: Pack, result: WindowResult, options: Sequence[DecodeOptions]) -> list[WindowResult]:
    """The packed window's result as one result per member, in `pack.members` order (`options`: the
    members' own, in that order)."""
    found: list[list[Segment]] = [[] for _ in pack.members]
    for segment in result.segments:
        words = segment.words or [Word(segment.text, segment.start, segment.end, 1.0, list(segment.tokens))]
        owned: dict[int, list[Word]] = {}
        whole = _owner(pack, segment.start), _owner(pack, segment.end)
        for word in words:
            # A segment within one turn's audio is that turn's; one across a gap is split at its words, each
            # word going by its end: the alignment starts a word after a pause where the pause begins.
            owned.setdefault(whole[0] if whole[0] == whole[1] else _owner(pack, word.end - 0.01), []).append(word)
        for place, mine in sorted(owned.items()):
            found[place].append(_piece(segment, mine, pack, place, options[place].word_timestamps))
    return [
        WindowResult(result.language, result.language_probability, segments, result.resumes,
                     own.window, result.loops, result.looping_passes, dict(result.timings))
        for own, segments in zip(options, found, strict=True)
    ]


def _owner(pack: Pack, seconds: float) -> int:
    """The member whose audio (and half of each gap beside it) holds this time; the nearest otherwise."""
    def distance(place: int) -> float:
        start = pack.offsets[place]
        return max(start - seconds, seconds - (start + pack.durations[place]), 0.0)

    return min(range(len(pack.members)), key=distance)


def _piece(segment: Segment, words: list[Word], pack: Pack, place: int, keep_words: bool) -> Segment:
    offset, duration = pack.offsets[place], pack.durations[place]

    def local(seconds: float) -> float:
        return round(min(duration, max(0.0, seconds - offset)), 3)

    moved = [Word(w.word, local(w.start), local(w.end), w.probability, w.tokens) for w in words]
    return Segment(local(words[0].start), local(words[-1].end), "".join(w.word for w in words),
                   [token for w in words for token in w.tokens], segment.temperature, segment.avg_logprob,
                   segment.compression_ratio, segment.no_speech_prob, moved if keep_words else [])
