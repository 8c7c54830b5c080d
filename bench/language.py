"""Language identification on short live turns, and which detections would pin a live session's language.

    python -m bench.language [--clips 60] [--model base]

Real read speech of five languages: English (the "report" and "tune" corpora) and Debian's Asterisk prompts
in Spanish (read by the English corpus's speaker), French, Italian and Russian (`harness.languages`); per
language a seeded draw of `--clips` clips of 1.5-10 s, each made a live turn (0.3 s before the speech,
0.5 s of pause after it) and its language detected as the engine detects a turn's (the turn's 30 s window,
CTranslate2, int8, 2 threads) and as the engine guesses it before packing a turn that has none
(`whisper_triton.packing.guess_on_own_audio`: the encoder on the turn's own audio plus 1 s, not 30 s).
Prints per language: right and wrong guesses of each way, the highest probability of a wrong guess and the
lowest of a right one, the turns sure enough to count towards a session's language
(`whisper_triton.live_service.pin_language`: at least PIN_MIN_SECONDS, probability PIN_MIN_PROBABILITY) and
how many of those are wrong; the own-audio guesses the engine takes (probability GUESS_MIN_PROBABILITY)
and how many of those are wrong; the language each turn is decoded in as served (the own-audio guess where
taken, the window's otherwise) and how often that is right; then the turns, in draw order, as sessions of
`--session-turns` turns, each run through `pin_language` as the live model does with the served
detections: sessions whose language was pinned right, wrong, or not at all (each turn then detected on its
own). JSON to bench/results/<date>-<host>-language.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import msgspec
import numpy as np

from bench.packing import as_turn
from bench.saved import save_run
from harness.languages import LANGUAGES, language_clips
from harness.speech import speech_clips
from whisper_triton.ctranslate2_engine import CTranslate2Engine
from whisper_triton.features import window_features
from whisper_triton.live_service import PIN_MIN_PROBABILITY, PIN_MIN_SECONDS, pin_language
from whisper_triton.models import resolve_model
from whisper_triton.packing import GUESS_MIN_PROBABILITY, guess_on_own_audio


class Row(msgspec.Struct):
    language: str
    clips: int
    right: int
    wrong: list[tuple[str, float, float]]  # (guess, probability, seconds) of each wrong guess
    lowest_right: float
    sure: int  # turns that count towards their session's language
    sure_wrong: int
    own_right: int  # guessed on the turn's own audio
    own_taken: int  # own-audio guesses the engine takes (GUESS_MIN_PROBABILITY)
    own_taken_wrong: int
    # turns whose two ways agree, each sure (window: at least PIN_MIN_SECONDS and PIN_MIN_PROBABILITY; own
    # audio: PIN_MIN_PROBABILITY): would one such turn be safe enough to keep a session's language?
    agree: int
    agree_wrong: int
    served_right: int  # the language each turn is decoded in: own-audio guess where taken, else the window's
    sessions: int
    pinned_right: int
    pinned_wrong: int


def english_clips() -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(c.samples, np.float32) for corpus in ("report", "tune") for c in speech_clips(corpus)
                 if 1.5 <= c.duration <= 10.0)


def measure(engine: CTranslate2Engine, language: str, clips: list[np.ndarray], session_turns: int) -> Row:
    guesses, own, served = [], [], []
    for samples in clips:
        turn = as_turn(samples)
        features, _ = window_features(turn, engine.n_mels)
        guess, probability = engine.detect_language(engine.encode(features[None]))[0][0]
        guesses.append((guess, probability, len(turn) / 16_000))
        own.append(guess_on_own_audio(engine, [turn])[0])
        served.append((*own[-1], guesses[-1][2]) if own[-1][1] >= GUESS_MIN_PROBABILITY else guesses[-1])
    right = [p for g, p, _ in guesses if g == language]
    wrong = [(g, round(p, 3), round(s, 1)) for g, p, s in guesses if g != language]
    sure = [g for g, p, s in guesses if s >= PIN_MIN_SECONDS and p >= PIN_MIN_PROBABILITY]
    taken = [g for g, p in own if p >= GUESS_MIN_PROBABILITY]
    agree = [g for (g, p, s), (o, q) in zip(guesses, own, strict=True)
             if g == o and s >= PIN_MIN_SECONDS and p >= PIN_MIN_PROBABILITY and q >= PIN_MIN_PROBABILITY]
    pinned = []
    for start in range(0, len(served) - session_turns + 1, session_turns):
        candidate, kept = None, None
        for guess, probability, seconds in served[start : start + session_turns]:
            candidate, kept = pin_language(candidate, guess, probability, "text", seconds)
            if kept is not None:
                break
        pinned.append(kept)
    return Row(language, len(clips), len(right), wrong, round(min(right, default=0.0), 3), len(sure),
               sum(g != language for g in sure), sum(g == language for g, _ in own), len(taken),
               sum(g != language for g in taken), len(agree), sum(g != language for g in agree),
               sum(g == language for g, _, _ in served), len(pinned),
               sum(p == language for p in pinned),
               sum(p is not None and p != language for p in pinned))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--session-turns", type=int, default=6)
    parser.add_argument("--model", default="base")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    engine = CTranslate2Engine(resolve_model(args.model).path, intra_threads=2)
    rows = []
    for language in ("en", *LANGUAGES):
        pool = english_clips() if language == "en" else language_clips(language)
        chosen = np.random.default_rng(0).permutation(len(pool))[: args.clips]
        rows.append(measure(engine, language, [pool[i] for i in chosen], args.session_turns))
        print(rows[-1], flush=True)
    print(f"\nLanguage of live turns, {args.model} int8. Window: detected on the turn's 30 s window (sure: >= "
          f"{PIN_MIN_SECONDS} s and probability >= {PIN_MIN_PROBABILITY}); own audio: guessed on the turn plus 1 s "
          f"(taken: probability >= {GUESS_MIN_PROBABILITY}); served: the own-audio guess where taken, else the "
          f"window's; both sure: the window's and the own-audio guess agree, each sure; sessions keep a language "
          f"two sure served turns agree on:")
    print(f"{'language':<8} {'turns':>5} {'window right':>12} {'wrong: max p':>12} {'right: min p':>12} "
          f"{'sure':>5} {'sure wrong':>10} {'own right':>9} {'taken':>5} {'taken wrong':>11} {'both sure':>9} "
          f"{'both wrong':>10} {'served right':>12} {'sessions':>8} {'pinned right':>12} {'pinned wrong':>12}")
    for row in rows:
        worst = max((p for _, p, _ in row.wrong), default=0.0)
        print(f"{row.language:<8} {row.clips:5d} {row.right:12d} {worst:12.2f} {row.lowest_right:12.2f} "
              f"{row.sure:5d} {row.sure_wrong:10d} {row.own_right:9d} {row.own_taken:5d} {row.own_taken_wrong:11d} "
              f"{row.agree:9d} {row.agree_wrong:10d} {row.served_right:12d} {row.sessions:8d} "
              f"{row.pinned_right:12d} {row.pinned_wrong:12d}")
    out = save_run("language", {"rows": rows}, args.json, model=args.model)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
