"""Several live turns in one Whisper window: one encoder pass for them all.

A live turn is a few seconds of speech, yet each costs a whole 30 s window (the encoder always sees 30 s;
a shorter input is accepted but erratic, see docs/benchmarks.md). On CPU that encoder pass is most of a
turn's cost, so when many sessions' turns wait at once the engine falls behind however they are batched.
Turns waiting together that decode alike (same task, language, beam, ...) are instead laid end to end,
`GAP_S` of digital silence between them, in one window of at most 30 s; the window is decoded with word
timings, and each word goes back to the turn whose audio it lies in, timed in that turn's own seconds.

Only turns whose language is known are packed (a packed window has one language): given by the client,
kept by the session once two of its turns agree on it (`whisper_triton.live_service.pin_language`), or
guessed here from the turn's own audio (`guess_languages`: the encoder on the turn alone, a fraction of a
window's cost; only to pick the language, never to transcribe), and only without a prompt (one turn's
prompt would steer the others), forced alignment or per-token log-probabilities (a token's probability
depends on the text of the other turns before it). The packed window's text is judged turn by turn
(`DecodeOptions.parts`): several speakers saying the same thing is not Whisper repeating itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from whisper_triton.audio import SAMPLE_RATE
from whisper_triton.contract import Segment, Word
from whisper_triton.decoding import FRAMES_PER_SECOND, DecodeOptions, WindowResult
from whisper_triton.engine import WhisperEngine
from whisper_triton.features import FRAMES, WINDOW_SECONDS, window_features

__all__ = ["GAP_S", "GUESS_MIN_PROBABILITY", "Pack", "guess_languages", "guess_on_own_audio", "plan_packs", "unpack"]

GAP_S = 1.0  # digital silence between two turns: Whisper ends a segment there, and word timings fall clear of it
GUESS_MIN_PROBABILITY = 0.8  # a turn's language guessed on its own audio at least this surely is taken for it
GUESS_MARGIN_S = 1.0  # log-mel of silence after the turn that the guess's encoder pass also sees


@dataclass(frozen=True)
class Pack:
    """Turns laid end to end: `members` index the batch; `offsets` are their starts (seconds) in `samples`."""

    members: tuple[int, ...]
    offsets: tuple[float, ...]
    durations: tuple[float, ...]
    samples: np.ndarray
    options: DecodeOptions


def _shareable(options: DecodeOptions) -> bool:
    """Whether a turn may share a window once its language is known."""
    return options.live and not options.prompt and options.given is None and not options.logprobs


def _key(options: DecodeOptions) -> DecodeOptions | None:
    """What packed turns must share (None: the turn decodes alone)."""
    if not _shareable(options) or options.language is None:
        return None
    return replace(options, request=None, window=0, speech=None, word_timestamps=False)


def guess_languages(engine: WhisperEngine, payloads: Sequence[np.ndarray],
                    options: Sequence[DecodeOptions]) -> tuple[list[DecodeOptions], dict[int, float]]:
    """`options` with a language for the live turns that have none, where the turn's own audio says it surely
    enough, so that they can pack (with each other, and with turns that know their language); and the
    probability of each guess taken, by index (the turn's result reports it, as a detected language).

    A turn whose session has no language yet would otherwise cost a whole window alone: its language is
    detected on the 30 s window it is decoded in. Here it is guessed on the encoder's output for the turn
    plus `GUESS_MARGIN_S` (all guessed turns in one pass, cut to the longest): a few seconds of a 30 s
    window cost a fraction of its encoder time. On short turns of real speech in five languages that guess
    was as often right as the window's, and as seldom surely wrong (`python -m bench.language`, its "own
    audio" columns). Only the language comes from it; the text is decoded in a full window, as always (a
    trimmed encoder input transcribes erratically, see docs/benchmarks.md). Guesses under
    `GUESS_MIN_PROBABILITY` are dropped: that turn is detected and decoded in its own window, as before.
    Nothing is guessed unless at least two turns could pack, nor on an English-only model. The encoder is
    given fewer than 3000 frames: CTranslate2's takes them (packing is for that engine only)."""
    chosen = list(options)
    if not engine.is_multilingual:
        return chosen, {}
    packable = [i for i, window in enumerate(options) if _shareable(window)]
    unknown = [i for i in packable if options[i].language is None
               and len(payloads[i]) / SAMPLE_RATE + GAP_S < WINDOW_SECONDS]
    if not unknown or len(packable) < 2:
        return chosen, {}
    guessed: dict[int, float] = {}
    for i, (language, probability) in zip(unknown, guess_on_own_audio(engine, [payloads[i] for i in unknown]),
                                          strict=True):
        if probability >= GUESS_MIN_PROBABILITY:
            chosen[i] = replace(options[i], language=language)
            guessed[i] = probability
    return chosen, guessed


def guess_on_own_audio(engine: WhisperEngine, payloads: Sequence[np.ndarray]) -> list[tuple[str, float]]:
    """The likeliest language of each turn and its probability, from one encoder pass over the turns' own
    audio plus `GUESS_MARGIN_S` (cut to the longest of them), not 30 s."""
    seconds = max(len(samples) for samples in payloads) / SAMPLE_RATE + GUESS_MARGIN_S
    frames = min(FRAMES, 2 * math.ceil(seconds * FRAMES_PER_SECOND / 2))
    features = np.stack([window_features(samples, engine.n_mels)[0][:, :frames] for samples in payloads])
    return [ranking[0] for ranking in engine.detect_language(engine.encode(features))]


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
    packed = replace(key, speech=tuple(speech), word_timestamps=True, request=options[members[0]].request,
                     parts=tuple(offset - GAP_S / 2 for offset in offsets[1:]))
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
