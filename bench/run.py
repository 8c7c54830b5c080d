"""Our stack against faster-whisper on real speech, side by side in one run; and our pipeline without the engine.

    python -m bench.run [--quick] [--sections long,load,pipeline] [--beams 1,5] [--threads N] [--json PATH]
                        [--baseline-malloc LIBRARY]

Same machine, same model files (the multilingual `base` CTranslate2 directory our engine loads), int8, the
same CTranslate2 thread count, the same beam size per row, language detected; one system at a time:
  faster-whisper batched, text        BatchedInferencePipeline, its defaults (no timestamps), batch 8
  faster-whisper batched, timestamps  the same with without_timestamps=False
  faster-whisper sequential           WhisperModel.transcribe, its defaults (timestamps, previous text)
  ours HTTP json / verbose_json       python -m frontend.serve through the openai SDK
  ours gRPC                           the same server, Triton's entry model called directly (with PROFILE)
Ours runs on tcmalloc (TRITON_MALLOC=auto), faster-whisper on glibc's malloc as installed; --baseline-malloc
preloads an allocator into faster-whisper's process too (what it would gain). Ours decodes every answer format
with timestamps (that is how a window where Whisper stopped early is found), so "ours json" is compared with
faster-whisper's text mode while doing the timestamp mode's work.
Prints the tables, the stage profile and the issue's targets (reported, never asserted), and writes
everything to JSON (default bench/results/<date>-<host>.json) for `python -m bench.report --readme`.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from bench.baselines import BaselineRow, run_baselines
from bench.load import SystemRun
from bench.ours import OurRow, run_row, serving
from bench.pipeline import PipelineRow, run_pipeline
from bench.report import (
    OURS_GRPC,
    OURS_JSON,
    OURS_VERBOSE,
    Document,
    baseline_label,
    evaluate_targets,
    format_pipeline,
    format_profile,
    format_table,
    format_targets,
    rows,
    write_json,
)
from bench.workload import Workload, build_workload, describe
from whisper_triton.models import default_cache_dir, resolve_model
from whisper_triton.settings import model_settings

SECTIONS = ("long", "load", "pipeline")
LONG_REPEATS = 2  # runs of the long file at beam 1 (the headline comparison), per system
REPO = Path(__file__).resolve().parent.parent


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _parse_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1-minute long file, 4 load clips, a 10-minute pipeline "
                                                             "file: checks that every row works")
    parser.add_argument("--sections", type=_parse_list, default=list(SECTIONS), help="of long,load,pipeline")
    parser.add_argument("--beams", type=lambda s: [int(b) for b in _parse_list(s)], default=[1, 5],
                        help="beam sizes of the long-file rows (default 1,5)")
    env_threads = int(os.environ.get("WHISPER_CPU_THREADS") or 0)
    parser.add_argument("--threads", type=int, default=env_threads or os.cpu_count() or 1,
                        help="CTranslate2 threads for every system (default WHISPER_CPU_THREADS, else the cores)")
    parser.add_argument("--json", type=Path, default=None, help="where to write the results")
    parser.add_argument("--baseline-malloc", default=None, metavar="LIBRARY",
                        help="an allocator library preloaded into faster-whisper's process (default: none, glibc's "
                             "malloc, as it runs when installed; ours runs on tcmalloc, TRITON_MALLOC)")
    args = parser.parse_args(argv)
    if args.baseline_malloc and not Path(args.baseline_malloc).is_file():
        parser.error(f"--baseline-malloc: no such library {args.baseline_malloc}")
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    if args.json is None:
        stamp = time.strftime("%Y-%m-%d-%H%M")
        tags = ("-quick" if args.quick else "") + ("-fw-malloc" if args.baseline_malloc else "")
        args.json = REPO / "bench" / "results" / f"{stamp}-{socket.gethostname()}{tags}.json"
    return args


Step = BaselineRow | OurRow


def plan(sections: list[str], beams: list[int], workload: Workload) -> dict[int, list[Step]]:
    """The rows to run, by the beam size of our server, each baseline just before the row of ours it is
    compared with: the machine's speed drifts over minutes, and adjacent rows see the same machine."""
    steps: dict[int, list[Step]] = {}
    if "long" in sections:
        for beam in beams:
            long = workload.long_phase(LONG_REPEATS if beam == 1 else 1)
            steps[beam] = [BaselineRow(baseline_label("A", False), "A", beam, False, long),
                           OurRow(OURS_JSON, "http", "json", beam, long),
                           BaselineRow(baseline_label("A", True), "A", beam, True, long),
                           OurRow(OURS_VERBOSE, "http", "verbose_json", beam, long)]
            if beam == 1:
                steps[beam].append(OurRow(OURS_GRPC, "grpc", "json", beam, long, profile=True))
    if "load" in sections:
        load = workload.load_phase
        steps.setdefault(1, []).extend([BaselineRow(baseline_label("A", False), "A", 1, False, load),
                                        BaselineRow(baseline_label("B", True), "B", 1, True, load),
                                        OurRow(OURS_JSON, "http", "json", 1, load)])
    return steps


