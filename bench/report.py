"""Rows, the printed tables, the issue's targets (reported, never asserted), the JSON file and the README.

    python -m bench.report --readme docs/benchmarks.md bench/results/<run>.json   # regenerate its tables
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from bench.load import PhaseResult, RequestRecord, SystemRun
from bench.pipeline import PipelineRow
from harness.text import english_errors

# The issue's targets.
LONG_SPEEDUP = 1.25  # one long file, against faster-whisper's batched pipeline in the same mode and beam
LOAD_VS_QUEUE = 2.0  # 8 clients, against faster-whisper behind a one-at-a-time queue
LOAD_VS_BATCHED = 1.2  # ... and against its batched pipeline serving them one after another
PIPELINE_CPU_PER_HOUR = 4.0  # CPU seconds per audio hour outside the engine
PIPELINE_HOUR_WALL = 3.0  # seconds for a one-hour file outside the engine
LINEAR_TOLERANCE = 0.25  # time per audio hour of the longest file within this of the shortest's
README_BEGIN, README_END = "<!-- bench:begin -->", "<!-- bench:end -->"


class Row(msgspec.Struct, frozen=True):
    system: str
    mode: str  # what the system decodes: text | timestamps
    beam: int
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
    cpu_s: float | None = None  # CPU seconds of the process tree during the phase
    engine_batch: float | None = None
    wer_digits: float | None = None  # with runs of digits joined ("1 2 3 4" = "1234"): a matter of style


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


def corpus_wer(records: Sequence[RequestRecord], digits_joined: bool = False) -> float:
    """Word errors of all requests over all their reference words (a failed request counts as empty)."""
    errors = words = 0
    for record in records:
        e, w = english_errors(record.reference, record.text if record.error is None else "", digits_joined)
        errors, words = errors + e, words + w
    return errors / words if words else math.nan


def decoding_mode(run: SystemRun) -> str:
    settings = run.settings
    if "transport" in settings:  # ours: every format is decoded with timestamps
        return "timestamps"
    return "timestamps" if settings.get("timestamps") == "true" or settings.get("pipeline") == "B" else "text"


def phase_row(run: SystemRun, phase: PhaseResult) -> Row:
    latencies = [r.latency_s for r in phase.requests if r.error is None]
    audio = sum(r.audio_seconds for r in phase.requests)
    return Row(
        system=run.system, mode=decoding_mode(run), beam=int(run.settings.get("beam_size", "1")), phase=phase.phase,
        concurrency=phase.concurrency, requests=len(phase.requests),
        errors=sum(r.error is not None for r in phase.requests), audio_s=audio, wall_s=phase.wall_s,
        rtfx=audio / phase.wall_s if phase.wall_s > 0 else math.nan,
        p50_s=percentile(latencies, 50), p95_s=percentile(latencies, 95), wer=corpus_wer(phase.requests),
        peak_rss_bytes=phase.peak_rss_bytes, ready_s=run.ready_s, cpu_s=phase.cpu_s, engine_batch=phase.engine_batch,
        wer_digits=corpus_wer(phase.requests, digits_joined=True),
    )


def rows(runs: Sequence[SystemRun]) -> list[Row]:
    return [phase_row(run, phase) for run in runs for phase in run.phases]


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None or math.isnan(value) else format(value, fmt)


COLUMNS = (("system", "<34"), ("phase", "<5"), ("c", ">2"), ("audio s", ">8"), ("wall s", ">7"), ("RTFx", ">6"),
           ("p50 s", ">7"), ("p95 s", ">7"), ("WER", ">6"), ("WER*", ">6"), ("CPU s", ">7"), ("peak RSS", ">9"),
           ("batch", ">5"))


def _cells(row: Row) -> tuple[str, ...]:
    return (row.system + ("!" if row.errors else ""), row.phase, str(row.concurrency), _num(row.audio_s, ".1f"),
            _num(row.wall_s, ".1f"), _num(row.rtfx, ".1f"), _num(row.p50_s, ".2f"), _num(row.p95_s, ".2f"),
            _percent(row.wer), _percent(row.wer_digits), _num(row.cpu_s, ".1f"),
            f"{row.peak_rss_bytes / 1e6:.0f} MB", _num(row.engine_batch, ".1f"))


def _percent(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value * 100:.2f}%"


def format_table(table: Sequence[Row]) -> str:
    header = " ".join(format(name, align) for name, align in COLUMNS)
    lines = [header, "-" * len(header)]
    lines += [" ".join(format(cell, align) for cell, (_, align) in zip(_cells(row), COLUMNS, strict=True))
              for row in table]
    if any(row.errors for row in table):
        lines.append("! some requests failed (see errors in the JSON); their latencies are left out, WER counts them")
    return "\n".join(lines)


STAGES = (  # (profile key, what it is)
    ("decode", "container decoding and resampling (entry model)"),
    ("vad", "VAD and window planning (entry model)"),
    ("engine_queue", "waiting in the engine's queue (sum over windows)"),
    ("engine_features", "log-mel (engine)"),
    ("engine_encode", "encoder"),
    ("engine_language", "language detection (once per request)"),
    ("engine_decode", "generation, first pass"),
    ("engine_fallback", "temperature-fallback reruns"),
    ("engine_resume", "resumes where Whisper stopped early (no re-encoding)"),
    ("engine_words", "word alignment"),
    ("transfer", "BLS transfers and (de)serialisation"),
)


def format_profile(profile: dict[str, Any]) -> str:
    """The stages of one request: seconds (engine stages are each window's share of its batch's time)."""
    seconds: dict[str, float] = profile.get("seconds", {})
    busy = sum(v for k, v in seconds.items() if k != "engine_queue")
    lines = [f"{'stage':<17} {'seconds':>8} {'share':>6}  what", "-" * 80]
    for key, what in STAGES:
        value = seconds.get(key, 0.0)
        share = "" if key == "engine_queue" or busy <= 0 else f"{100 * value / busy:5.1f}%"
        lines.append(f"{key:<17} {value:8.2f} {share:>6}  {what}")
    lines.append(f"{profile.get('windows', 0)} windows, {profile.get('resumes', 0)} resumes, mean engine batch "
                 f"{profile.get('mean_batch', 0)}; wall {profile.get('wall', 0):.2f} s for "
                 f"{profile.get('audio_seconds', 0):.0f} s of audio")
    return "\n".join(lines)


def format_pipeline(table: Sequence[PipelineRow]) -> str:
    lines = [f"{'file':<10} {'audio h':>7} {'wall s':>7} {'CPU s':>7} {'CPU s/h':>8} {'wall s/h':>8} {'peak RSS':>9} "
             f"{'windows':>8} {'back':>5} {'first run s':>11}", "-" * 92]
    for row in table:
        first = f"{row.first_run[0]:11.2f}" if row.first_run else f"{'-':>11}"
        lines.append(f"{row.name:<10} {row.audio_s / 3600:7.2f} {row.wall_s:7.2f} {row.cpu_s:7.2f} "
                     f"{row.cpu_per_audio_hour:8.2f} {row.wall_per_audio_hour:8.2f} "
                     f"{row.peak_rss_bytes / 1e6:6.0f} MB {row.windows:8d} {row.segments:5d} {first}")
    return "\n".join(lines)


FW_BATCHED, FW_SEQUENTIAL = "faster-whisper batched", "faster-whisper sequential"
OURS_JSON, OURS_VERBOSE, OURS_GRPC = "ours HTTP json", "ours HTTP verbose_json", "ours gRPC"


def baseline_label(pipeline: str, timestamps: bool) -> str:
    if pipeline == "B":
        return FW_SEQUENTIAL
    return f"{FW_BATCHED}, {'timestamps' if timestamps else 'text'}"


def _find(table: Sequence[Row], phase: str, system: str, beam: int = 1) -> Row | None:
    return next((r for r in table if r.phase == phase and r.system == system and r.beam == beam), None)


def _times(ratio: float) -> str:
    """A speed ratio to two decimals, rounded down: 1.2467 reads 1.24x, never 1.25x beside a missed 1.25x."""
    return f"{math.floor(ratio * 100 + 1e-9) / 100:.2f}x"


def _long_target(table: Sequence[Row], beam: int, ours_system: str, mode: str) -> Target:
    ours, theirs = _find(table, "long", ours_system, beam), _find(table, "long", f"{FW_BATCHED}, {mode}", beam)
    goal = (f"one long file, beam {beam}: {ours_system} >= {LONG_SPEEDUP}x faster-whisper batched ({mode}), "
            "WER no worse")
    if ours is None or theirs is None:
        return Target(goal, "not measured", None)
    ratio = theirs.p50_s / ours.p50_s  # the median run: the long file may run more than once
    detail = (f"{_times(ratio)} ({ours.p50_s:.1f} s vs {theirs.p50_s:.1f} s); WER {ours.wer * 100:.2f}% vs "
              f"{theirs.wer * 100:.2f}%")
    return Target(goal, detail, ratio >= LONG_SPEEDUP and ours.wer <= theirs.wer)


def evaluate_targets(table: Sequence[Row], pipeline: Sequence[PipelineRow]) -> list[Target]:
    targets = [_long_target(table, beam, system, mode) for beam in (1, 5)
               for system, mode in ((OURS_JSON, "text"), (OURS_VERBOSE, "timestamps"))]

    json_row, verbose = _find(table, "long", OURS_JSON), _find(table, "long", OURS_VERBOSE)
    goal = "json keeps every sentence: its WER equals verbose_json's on the long file"
    if json_row and verbose:
        targets.append(Target(goal, f"{json_row.wer * 100:.2f}% vs {verbose.wer * 100:.2f}%",
                              abs(json_row.wer - verbose.wer) < 1e-9))
    else:
        targets.append(Target(goal, "not measured", None))

    ours, queue = _find(table, "load", OURS_JSON), _find(table, "load", FW_SEQUENTIAL)
    batched = _find(table, "load", f"{FW_BATCHED}, text")
    goal = (f"8 clients: RTFx >= {LOAD_VS_QUEUE}x faster-whisper behind a one-at-a-time queue and >= "
            f"{LOAD_VS_BATCHED}x its batched pipeline serving them one after another")
    if ours and queue and batched:
        detail = (f"RTFx ours {ours.rtfx:.1f} (p95 {ours.p95_s:.1f} s), queue {queue.rtfx:.1f} "
                  f"(p95 {queue.p95_s:.1f} s), batched {batched.rtfx:.1f} (p95 {batched.p95_s:.1f} s): "
                  f"{_times(ours.rtfx / queue.rtfx)} and {_times(ours.rtfx / batched.rtfx)}")
        targets.append(Target(goal, detail, ours.rtfx >= LOAD_VS_QUEUE * queue.rtfx
                              and ours.rtfx >= LOAD_VS_BATCHED * batched.rtfx))
    else:
        targets.append(Target(goal, "not measured", None))

    hour = next((row for row in pipeline if abs(row.audio_s - 3600) < 120), None)
    goal = (f"pipeline without the engine: <= {PIPELINE_CPU_PER_HOUR} CPU s per audio hour, a 1-hour file in <= "
            f"{PIPELINE_HOUR_WALL} s")
    if hour:
        detail = f"{hour.cpu_per_audio_hour:.2f} CPU s per hour, {hour.wall_s:.2f} s wall for the hour"
        if hour.first_run:
            detail += f" (its first run after the server's start: {hour.first_run[0]:.2f} s)"
        targets.append(Target(goal, detail, hour.cpu_per_audio_hour <= PIPELINE_CPU_PER_HOUR
                              and hour.wall_s <= PIPELINE_HOUR_WALL))
    else:
        targets.append(Target(goal, "not measured", None))

    goal = "long inputs scale linearly and lose nothing (pipeline, time per audio hour, every window back)"
    if len(pipeline) >= 2:
        short, longest = min(pipeline, key=lambda r: r.audio_s), max(pipeline, key=lambda r: r.audio_s)
        drift = longest.wall_per_audio_hour / short.wall_per_audio_hour - 1
        lost = sum(row.windows - row.segments for row in pipeline)
        detail = (f"{short.wall_per_audio_hour:.2f} s per hour at {short.audio_s / 3600:.1f} h, "
                  f"{longest.wall_per_audio_hour:.2f} at {longest.audio_s / 3600:.1f} h ({drift:+.0%}); peak RSS "
                  f"{short.peak_rss_bytes / 1e6:.0f} / {longest.peak_rss_bytes / 1e6:.0f} MB; {lost} windows lost")
        targets.append(Target(goal, detail, abs(drift) <= LINEAR_TOLERANCE and lost == 0))
    else:
        targets.append(Target(goal, "not measured", None))
    return targets


def format_targets(targets: Sequence[Target]) -> str:
    marks = {True: "met    ", False: "NOT met", None: "n/a    "}
    return "\n".join(f"  [{marks[t.met]}] {t.goal}: {t.detail}" for t in targets)


class Document(msgspec.Struct):
    meta: dict[str, Any]
    design: str
    rows: list[Row]
    targets: list[Target]
    runs: list[SystemRun]
    pipeline: list[PipelineRow] = msgspec.field(default_factory=list)
    profile: dict[str, Any] | None = None


def write_json(path: Path, document: Document) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.format(msgspec.json.encode(document), indent=1))


def read_json(path: Path) -> Document:
    return msgspec.json.decode(path.read_bytes(), type=Document)


def markdown(document: Document, source: str) -> str:
    """The README's Performance tables, from one run's JSON."""
    meta = document.meta
    lines = [f"Run of {meta.get('date', '?')[:10]} on {meta.get('cpu', '?')} ({meta.get('cores')} cores), "
             f"`{meta.get('command', 'make bench')}`, {meta.get('elapsed_s', 0) / 60:.1f} min; JSON: `{source}`.",
             f"Load average before / after: {meta.get('load_before', '?')} / {meta.get('load_after', '?')}.", "",
             "| system | decodes | beam | phase | clients | RTFx | p50 s | p95 s | WER | WER* | CPU s | peak RSS |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in document.rows:
        lines.append(f"| {row.system} | {row.mode} | {row.beam} | {row.phase} | {row.concurrency} | "
                     f"{_num(row.rtfx, '.1f')} | {_num(row.p50_s, '.2f')} | {_num(row.p95_s, '.2f')} | "
                     f"{_percent(row.wer)} | {_percent(row.wer_digits)} | {_num(row.cpu_s, '.1f')} | "
                     f"{row.peak_rss_bytes / 1e6:.0f} MB |")
    lines += ["", "WER* joins runs of digits first (\"1 2 3 4\" = \"1234\"): how a number read out digit by digit "
              "is written is a matter of style, and the timestamp mode writes them apart."]
    if document.profile:
        seconds = document.profile.get("seconds", {})
        lines += ["", "Where the time of the long file goes (ours, gRPC, beam 1; engine stages are each window's "
                  "share of its batch):", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {what} | {seconds.get(key, 0.0):.2f} |" for key, what in STAGES]
        lines.append(f"| windows / resumes / mean batch | {document.profile.get('windows')} / "
                     f"{document.profile.get('resumes')} / {document.profile.get('mean_batch')} |")
    if document.pipeline:
        lines += ["", "The pipeline without the engine (`bench/instant_engine`: log-mel computed, no network):", "",
                  "| file | audio h | wall s (median) | CPU s per audio hour (median) | peak RSS | windows back | "
                  "each run: wall s / CPU s | first run after start (untimed): wall s / CPU s |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {row.name} | {row.audio_s / 3600:.2f} | {row.wall_s:.2f} | {row.cpu_per_audio_hour:.2f} | "
                  f"{row.peak_rss_bytes / 1e6:.0f} MB | {row.segments} / {row.windows} | "
                  f"{', '.join(f'{wall:.2f} / {cpu:.2f}' for wall, cpu in row.runs) or '-'} | "
                  f"{f'{row.first_run[0]:.2f} / {row.first_run[1]:.2f}' if row.first_run else '-'} |"
                  for row in document.pipeline]
    lines += ["", "Targets:", ""]
    marks = {True: "met", False: "**not met**", None: "not measured"}
    # Evaluated again from the rows (the same numbers; the wording of the current code).
    targets = evaluate_targets(document.rows, document.pipeline) if document.rows else document.targets
    lines += [f"- {target.goal}: {marks[target.met]} ({target.detail})" for target in targets]
    return "\n".join(lines)


def update_readme(readme: Path, document: Document, source: str) -> None:
    replace_block(readme, README_BEGIN, README_END, markdown(document, source))


def add_readme_options(parser: argparse.ArgumentParser, block: str, several: bool = False) -> None:
    """`--readme docs/<file>.md --results <json>`: regenerate the Markdown file's `block` from runs' JSON, no run."""
    parser.add_argument("--readme", type=Path, default=None,
                        help=f"with --results: regenerate the {block} block of this Markdown file (docs/...) "
                             "from a run's JSON (no run)")
    parser.add_argument("--results", type=Path, nargs="+" if several else None, default=None)


def regenerate_readme(parser: argparse.ArgumentParser, args: argparse.Namespace, begin: str, end: str,
                      block: Callable[[list[tuple[dict[str, Any], Path]]], str]) -> bool:
    """With `--readme` (see add_readme_options): the block between `begin` and `end` rebuilt by `block`
    from the `--results` runs, and True (the caller runs nothing); False without `--readme`."""
    if args.readme is None:
        return False
    if args.results is None:
        parser.error("--readme needs --results")
    paths = args.results if isinstance(args.results, list) else [args.results]
    replace_block(args.readme, begin, end, block([(json.loads(path.read_text()), path) for path in paths]))
    return True


def replace_block(readme: Path, begin: str, end: str, body: str) -> None:
    """Replaces what lies between the `begin` and `end` markers of the README."""
    text = readme.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{readme} has no {begin} ... {end} block")
    block = f"{begin}\n{body}\n{end}"
    readme.write_text(pattern.sub(lambda _: block, text), encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readme", type=Path, required=True)
    parser.add_argument("results", type=Path)
    args = parser.parse_args()
    update_readme(args.readme, read_json(args.results), str(args.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
