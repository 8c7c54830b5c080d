"""Repetition loops and segments invented over silence: what our checks catch, and what they cost on speech.

`python -m bench.loops` runs the entry model's `Transcriber` on the CTranslate2 engine in this process
(the served code without Triton's transport: windows batched per call, one language per request) on
- **speech**: the "tune" corpus (unscripted talks with hesitations and repeated words, sonnets), 10 minutes
  of the "report" corpus, and minutes of report clips under white noise, brown noise, music and breathing
  at -10 to 5 dB SNR (noisy speech is where Whisper loops most);
- **non-speech with VAD off** (Whisper alone decides what is speech): music, noise and breathing of 30 and
  60 s, where faster-whisper wrote "Whiff, whiff, whiff, ..." and "2.0-2.0-2.0-...";

with tiny.en and base (int8, beam 1, 2 threads), each with `WHISPER_LOOP_CHECK` on and off, sampling seeded
per item (fallback temperatures sample: unseeded, two runs of the same system differ). It prints per
system: windows, passes that looped (decoded again at a higher temperature), loops cut to one copy, outputs
whose final text still holds a loop (`whisper_triton.loops` run on the text the user gets, the same measure
for both), outputs the check changed (against the same model without it), WER on speech, words on
non-speech, and wall seconds; JSON to
bench/results/<date>-<host>-loops.json. `--quick` runs tiny.en on about a third of the items.

`--silence` measures the silence check instead (`WHISPER_HALLUCINATION_SILENCE_THRESHOLD`, which needs
words): base with word timestamps, the check at 2 s and off, on the clips of `bench.hallucination` (VAD on)
and on pairs of speech clips around 15 s of breathing, clicks, DTMF or brown noise; it prints segments
dropped, WER on speech and words on non-speech; JSON to bench/results/<date>-<host>-silence.json.

`--readme docs/benchmarks.md --results <json> [<json>]` regenerates the loops block there from runs' JSON (no run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import ctranslate2
import msgspec
import numpy as np

from bench.report import add_readme_options, regenerate_readme
from harness.assets import wav_bytes
from harness.nonspeech import nonspeech
from harness.speech import long_speech, speech_clip_set, speech_clips
from harness.text import english_errors, english_normalize
from whisper_triton.audio import SAMPLE_RATE, decode_audio
from whisper_triton.contract import DoneEvent, TranscriptionRequest
from whisper_triton.ctranslate2_engine import CTranslate2Engine
from whisper_triton.decoding import WindowJob, WindowResult, decode_each
from whisper_triton.features import window_features
from whisper_triton.loops import find_loops, units
from whisper_triton.models import read_model_info, resolve_model
from whisper_triton.scheduler import RequestLanguages
from whisper_triton.text import WhisperTokenizer
from whisper_triton.transcriber import Transcriber, TranscriberSettings, WindowCall

REPO = Path(__file__).resolve().parent.parent
MODELS = ("tiny.en", "base")
NOISES = (("white_noise", -10.0), ("white_noise", -5.0), ("white_noise", 0.0), ("brown_noise", -5.0),
          ("brown_noise", 5.0), ("music", -10.0), ("music", -5.0), ("music", 0.0), ("breathing", -10.0),
          ("breathing", -5.0))
NONSPEECH = (("music", 30.0), ("music", 60.0), ("white_noise", 60.0), ("brown_noise", 60.0),
             ("breathing", 60.0), ("hum", 60.0))
NOISY_SECONDS = 60.0
SILENCE_THRESHOLD = 2.0


class Item(msgspec.Struct, frozen=True):
    name: str
    kind: str  # speech | nonspeech
    seconds: float
    reference: str
    path: str
    vad: bool


class Outcome(msgspec.Struct, frozen=True):
    name: str
    kind: str
    reference: str
    text: str
    loops_left: int  # loops in the text the user got
    looped_words: int  # words in their repeated copies
    profile: dict[str, Any]


def _mix(speech: np.ndarray, kind: str, snr_db: float, seed: int) -> np.ndarray:
    """`speech` under `kind` at `snr_db` (levels by RMS over the whole clip)."""
    noise = nonspeech(kind, len(speech) / SAMPLE_RATE, seed=seed)[: len(speech)]
    gain = np.sqrt(np.mean(speech**2) / max(float(np.mean(noise**2)), 1e-12) / 10 ** (snr_db / 10))
    return np.clip(speech + gain * noise, -1.0, 1.0).astype(np.float32)


def build_items(folder: Path, quick: bool) -> list[Item]:
    items: list[Item] = []

    def add(name: str, kind: str, audio: np.ndarray, reference: str, vad: bool = True) -> None:
        path = folder / f"{name.replace('/', '_')}.wav"
        path.write_bytes(wav_bytes(audio))
        items.append(Item(name, kind, round(len(audio) / SAMPLE_RATE, 3), reference, str(path), vad))

    pause = nonspeech("room_tone", 0.3, seed=1)
    tune = speech_clips("tune")
    for clip in tune[:: 3 if quick else 1]:
        add(clip.name, "speech", np.concatenate([pause, clip.samples, pause]), clip.text)
    if not quick:
        recording = long_speech("report", 10.0, seed=13)
        items.append(Item("report-10min", "speech", recording.duration, recording.text, str(recording.path), True))
    noisy = speech_clip_set("report", [NOISY_SECONDS] * len(NOISES), seed=21)
    for n, ((kind, snr), recording) in enumerate(zip(NOISES, noisy, strict=True)):
        if quick and n % 4:
            continue
        clean = decode_audio(recording.path.read_bytes()).samples
        add(f"report+{kind}@{snr:g}dB", "speech", _mix(clean, kind, snr, seed=300 + n), recording.text)
    for n, (kind, seconds) in enumerate(NONSPEECH):
        if quick and n % 3:
            continue
        add(f"{kind}-{seconds:g}s, VAD off", "nonspeech", nonspeech(kind, seconds, seed=400 + n), "", vad=False)
    return items


class InProcess:
    """A `DecodeFn` on an engine in this process: each call's windows as one batch, one call at a time
    (as one engine worker would), one language per request."""

    def __init__(self, engine: CTranslate2Engine, tokenizer: WhisperTokenizer) -> None:
        self.engine, self.tokenizer = engine, tokenizer
        self.languages = RequestLanguages()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")

    async def __call__(self, calls: list[WindowCall]) -> AsyncIterator[tuple[int, WindowResult | Exception]]:
        jobs, tickets = [], []
        for call in calls:
            options, ticket = self.languages.assign(call.options)
            features, frames = window_features(call.samples, self.engine.n_mels)
            jobs.append(WindowJob(features, frames, options))
            tickets.append(ticket)
        outcomes = await asyncio.get_running_loop().run_in_executor(
            self.executor, decode_each, self.engine, self.tokenizer, jobs, tickets)
        for position, outcome in enumerate(outcomes):
            yield position, outcome


async def _transcribe(transcriber: Transcriber, item: Item, audio: bytes, words: bool) -> Outcome:
    request = TranscriptionRequest(vad=item.vad, profile=True, word_timestamps=words)
    done: DoneEvent | None = None
    async for event in transcriber.events(audio, request):
        done = event if isinstance(event, DoneEvent) else done
    assert done is not None and done.profile is not None
    loops = find_loops(units([s.text for s in done.segments]))
    return Outcome(item.name, item.kind, item.reference, done.text, len(loops),
                   sum(loop.extra for loop in loops), done.profile)


def run_system(system: str, model: str, settings: TranscriberSettings, items: list[Item], threads: int,
               words: bool = False) -> dict[str, Any]:
    path = resolve_model(model).path
    info = read_model_info(path)
    tokenizer = WhisperTokenizer(path / "tokenizer.json", info.multilingual, info.num_languages)
    engine = CTranslate2Engine(path, intra_threads=threads)
    transcriber = Transcriber(info, InProcess(engine, tokenizer), settings=settings)
    started = time.perf_counter()
    outcomes = []
    for seed, item in enumerate(items):
        ctranslate2.set_random_seed(seed)
        outcomes.append(asyncio.run(_transcribe(transcriber, item, Path(item.path).read_bytes(), words)))
    result = summarise(system, outcomes, time.perf_counter() - started)
    print(f"  {system}: {result['wall_s']:.0f} s", file=sys.stderr, flush=True)
    return result


def summarise(system: str, outcomes: list[Outcome], wall: float) -> dict[str, Any]:
    speech = [o for o in outcomes if o.kind == "speech"]
    errors = words = 0
    for o in speech:
        e, w = english_errors(o.reference, o.text)
        errors, words = errors + e, words + w

    def total(key: str) -> int:
        return sum(int(o.profile.get(key, 0)) for o in outcomes)

    return {
        "system": system, "wall_s": round(wall, 1), "windows": total("windows"),
        "looping_passes": total("looping_passes"), "loops_cut": total("loops"),
        "outputs_with_loops": sum(1 for o in outcomes if o.loops_left), "outputs": len(outcomes),
        "loops_left": sum(o.loops_left for o in outcomes), "looped_words": sum(o.looped_words for o in outcomes),
        "dropped_in_silence": total("dropped_in_silence"),
        "dropped_away_from_speech": total("dropped_away_from_speech"),
        "speech_wer": round(errors / max(words, 1), 4), "speech_words": words,
        "speech_empty": sum(1 for o in speech if not o.text.strip()), "speech_outputs": len(speech),
        "nonspeech_words": sum(len(english_normalize(o.text).split()) for o in outcomes if o.kind != "speech"),
        "outcomes": [msgspec.to_builtins(o) for o in outcomes],
    }


def changed(on: dict[str, Any], off: dict[str, Any]) -> list[dict[str, str]]:
    """The outputs whose text the check changed: the name, and both texts."""
    return [{"name": a["name"], "on": a["text"], "off": b["text"]}
            for a, b in zip(on["outcomes"], off["outcomes"], strict=True) if a["text"] != b["text"]]


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| system | windows | passes that looped | loops cut | outputs with a loop left (repeated words) | "
             "outputs the check changed | WER on speech | words on non-speech (VAD off) | wall |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['system']} | {r['windows']} | {r['looping_passes']} | {r['loops_cut']} | "
                     f"{r['outputs_with_loops']} / {r['outputs']} ({r['looped_words']}) | "
                     f"{len(r['changed']) if 'changed' in r else '-'} | "
                     f"{100 * r['speech_wer']:.2f} % ({r['speech_words']} words) | {r['nonspeech_words']} | "
                     f"{r['wall_s']:.0f} s |")
    return "\n".join(lines)


def changes(results: list[dict[str, Any]], width: int = 140) -> str:
    """What the check changed, shortened to where the two texts first differ."""
    lines = []
    for r in results:
        for change in r.get("changed", []):
            on, off = change["on"], change["off"]
            first = next((i for i, (a, b) in enumerate(zip(on, off, strict=False)) if a != b), min(len(on), len(off)))
            start = max(0, first - 30)
            lines.append(f"- {r['system']}, {change['name']}: off {off[start : start + width]!r}, "
                         f"on {on[start : start + width]!r}")
    return "\n".join(lines)


def silence_table(results: list[dict[str, Any]]) -> str:
    lines = ["| system | segments dropped as invented in silence | dropped away from speech | WER on speech | "
             "speech clips with no text | words on non-speech | wall |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['system']} | {r['dropped_in_silence']} | {r['dropped_away_from_speech']} | "
                     f"{100 * r['speech_wer']:.2f} % ({r['speech_words']} words) | "
                     f"{r['speech_empty']} / {r['speech_outputs']} | {r['nonspeech_words']} | {r['wall_s']:.0f} s |")
    return "\n".join(lines)


def silence_items(folder: Path) -> list[Item]:
    """The accuracy benchmark's clips (`bench.hallucination`), VAD on, and pairs of speech clips around
    15 s of sounds VAD may take for speech (breathing, clicks, DTMF, brown noise)."""
    from bench.hallucination import build_items as accuracy_items

    items = [Item(i.name, "speech" if i.kind == "speech" else "nonspeech", i.seconds, i.reference, i.path, True)
             for i in accuracy_items(folder)]
    clips = speech_clips("report")
    pause = nonspeech("room_tone", 0.3, seed=1)
    for n, kind in enumerate(("breathing", "clicks", "dtmf", "brown_noise") * 2):
        first, second = random.Random(600 + n).sample(clips, 2)
        audio = np.concatenate([pause, first.samples, nonspeech(kind, 15.0, seed=600 + n), second.samples, pause])
        path = folder / f"around-{kind}-{n}.wav"
        path.write_bytes(wav_bytes(audio))
        items.append(Item(f"around-{kind}/{first.name}+{second.name}", "speech", round(len(audio) / SAMPLE_RATE, 3),
                          f"{first.text} {second.text}", str(path), True))
    return items


def loops_left(results: list[dict[str, Any]]) -> str:
    """The loops still in outputs (what the check missed, or what it is off for): each phrase and its copies."""
    lines = []
    for r in results:
        for o in r["outcomes"]:
            found = units([o["text"]])
            shown = [f"{' '.join(u.key for u in found[loop.first : loop.first + loop.period])!r} x {loop.copies}"
                     for loop in find_loops(found)]
            if shown:
                lines.append(f"- {r['system']}, {o['name']}: {'; '.join(shown)}")
    return "\n".join(lines)


README_BEGIN, README_END = "<!-- loops:begin -->", "<!-- loops:end -->"


def readme_block(runs: list[tuple[dict[str, Any], Path]]) -> str:
    parts = []
    for run, source in runs:
        meta, results = run["meta"], run["results"]
        head = (f"`{meta['command']}` on {meta['host']}, {meta['date'][:10]}: int8, beam 1, {meta['threads']} "
                f"threads; JSON: `bench/results/{source.name}`.\n\n")
        if meta.get("kind") == "silence":
            parts.append(head + silence_table(results))
        else:
            parts.append(head + table(results) + "\n\nOutputs with a loop left:\n" + (loops_left(results) or "none")
                         + "\n\nOutputs the check changed:\n" + (changes(results) or "none"))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny.en on about a third of the items")
    parser.add_argument("--silence", action="store_true",
                        help="the silence check instead: base with word timestamps, threshold 2 s and off")
    parser.add_argument("--models", default=None, help="comma-separated (default: tiny.en,base)")
    parser.add_argument("--json", type=Path, default=None, help="where to write the results")
    add_readme_options(parser, "loops", several=True)
    args = parser.parse_args(argv)
    if regenerate_readme(parser, args, README_BEGIN, README_END, readme_block):
        return 0
    from whisper_triton.models import default_cache_dir

    os.environ.setdefault("TEST_ASSETS_DIR", str(default_cache_dir() / "test-assets"))
    folder = Path(tempfile.mkdtemp(prefix="whisper-loops-"))
    items = silence_items(folder) if args.silence else build_items(folder, args.quick)
    print(f"{len(items)} items, {sum(i.seconds for i in items) / 60:.1f} min", file=sys.stderr, flush=True)
    models = args.models.split(",") if args.models else (["tiny.en"] if args.quick else list(MODELS))
    results = []
    if args.silence:
        models = args.models.split(",") if args.models else ["base"]
        for model in models:
            for threshold in (SILENCE_THRESHOLD, 0.0):
                label = f"{threshold:g} s" if threshold else "off"
                settings = TranscriberSettings(hallucination_silence_threshold=threshold)
                results.append(run_system(f"{model}, words, silence check {label}", model, settings, items,
                                          args.threads, words=True))
        print(silence_table(results))
    else:
        for model in models:
            on, off = (run_system(f"{model}, loop check {'on' if check else 'off'}", model,
                                  TranscriberSettings(loop_check=check), items, args.threads)
                       for check in (True, False))
            on["changed"] = changed(on, off)
            results += [on, off]
        print(table(results))
        print("\nOutputs with a loop left:\n" + (loops_left(results) or "none"))
        print("\nOutputs the check changed:\n" + (changes(results) or "none"))
    stamp = time.strftime("%Y-%m-%d-%H%M")
    kind = "silence" if args.silence else "loops"
    path = args.json or REPO / "bench" / "results" / f"{stamp}-{socket.gethostname()}-{kind}.json"
    flags = "".join(f" --{flag}" for flag in ("quick", "silence") if getattr(args, flag))
    meta = {"command": "python -m bench.loops" + flags, "host": socket.gethostname(), "kind": kind,
            "threads": args.threads, "models": models, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(f"\nJSON: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