def run_steps(steps: dict[int, list[Step]], workload: Workload, model_dir: Path, threads: int,
              work_dir: Path, baseline_malloc: str | None = None) -> list[SystemRun]:
    runs: list[SystemRun] = []
    for beam, group in sorted(steps.items()):
        with serving(threads, work_dir, beam) as (stack, memory):
            for step in group:
                if isinstance(step, BaselineRow):
                    runs += run_baselines([step], workload.warm, model_dir, threads, work_dir, malloc=baseline_malloc)
                else:
                    runs.append(run_row(stack, step, workload.warm, memory))
    return runs


def _git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return out.stdout.strip() + ("+changes" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The test suite's asset cache (what `make test` uses), so audio made once serves both.
    os.environ.setdefault("TEST_ASSETS_DIR", str(default_cache_dir() / "test-assets"))
    started, load_before = time.perf_counter(), os.getloadavg()
    print("Preparing audio and model ...", file=sys.stderr, flush=True)
    workload = build_workload(args.quick)
    model = resolve_model("base", model_settings().cache_path())
    design = describe(workload)
    if args.baseline_malloc:
        design += f"\nfaster-whisper ran with LD_PRELOAD={args.baseline_malloc} (not as installed: glibc's malloc)"
    print(design, file=sys.stderr, flush=True)
    steps = plan(args.sections, args.beams, workload)
    work_dir = Path(tempfile.mkdtemp(prefix="whisper-bench-"))
    runs: list[SystemRun] = []
    pipeline: list[PipelineRow] = []
    try:
        print("Running faster-whisper and ours, row by row ...", file=sys.stderr, flush=True)
        runs += run_steps(steps, workload, model.path, args.threads, work_dir, args.baseline_malloc)
        if "pipeline" in args.sections:
            print("Running the pipeline without the engine ...", file=sys.stderr, flush=True)
            pipeline = run_pipeline(workload.hours, workload.warm, work_dir)
    except BaseException:
        print(f"Logs kept in {work_dir}", file=sys.stderr)
        raise
    shutil.rmtree(work_dir, ignore_errors=True)
    elapsed = time.perf_counter() - started
    # Shown by phase and beam, baselines first (they ran interleaved with ours).
    table = sorted(rows(runs), key=lambda r: (r.phase != "long", r.beam, not r.system.startswith("faster"), r.system))
    targets = evaluate_targets(table, pipeline)
    profile = next((p.profile for r in runs for p in r.phases if r.system == OURS_GRPC and p.profile), None)
    meta = {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "threads": args.threads, "quick": args.quick,
        "sections": args.sections, "beams": args.beams, "model": str(model.path), "elapsed_s": round(elapsed, 1),
        "host": socket.gethostname(), "commit": _git_commit(),
        "command": f"python -m bench.run {shlex.join(sys.argv[1:])}" if args.baseline_malloc else "make bench",
        "baseline_malloc": args.baseline_malloc,
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
        "versions": {name: version(name) for name in ("faster-whisper", "ctranslate2", "tritonclient", "openai")},
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    print()
    print(f"Whisper base int8, {args.threads} threads, {_cpu_model()} ({os.cpu_count()} cores)")
    print(design)
    print()
    print(format_table(table))
    if profile:
        print("\nWhere the long file's time goes (ours, gRPC, beam 1):")
        print(format_profile(profile))
    if pipeline:
        print("\nThe pipeline without the engine (instant engine; log-mel computed):")
        print(format_pipeline(pipeline))
    print("\nTargets (reported, not asserted):")
    print(format_targets(targets))
    write_json(args.json, Document(meta, design, table, targets, runs, pipeline, profile))
    print(f"\nWritten to {args.json} in {elapsed / 60:.1f} min; docs: "
          f"python -m bench.report --readme docs/benchmarks.md {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
