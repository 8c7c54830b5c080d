"""Rows, the printed table, the issue's targets (reported, never asserted) and the JSON file."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jiwer
import msgspec

from bench.load import PhaseResult, RequestRecord, SystemRun
from tests.text import normalize

MEMORY_LIMIT_BYTES = 3_000_000_000  # "under 3 GB"
ADDED_LATENCY_LIMIT_S = 0.150
WER_MARGIN = 0.005  # half a point
BENCH_TIME_LIMIT_S = 20 * 60
HTTP, GRPC, BASELINE_A, BASELINE_B = "ours HTTP", "ours gRPC", "baseline A", "baseline B"


class Row(msgspec.Struct, frozen=True):
    system: str
    phase: str
    concurrency: int
    requests: int
    errors: int
    audio_s: float
    wall_s: float
    rtfx: float  # audio seconds per wall second
    p50_s: float
    p95_s: float
    wer: float
    peak_rss_bytes: int
    ready_s: float
    engine_batch: float | None = None
    cpu_s: float | None = None  # CPU seconds of the process tree during the phase


class Target(msgspec.Struct, frozen=True):
    goal: str
    detail: str
    met: bool | None  # None: not measured in this run


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks (numpy's default); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words) after tests.text's normalisation."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    if not ref:
        return len(hyp.split()), 0
    out = jiwer.process_words(ref, hyp)
    return out.substitutions + out.deletions + out.insertions, len(ref.split())


def corpus_wer(records: Sequence[RequestRecord]) -> float:
    """Word errors of all requests over all their reference words (a failed request counts as empty)."""
    errors = words = 0
    for record in records:
        e, w = word_errors(record.reference, record.text if record.error is None else "")
        errors, words = errors + e, words + w
    return errors / words if words else math.nan


def phase_row(run: SystemRun, phase: PhaseResult) -> Row:
    latencies = [r.latency_s for r in phase.requests if r.error is None]
    audio = sum(r.audio_seconds for r in phase.requests)
    return Row(
        system=run.system, phase=phase.phase, concurrency=phase.concurrency, requests=len(phase.requests),
        errors=sum(r.error is not None for r in phase.requests), audio_s=audio, wall_s=phase.wall_s,
        rtfx=audio / phase.wall_s if phase.wall_s > 0 else math.nan,
        p50_s=percentile(latencies, 50), p95_s=percentile(latencies, 95), wer=corpus_wer(phase.requests),
        peak_rss_bytes=phase.peak_rss_bytes, ready_s=run.ready_s, engine_batch=phase.engine_batch, cpu_s=phase.cpu_s,
    )


def rows(runs: Sequence[SystemRun]) -> list[Row]:
    return [phase_row(run, phase) for run in runs for phase in run.phases]


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None or math.isnan(value) else format(value, fmt)


COLUMNS = (("system", "<11"), ("phase", "<5"), ("c", ">2"), ("req", ">4"), ("audio s", ">8"), ("wall s", ">7"),
           ("RTFx", ">6"), ("p50 s", ">7"), ("p95 s", ">7"), ("WER", ">6"), ("peak RSS", ">9"), ("ready s", ">7"),
           ("CPU s", ">6"), ("batch", ">5"))


def format_table(table: Sequence[Row]) -> str:
    header = " ".join(format(name, align) for name, align in COLUMNS)
    lines = [header, "-" * len(header)]
    for row in table:
        cells = (row.system, row.phase, str(row.concurrency),
                 str(row.requests) + ("!" if row.errors else ""), _num(row.audio_s, ".1f"), _num(row.wall_s, ".1f"),
                 _num(row.rtfx, ".1f"), _num(row.p50_s, ".2f"), _num(row.p95_s, ".2f"),
                 _num(row.wer * 100, ".1f") + ("%" if not math.isnan(row.wer) else ""),
                 f"{row.peak_rss_bytes / 1e6:.0f} MB", _num(row.ready_s, ".1f"), _num(row.cpu_s, ".1f"),
                 _num(row.engine_batch, ".1f"))
        lines.append(" ".join(format(cell, align) for cell, (_, align) in zip(cells, COLUMNS, strict=True)))
    if any(row.errors for row in table):
        lines.append("! some requests failed (see errors in the JSON); their latencies are left out, WER counts them")
    return "\n".join(lines)


def _find(table: Sequence[Row], system: str, phase: str, concurrency: int | None = None) -> Row | None:
    for row in table:
        if row.system == system and row.phase == phase and (concurrency is None or row.concurrency == concurrency):
            return row
    return None


def _pooled_wer(runs: Sequence[SystemRun], system: str) -> float | None:
    """WER over the long recording and the clip set at the lowest concurrency (each audio once)."""
    run = next((r for r in runs if r.system == system), None)
    if run is None:
        return None
    clip_phases = [p for p in run.phases if p.phase == "clips"]
    phases = [p for p in run.phases if p.phase == "long"]
    if clip_phases:
        phases.append(min(clip_phases, key=lambda p: p.concurrency))
    return corpus_wer([r for p in phases for r in p.requests])


def evaluate_targets(runs: Sequence[SystemRun], table: Sequence[Row], elapsed_s: float | None = None) -> list[Target]:
    targets = []
    ours, a = _find(table, HTTP, "long"), _find(table, BASELINE_A, "long")
    goal = "single long file through HTTP at least as fast as baseline A"
    if ours and a:
        detail = f"ours {ours.wall_s:.1f} s (RTFx {ours.rtfx:.1f}) vs A {a.wall_s:.1f} s (RTFx {a.rtfx:.1f})"
        targets.append(Target(goal, detail, ours.wall_s <= a.wall_s))
    else:
        targets.append(Target(goal, "not measured", None))

    levels = [row.concurrency for row in table if row.phase == "clips"]
    top = max(levels) if levels else 8
    ours, a, b = (_find(table, s, "clips", top) for s in (HTTP, BASELINE_A, BASELINE_B))
    goal = f"throughput at {top} clients (HTTP) at least 2x baseline B and not below baseline A"
    if top != 8:
        goal += " (the issue says 8 clients)"
    if ours and a and b:
        detail = f"RTFx ours {ours.rtfx:.1f}, A {a.rtfx:.1f}, B {b.rtfx:.1f} (ours/B = {ours.rtfx / b.rtfx:.2f}x)"
        targets.append(Target(goal, detail, ours.rtfx >= 2 * b.rtfx and ours.rtfx >= a.rtfx))
    else:
        targets.append(Target(goal, "not measured", None))

    ours, a = _find(table, HTTP, "jfk"), _find(table, BASELINE_A, "jfk")
    goal = f"added latency for the 11 s clip under {ADDED_LATENCY_LIMIT_S * 1000:.0f} ms over baseline A (p50)"
    if ours and a:
        added = ours.p50_s - a.p50_s
        detail = f"ours {ours.p50_s * 1000:.0f} ms, A {a.p50_s * 1000:.0f} ms: {added * 1000:+.0f} ms"
        targets.append(Target(goal, detail, added < ADDED_LATENCY_LIMIT_S))
    else:
        targets.append(Target(goal, "not measured", None))

    ours_wer, a_wer = _pooled_wer(runs, HTTP), _pooled_wer(runs, BASELINE_A)
    goal = "word error rate within 0.5 points of baseline A (long recording + clip set)"
    if ours_wer is not None and a_wer is not None:
        detail = f"ours {ours_wer * 100:.2f}%, A {a_wer * 100:.2f}% ({(ours_wer - a_wer) * 100:+.2f} points)"
        targets.append(Target(goal, detail, ours_wer - a_wer <= WER_MARGIN))
    else:
        targets.append(Target(goal, "not measured", None))

    run = next((r for r in runs if r.system in (HTTP, GRPC)), None)
    goal = f"Triton plus frontend under {MEMORY_LIMIT_BYTES / 1e9:.0f} GB RSS with base (whole process tree, peak)"
    if run is not None:
        targets.append(Target(goal, f"{run.peak_rss_bytes / 1e9:.2f} GB", run.peak_rss_bytes < MEMORY_LIMIT_BYTES))
    else:
        targets.append(Target(goal, "not measured", None))

    if elapsed_s is not None:
        goal = f"benchmark done in under {BENCH_TIME_LIMIT_S // 60} minutes (audio generation included)"
        targets.append(Target(goal, f"{elapsed_s / 60:.1f} min", elapsed_s < BENCH_TIME_LIMIT_S))
    return targets


def format_targets(targets: Sequence[Target]) -> str:
    marks = {True: "met    ", False: "NOT met", None: "n/a    "}
    return "\n".join(f"  [{marks[t.met]}] {t.goal}: {t.detail}" for t in targets)


def write_json(path: Path, meta: dict[str, Any], design: str, runs: Sequence[SystemRun], table: Sequence[Row],
               targets: Sequence[Target]) -> None:
    document = {"meta": meta, "design": design, "rows": table, "targets": targets, "runs": runs}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.format(msgspec.json.encode(document), indent=1))
