"""Diarization error rate and CPU cost of the embedded diarizer on audio with known speaker turns.

    python -m bench.der [--threads N] [--transcripts] [--json PATH]
    python -m bench.der --readme docs/diarization.md --results bench/results/<run>.json   # its block only

Recordings: real meetings, the AMI excerpts of pyannote.audio's test data (harness/meetings.py), scored per
split: "tune" (the excerpts the clustering settings were chosen on) and "report" (held apart, never
tuned on); the two-speaker phone call shipped in the pyannote.audio wheel; dialogues synthesised with
Debian's flite voices, whose turns are known exactly. DER is reported with a 0.25 s collar and
overlapped speech skipped (the usual "fair" setting) and strictly (no collar, overlap scored); a split's
DER is pooled over its excerpts (errors over reference speech, as pyannote.metrics aggregates).

With --transcripts the meetings also go through our served stack (`frontend.serve`, base model) with
`response_format=diarized_json`, and the segments' speakers are scored against the reference: the share
of reference speech (collar 0.25 s, overlap skipped) given to the wrong speaker or to nobody.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import add_readme_options, regenerate_readme
from whisper_triton.audio import SAMPLE_RATE, decode_audio
from whisper_triton.diarization import Diarizer, Turn

SENTENCES = (
    "Good morning, did you have a chance to look at the budget for next year?",
    "Yes, I read it last night and I think the travel costs are far too high.",
    "We could hold more of the meetings online and save a lot of money.",
    "That works for the small meetings, but customers like to see us in person.",
    "Then let us keep the customer visits and cut the internal trips instead.",
    "I agree, and we should also ask the suppliers for better prices.",
    "The printer on the second floor has been broken for a week now.",
    "I called the repair service on Monday and they promised to come today.",
    "While we wait, the printer in the library still works fine.",
    "Did anyone book the room for the training session on Thursday?",
    "I did, the large room on the ground floor is ours from nine until noon.",
    "Perfect, I will send the invitation to the whole team this afternoon.",
    "Please remind everyone to bring their laptops and the new handbook.",
    "The coffee machine in the kitchen makes a strange noise again.",
    "It always does that in the morning, it stops after the first cup.",
    "Let us meet again next week to see how far we got with the plan.",
)
TWO_VOICES = ("slt", "awb")
THREE_VOICES = ("slt", "rms", "awb")
FOUR_VOICES = ("slt", "rms", "awb", "kal")
_TRIM_THRESHOLD = 0.02  # frame RMS counted as sound when cutting flite's leading and trailing silence


@dataclass(frozen=True)
class Recording:
    name: str
    samples: np.ndarray  # float32, 16 kHz mono
    turns: list[Turn]  # reference

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    @property
    def speakers(self) -> int:
        return len({turn.speaker for turn in self.turns})


def flite(voice: str, text: str) -> np.ndarray:
    """`text` spoken by a flite voice, 16 kHz float32, leading and trailing silence cut."""
    with tempfile.TemporaryDirectory(prefix="flite-") as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True, capture_output=True)
        samples = decode_audio(path.read_bytes()).samples
    return _trim(samples)


def flite_dialogue(voices: Sequence[str], lines: int, seed: int = 7, name: str | None = None) -> Recording:
    """`lines` sentences in turn by `voices` (round robin, then shuffled speakers) with 0.3-1.2 s pauses."""
    rng = random.Random(seed)
    order = [voices[i % len(voices)] for i in range(lines)]
    rng.shuffle(order)
    parts = [np.zeros(SAMPLE_RATE // 2, dtype=np.float32)]
    offset = len(parts[0])
    turns = []
    for index, voice in enumerate(order):
        speech = flite(voice, SENTENCES[index % len(SENTENCES)])
        turns.append(Turn(offset / SAMPLE_RATE, (offset + len(speech)) / SAMPLE_RATE, voice))
        pause = np.zeros(round(rng.uniform(0.3, 1.2) * SAMPLE_RATE), dtype=np.float32)
        parts += [speech, pause]
        offset += len(speech) + len(pause)
    return Recording(name or f"flite, {len(voices)} voices", np.concatenate(parts), turns)


def sample_call() -> Recording:
    """The 30 s two-speaker call in the pyannote.audio wheel, with its reference turns."""
    spec = importlib.util.find_spec("pyannote.audio")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pyannote.audio is not installed")
    folder = Path(next(iter(spec.submodule_search_locations))) / "sample"
    samples = decode_audio((folder / "sample.wav").read_bytes()).samples
    turns = []
    for line in (folder / "sample.rttm").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == "SPEAKER":
            start, length = float(fields[3]), float(fields[4])
            turns.append(Turn(start, start + length, fields[7]))
    return Recording("pyannote sample call", samples, turns)


def diarization_error_rate(
    reference: Sequence[Turn], hypothesis: Sequence[Turn], collar: float = 0.25, skip_overlap: bool = True
) -> float:
    """pyannote.metrics' DER (optimal speaker mapping) of `hypothesis` against `reference`."""
    return error_components(reference, hypothesis, collar, skip_overlap)["rate"]


