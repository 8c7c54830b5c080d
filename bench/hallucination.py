"""What Whisper invents where nobody speaks, and what it keeps where someone does.

`python -m bench.hallucination` (`make bench-accuracy`) runs, on the same model files (`base`, int8,
beam 1, 2 threads):
- **non-speech**: every kind of `harness/nonspeech.py` (silence, room tone, white and brown noise, hum,
  music, a tone, DTMF, clicks, breathing) at 0.1, 0.5, 1, 3, 10, 30 and 60 s;
- **speech**: clips of real speech from the "report" corpus (none of our settings was tuned on it; its
  shortest clips first, one to three words), some behind 25 s of room tone, some around 20 s of music;

through four systems: our stack over gRPC as served; the same with `VAD` false (Whisper alone decides
what is speech: what every clip of up to 30 s got before VAD gated them); faster-whisper 1.2.1's
`WhisperModel.transcribe` (no VAD, its default) and the same with `vad_filter=True`. It prints words
invented per minute of non-speech, clips with any text, WER on the speech, and the answers whose text
loops (a phrase repeated back to back, as `whisper_triton.loops` finds them), and writes the JSON to
bench/results/<date>-<host>-hallucination.json. (`python -m bench.loops` measures loops on harder audio,
with our loop check on and off.)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from bench.ours import GrpcTranscriber, serving
from bench.report import add_readme_options, regenerate_readme
from bench.workload import Clip
from harness.assets import wav_bytes
from harness.nonspeech import KINDS, nonspeech
from harness.speech import speech_clips
from harness.text import english_errors, english_normalize
from whisper_triton.audio import SAMPLE_RATE
from whisper_triton.loops import find_loops, units

REPO = Path(__file__).resolve().parent.parent
LENGTHS = (0.1, 0.5, 1.0, 3.0, 10.0, 30.0, 60.0)
SPEECH_CLIPS = 40  # the 12 shortest of the corpus, then a seeded sample
AFTER_SILENCE = 6  # speech clips behind 25 s of room tone
AROUND_MUSIC = 4  # two speech clips around 20 s of music
BEAM = 1


class Item(msgspec.Struct, frozen=True):
    name: str
    kind: str  # a non-speech kind, or "speech"
    seconds: float
    reference: str
    path: str


class Outcome(msgspec.Struct, frozen=True):
    name: str
    kind: str
    seconds: float
    reference: str
    text: str


def build_items(folder: Path) -> list[Item]:
    items = []
    for kind in KINDS:
        for length in LENGTHS:
            name = f"{kind}-{length:g}s"
            path = folder / f"{name}.wav"
            path.write_bytes(wav_bytes(nonspeech(kind, length, seed=int(length * 10))))
            items.append(Item(name, kind, length, "", str(path)))
    clips = speech_clips("report")
    shortest = sorted(clips, key=lambda c: c.duration)[:12]
    rest = [c for c in clips if c not in shortest]
    chosen = shortest + random.Random(7).sample(rest, SPEECH_CLIPS - len(shortest))

    def add(name: str, parts: list[np.ndarray], reference: str) -> None:
        audio = np.concatenate(parts)
        path = folder / f"{name.replace('/', '_')}.wav"
        path.write_bytes(wav_bytes(audio))
        items.append(Item(name, "speech", round(len(audio) / SAMPLE_RATE, 3), reference, str(path)))

    pause = nonspeech("room_tone", 0.3, seed=1)
    for clip in chosen:
        add(clip.name, [pause, clip.samples, pause], clip.text)
    for n, clip in enumerate(random.Random(8).sample(rest, AFTER_SILENCE)):
        add(f"after-silence/{clip.name}", [nonspeech("room_tone", 25.0, seed=100 + n), clip.samples, pause],
            clip.text)
    pairs = random.Random(9).sample(rest, 2 * AROUND_MUSIC)
    for n in range(AROUND_MUSIC):
        first, second = pairs[2 * n], pairs[2 * n + 1]
        add(f"around-music/{first.name}+{second.name}",
            [pause, first.samples, nonspeech("music", 20.0, seed=200 + n), second.samples, pause],
            f"{first.text} {second.text}")
    return items


def summarise(system: str, outcomes: list[Outcome], wall: float) -> dict[str, Any]:
    silent = [o for o in outcomes if o.kind != "speech"]
    speech = [o for o in outcomes if o.kind == "speech"]
    invented = {o.name: len(english_normalize(o.text).split()) for o in silent}
    minutes = sum(o.seconds for o in silent) / 60
    errors = words = 0
    for o in speech:
        e, w = english_errors(o.reference, o.text)
        errors, words = errors + e, words + w
    by_kind = {kind: sum(n for name, n in invented.items() if name.startswith(f"{kind}-")) for kind in KINDS}
    return {
        "system": system, "wall_s": round(wall, 1),
        "invented_words": sum(invented.values()), "nonspeech_minutes": round(minutes, 2),
        "words_per_minute": round(sum(invented.values()) / minutes, 2),
        "clips_with_text": sum(1 for n in invented.values() if n), "nonspeech_clips": len(silent),
        "by_kind": by_kind,
        "speech_wer": round(errors / max(words, 1), 4), "speech_words": words,
        "speech_clips": len(speech), "speech_empty": sum(1 for o in speech if not o.text.strip()),
        "looping": sum(1 for o in outcomes if find_loops(units([o.text]))),
        "outcomes": [msgspec.to_builtins(o) for o in outcomes],
    }


def run_system(transcribe: Callable[[Item], str], items: list[Item]) -> tuple[list[Outcome], float]:
    started = time.perf_counter()
    outcomes = [Outcome(i.name, i.kind, i.seconds, i.reference, transcribe(i)) for i in items]
    return outcomes, time.perf_counter() - started


def ours(items: list[Item], threads: int, work_dir: Path) -> list[dict[str, Any]]:
    results = []
    with serving(threads, work_dir, BEAM) as (stack, _memory):
        for system, vad in (("ours", True), ("ours, VAD off (Whisper alone decides)", False)):
            grpc = GrpcTranscriber(stack.grpc_url, vad=vad)

            def transcribe(item: Item, grpc: GrpcTranscriber = grpc) -> str:
                return grpc(Clip(item.name, item.path, item.seconds, ""))

            outcomes, wall = run_system(transcribe, items)
            results.append(summarise(system, outcomes, wall))
            print(f"  {system}: {wall:.0f} s", file=sys.stderr, flush=True)
    return results


def faster_whisper(items: list[Item], threads: int) -> list[dict[str, Any]]:
    from faster_whisper import WhisperModel

    from whisper_triton.models import resolve_model
    from whisper_triton.settings import model_settings

    model = WhisperModel(str(resolve_model("base", model_settings().cache_path()).path), device="cpu",
                         compute_type="int8", cpu_threads=threads)
    results = []
    for system, vad in (("faster-whisper transcribe", False), ("faster-whisper transcribe, vad_filter", True)):
        def transcribe(item: Item, vad: bool = vad) -> str:
            segments, _ = model.transcribe(item.path, beam_size=BEAM, vad_filter=vad)
            return "".join(s.text for s in segments).strip()

        outcomes, wall = run_system(transcribe, items)
        results.append(summarise(system, outcomes, wall))
        print(f"  {system}: {wall:.0f} s", file=sys.stderr, flush=True)
    return results


def table(results: list[dict[str, Any]]) -> str:
    head = ("| system | words invented per minute of non-speech | non-speech clips with text | "
            "WER on speech | speech clips with no text | answers that loop |\n|---|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in results:
        lines.append(f"| {r['system']} | {r['words_per_minute']:.2f} ({r['invented_words']} words in "
                     f"{r['nonspeech_minutes']:.1f} min) | {r['clips_with_text']} / {r['nonspeech_clips']} | "
                     f"{100 * r['speech_wer']:.2f} % ({r['speech_words']} words) | "
                     f"{r['speech_empty']} / {r['speech_clips']} | {r.get('looping', '-')} |")
    kinds = "| system | " + " | ".join(KINDS) + " |\n|---|" + "---:|" * len(KINDS)
    lines += ["", "Words invented by kind of non-speech (all lengths):", "", kinds]
    lines += [f"| {r['system']} | " + " | ".join(str(r["by_kind"][k]) for k in KINDS) + " |" for r in results]
    return "\n".join(lines)


README_BEGIN, README_END = "<!-- accuracy:begin -->", "<!-- accuracy:end -->"


def readme_block(run: dict[str, Any], source: Path) -> str:
    meta = run["meta"]
    return (f"`{meta['command']}` on {meta['host']}, {meta['date'][:10]}: {meta['model']}, beam {meta['beam']}, "
            f"{meta['threads']} threads; JSON: `bench/results/{source.name}`.\n\n" + table(run["results"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="where to write the results")
    add_readme_options(parser, "accuracy")
    args = parser.parse_args(argv)
    if regenerate_readme(parser, args, README_BEGIN, README_END, lambda runs: readme_block(*runs[0])):
        return 0
    from whisper_triton.models import default_cache_dir

    os.environ.setdefault("TEST_ASSETS_DIR", str(default_cache_dir() / "test-assets"))
    work_dir = Path(tempfile.mkdtemp(prefix="whisper-hallucination-"))
    items = build_items(work_dir)
    silent = [i for i in items if i.kind != "speech"]
    print(f"{len(silent)} non-speech clips ({sum(i.seconds for i in silent) / 60:.1f} min), "
          f"{len(items) - len(silent)} speech clips", file=sys.stderr, flush=True)
    results = ours(items, args.threads, work_dir) + faster_whisper(items, args.threads)
    print(table(results))
    stamp = time.strftime("%Y-%m-%d-%H%M")
    path = args.json or REPO / "bench" / "results" / f"{stamp}-{socket.gethostname()}-hallucination.json"
    meta = {"command": "python -m bench.hallucination", "host": socket.gethostname(), "threads": args.threads,
            "model": "base int8", "beam": BEAM, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(f"\nJSON: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
