"""Live turns sharing one Whisper window against each decoded alone: engine time and WER per turn.

    python -m bench.packing [--sets 3] [--turns 48] [--model base]

Each set is `--turns` clips of 1.5-10 s of the "report" corpus (real read speech; a seeded draw per set),
each made a live turn as the live model makes one (0.3 s before the speech, 0.5 s of pause after it),
language given. The engine model's own batch function (`whisper_triton.scheduler.decode_queued`, on the
CTranslate2 engine in this process, int8, 2 threads, greedy) decodes them in batches of 8 turns, once with
packing (`WHISPER_ENGINE_PACK_TURNS`: the turns of a batch laid end to end in windows of up to 30 s) and
once without (one window each). It prints per set: windows, engine seconds, WER per turn (the mean of each
turn's WER against its clip's text: a word given to the wrong turn counts twice) and WER of all turns
joined (what packing changes in the words themselves); JSON to bench/results/<date>-<host>-packing.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import msgspec
import numpy as np

from bench.saved import save_run
from harness.speech import SpeechClip, speech_clips
from harness.text import wer
from whisper_triton.ctranslate2_engine import CTranslate2Engine
from whisper_triton.decoding import DecodeOptions, WindowResult
from whisper_triton.models import read_model_info, resolve_model
from whisper_triton.packing import plan_packs
from whisper_triton.scheduler import QueuedWindow, decode_queued
from whisper_triton.text import WhisperTokenizer

BATCH = 8
LEAD_S, PAUSE_S = 0.3, 0.5  # what server_vad keeps around a turn's speech (prefix padding, silence duration)


class Row(msgspec.Struct):
    set: int
    packed: bool
    turns: int
    windows: int
    engine_s: float
    wer_per_turn: float
    wer_joined: float


def as_turn(samples: np.ndarray) -> np.ndarray:
    """Speech as the live model's turn holds it: LEAD_S before, PAUSE_S after."""
    return np.concatenate([np.zeros(round(LEAD_S * 16_000), np.float32), np.asarray(samples, np.float32),
                           np.zeros(round(PAUSE_S * 16_000), np.float32)])


def turns(clips: list[SpeechClip]) -> list[QueuedWindow]:
    windows = []
    for n, clip in enumerate(clips):
        samples = as_turn(clip.samples)
        options = DecodeOptions(language="en", live=True, request=f"turn-{n}",
                                speech=((LEAD_S, LEAD_S + clip.duration),))
        windows.append(QueuedWindow(samples, options, lambda outcome: None))
    return windows


def run(engine: CTranslate2Engine, tokenizer: WhisperTokenizer, clips: list[SpeechClip], number: int,
        packed: bool) -> Row:
    windows = turns(clips)
    texts: list[str] = []
    count = 0
    started = time.perf_counter()
    for at in range(0, len(windows), BATCH):
        batch = windows[at : at + BATCH]
        packs = plan_packs([w.payload for w in batch], [w.options for w in batch]) if packed else []
        count += len(batch) - sum(len(p.members) - 1 for p in packs)
        for outcome in decode_queued(engine, tokenizer, batch, [None] * len(batch), lambda request: False,
                                     pack=packed):
            if not isinstance(outcome, WindowResult):
                raise RuntimeError(f"a turn failed: {outcome!r}")
            texts.append("".join(s.text for s in outcome.segments).strip())
    elapsed = time.perf_counter() - started
    per_turn = statistics.mean(wer(c.text, t) for c, t in zip(clips, texts, strict=True))
    joined = wer(" ".join(c.text for c in clips), " ".join(texts))
    return Row(number, packed, len(clips), count, round(elapsed, 2), round(per_turn, 4), round(joined, 4))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", type=int, default=3)
    parser.add_argument("--turns", type=int, default=48)
    parser.add_argument("--model", default="base")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    path = resolve_model(args.model).path
    info = read_model_info(path)
    tokenizer = WhisperTokenizer(path / "tokenizer.json", info.multilingual, info.num_languages)
    engine = CTranslate2Engine(path, intra_threads=args.threads)
    pool = [c for c in speech_clips("report") if 1.5 <= c.duration <= 10.0]
    rows = []
    for number in range(args.sets):
        order = np.random.default_rng(number).permutation(len(pool))[: args.turns]
        clips = [pool[i] for i in order]
        for packed in (False, True):
            rows.append(run(engine, tokenizer, clips, number, packed))
            print(rows[-1], flush=True)
    print(f"\nLive turns, {args.model} int8, {args.threads} threads, batches of {BATCH} turns, language given:")
    print(f"{'set':>3} {'decoding':<12} {'turns':>5} {'windows':>7} {'engine s':>8} {'WER/turn':>8} {'WER joined':>10}")
    for row in rows:
        print(f"{row.set:3d} {'packed' if row.packed else 'one by one':<12} {row.turns:5d} {row.windows:7d} "
              f"{row.engine_s:8.1f} {row.wer_per_turn:8.2%} {row.wer_joined:10.2%}")
    for packed in (False, True):
        mine = [r for r in rows if r.packed == packed]
        print(f"all {'packed' if packed else 'one by one':<12} {sum(r.turns for r in mine):5d} "
              f"{sum(r.windows for r in mine):7d} {sum(r.engine_s for r in mine):8.1f} "
              f"{statistics.mean(r.wer_per_turn for r in mine):8.2%} "
              f"{statistics.mean(r.wer_joined for r in mine):10.2%}")
    out = save_run("packing", {"rows": rows}, args.json, model=args.model)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