def error_components(
    reference: Sequence[Turn], hypothesis: Sequence[Turn], collar: float = 0.25, skip_overlap: bool = True,
    duration: float | None = None,
) -> dict[str, float]:
    """Seconds of reference speech (`total`), missed, falsely detected and given to the wrong speaker
    (optimal mapping), and the DER, over [0, duration] (default: to the last turn)."""
    from pyannote.core import Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    metric = DiarizationErrorRate(collar=collar, skip_overlap=skip_overlap)
    end = duration or max(turn.end for turn in [*reference, *hypothesis])
    scored = Timeline([Segment(0.0, end)])  # the whole recording, so silence counts as such
    detail = metric(_annotation(reference), _annotation(hypothesis), uem=scored, detailed=True)
    return {"total": float(detail["total"]), "missed": float(detail["missed detection"]),
            "false_alarm": float(detail["false alarm"]), "confusion": float(detail["confusion"]),
            "rate": float(detail["diarization error rate"])}


def _annotation(turns: Sequence[Turn]) -> object:
    from pyannote.core import Annotation, Segment

    annotation = Annotation(uri="audio")
    for index, turn in enumerate(turns):
        annotation[Segment(turn.start, turn.end), index] = turn.speaker
    return annotation


def _trim(samples: np.ndarray) -> np.ndarray:
    frame = SAMPLE_RATE // 100
    count = len(samples) // frame
    rms = np.sqrt((samples[: count * frame].reshape(count, frame) ** 2).mean(axis=1))
    loud = np.flatnonzero(rms > _TRIM_THRESHOLD)
    if len(loud) == 0:
        return samples
    return samples[loud[0] * frame : (loud[-1] + 1) * frame]


def recordings() -> list[Recording]:
    return [
        sample_call(),
        flite_dialogue(TWO_VOICES, lines=12, name="flite, 2 voices"),
        flite_dialogue(FOUR_VOICES, lines=16, seed=11, name="flite, 4 voices"),
    ]


def meeting_recordings(split: str) -> list[Recording]:
    from harness.meetings import meetings

    return [Recording(f"AMI {meeting.name}", meeting.samples, meeting.turns) for meeting in meetings(split)]


@dataclass
class Totals:
    """Seconds pooled over recordings: reference speech and the errors in it."""

    total: float = 0.0
    missed: float = 0.0
    false_alarm: float = 0.0
    confusion: float = 0.0

    def add(self, parts: dict[str, float]) -> None:
        self.total += parts["total"]
        self.missed += parts["missed"]
        self.false_alarm += parts["false_alarm"]
        self.confusion += parts["confusion"]

    @property
    def rate(self) -> float:
        return (self.missed + self.false_alarm + self.confusion) / self.total if self.total else 0.0


def diarize_rows(diarizer: Diarizer, name: str, items: list[Recording], given: bool) -> dict[str, Any]:
    """One table row: `items` diarized (with their true speaker count when `given`), errors pooled."""
    fair, strict = Totals(), Totals()
    cpu = wall = 0.0
    found = []
    for item in items:
        started_cpu, started = time.process_time(), time.perf_counter()
        turns = diarizer(item.samples, num_speakers=item.speakers if given else None)
        cpu += time.process_time() - started_cpu
        wall += time.perf_counter() - started
        fair.add(error_components(item.turns, turns, duration=item.duration))
        strict.add(error_components(item.turns, turns, collar=0.0, skip_overlap=False, duration=item.duration))
        found.append(f"{len({turn.speaker for turn in turns})}/{item.speakers}")
    audio = sum(item.duration for item in items)
    return {"recording": name, "files": len(items), "seconds": round(audio, 1), "given": given,
            "found": " ".join(found), "der_fair": round(fair.rate, 4), "der_strict": round(strict.rate, 4),
            "missed": round(fair.missed / fair.total, 4), "false_alarm": round(fair.false_alarm / fair.total, 4),
            "confusion": round(fair.confusion / fair.total, 4), "cpu_s_per_min": round(cpu / audio * 60, 2),
            "wall_per_audio": round(wall / audio, 3)}


def transcript_rows(split: str, items: list[Recording], threads: int) -> dict[str, Any]:
    """The split's meetings through our stack with diarized_json: reference speech (collar 0.25 s,
    overlap skipped) whose segment has the wrong speaker (optimal mapping) or that no segment covers."""
    import httpx

    from bench.ours import launch_ours
    from harness.assets import wav_bytes

    totals = Totals()
    with tempfile.TemporaryDirectory(prefix="whisper-der-") as tmp:
        stack = launch_ours(threads, Path(tmp))
        try:
            stack.wait_ready()
            for item in items:
                response = httpx.post(
                    f"{stack.base_url}/v1/audio/transcriptions", timeout=600,
                    data={"model": "whisper-1", "response_format": "diarized_json"},
                    files={"file": ("meeting.wav", wav_bytes(item.samples), "audio/wav")},
                )
                response.raise_for_status()
                hypothesis = [Turn(s["start"], s["end"], s["speaker"]) for s in response.json()["segments"]]
                totals.add(error_components(item.turns, hypothesis, duration=item.duration))
        finally:
            stack.stop()
    return {"split": split, "files": len(items), "speech_s": round(totals.total, 1),
            "wrong_speaker": round(totals.confusion / totals.total, 4),
            "no_speaker": round(totals.missed / totals.total, 4),
            "wrong_or_none": round((totals.confusion + totals.missed) / totals.total, 4)}


def table(run: dict[str, Any]) -> str:
    lines = ["| recordings | audio | count given | speakers found / true | DER (collar 0.25 s, overlap skipped) "
             "| missed | false alarm | confusion | DER strict | CPU s per audio minute |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in run["diarization"]:
        lines.append(
            f"| {row['recording']} | {row['files']} x {row['seconds'] / row['files']:.0f} s "
            f"| {'yes' if row['given'] else 'no'} | {row['found']} | {row['der_fair']:.1%} | {row['missed']:.1%} "
            f"| {row['false_alarm']:.1%} | {row['confusion']:.1%} | {row['der_strict']:.1%} "
            f"| {row['cpu_s_per_min']:.1f} |".replace("%", " %"))
    if run.get("transcripts"):
        lines += ["", "| diarized_json on | files | reference speech | wrong speaker | no speaker | wrong or none |",
                  "|---|---|---|---|---|---|"]
        for row in run["transcripts"]:
            lines.append(f"| AMI {row['split']} | {row['files']} | {row['speech_s']:.0f} s "
                         f"| {row['wrong_speaker']:.1%} | {row['no_speaker']:.1%} "
                         f"| {row['wrong_or_none']:.1%} |".replace("%", " %"))
    return "\n".join(lines)


README_BEGIN, README_END = "<!-- der:begin -->", "<!-- der:end -->"


def readme_block(run: dict[str, Any], source: Path) -> str:
    meta = run["meta"]
    return (f"`{meta['command']}` on {meta['host']}, {meta['date'][:10]}, {meta['threads']} torch threads; "
            f"JSON: `bench/results/{source.name}`.\n\n" + table(run))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--transcripts", action="store_true",
                        help="also score diarized_json transcripts of the meetings through the served stack")
    parser.add_argument("--json", type=Path, default=None, help="where to write the results")
    add_readme_options(parser, "DER")
    args = parser.parse_args(argv)
    if regenerate_readme(parser, args, README_BEGIN, README_END, lambda runs: readme_block(*runs[0])):
        return 0
    from whisper_triton.models import default_cache_dir

    os.environ.setdefault("TEST_ASSETS_DIR", str(default_cache_dir() / "test-assets"))
    started = time.perf_counter()
    diarizer = Diarizer(threads=args.threads)
    import torch

    threads = torch.get_num_threads()
    print(f"pipeline loaded in {time.perf_counter() - started:.1f} s, {threads} torch threads", flush=True)
    rows = []
    for split in ("tune", "report"):
        items = meeting_recordings(split)
        rows += [diarize_rows(diarizer, f"AMI {split}", items, given) for given in (False, True)]
    for recording in recordings():
        rows += [diarize_rows(diarizer, recording.name, [recording], given) for given in (False, True)]
    run: dict[str, Any] = {"diarization": rows}
    if args.transcripts:
        run["transcripts"] = [transcript_rows(split, meeting_recordings(split), max(threads, 1))
                              for split in ("tune", "report")]
    stamp = time.strftime("%Y-%m-%d-%H%M")
    run["meta"] = {"command": "python -m bench.der" + (" --transcripts" if args.transcripts else ""),
                   "host": socket.gethostname(), "threads": threads, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    print(table(run))
    path = args.json or Path(__file__).resolve().parent / "results" / f"{stamp}-{socket.gethostname()}-der.json"
    path.write_text(json.dumps(run, indent=1))
    print(f"\nJSON: {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
