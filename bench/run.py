"""Throughput, latency, accuracy, memory and start-up of the full stack against faster-whisper baselines.

    python -m bench.run [--quick] [--concurrency 1,2,4,8] [--json bench/results.json] [--threads N]
                        [--systems A,B,http,grpc]

Same machine, same model (the multilingual `base` CTranslate2 directory our engine loads, int8, the
same thread count), same audio, one system at a time:
  baseline A  faster-whisper BatchedInferencePipeline in-process (N client threads share it)
  baseline B  faster-whisper sequential transcribe behind a one-at-a-time queue
  ours HTTP   python -m frontend.serve through the openai SDK
  ours gRPC   the same server, Triton's entry model `whisper` called directly (streaming gRPC)
Prints one table and the issue's targets (reported, not asserted) and writes everything to JSON.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from bench.baselines import run_baseline
from bench.load import SystemRun
from bench.ours import run_ours
from bench.report import evaluate_targets, format_table, format_targets, rows, write_json
from bench.workload import build_workload, describe
from whisper_triton.models import default_cache_dir, resolve_model
from whisper_triton.settings import model_settings

SYSTEMS = ("A", "B", "http", "grpc")


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
    parser.add_argument("--quick", action="store_true",
                        help="a 1-minute recording, two short clips, concurrency 1,2: checks every row works")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in _parse_list(s)],
                        help="client counts for the clip set (default 1,2,4,8; 1,2 with --quick)")
    parser.add_argument("--json", type=Path, default=Path("bench/results.json"), help="where to write the results")
    env_threads = int(os.environ.get("WHISPER_CPU_THREADS") or 0)
    parser.add_argument("--threads", type=int, default=env_threads or os.cpu_count() or 1,
                        help="CTranslate2 threads for every system (default WHISPER_CPU_THREADS, else the cores)")
    parser.add_argument("--systems", type=_parse_list, default=list(SYSTEMS),
                        help="which systems to run, of A,B,http,grpc (default all)")
    args = parser.parse_args(argv)
    if args.concurrency is None:
        args.concurrency = [1, 2] if args.quick else [1, 2, 4, 8]
    if any(n < 1 for n in args.concurrency):
        parser.error("--concurrency takes positive numbers")
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The test suite's asset cache (what `make test` uses), so audio made once serves both.
    os.environ.setdefault("TEST_ASSETS_DIR", str(default_cache_dir() / "test-assets"))
    started = time.perf_counter()
    print("Preparing audio and model ...", file=sys.stderr, flush=True)
    workload = build_workload(args.quick, args.concurrency)
    model = resolve_model("base", model_settings().cache_path())
    design = describe(workload)
    print(design, file=sys.stderr, flush=True)
    work_dir = Path(tempfile.mkdtemp(prefix="whisper-bench-"))
    runs: list[SystemRun] = []
    try:
        for system in ("A", "B"):
            if system in args.systems:
                print(f"Running baseline {system} ...", file=sys.stderr, flush=True)
                runs.append(run_baseline(system, workload, model.path, args.threads, work_dir))
        transports = [t for t in ("http", "grpc") if t in args.systems]
        if transports:
            print("Running ours ...", file=sys.stderr, flush=True)
            runs += run_ours(workload, args.threads, work_dir, transports)
    except BaseException:
        print(f"Logs kept in {work_dir}", file=sys.stderr)
        raise
    shutil.rmtree(work_dir, ignore_errors=True)
    elapsed = time.perf_counter() - started
    table = rows(runs)
    targets = evaluate_targets(runs, table, elapsed)
    meta = {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "threads": args.threads, "quick": args.quick,
        "concurrency": args.concurrency, "model": str(model.path), "elapsed_s": round(elapsed, 1),
        "versions": {name: version(name) for name in ("faster-whisper", "ctranslate2", "tritonclient", "openai")},
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    print()
    print(f"Whisper base int8, {args.threads} threads, {_cpu_model()} ({os.cpu_count()} cores)")
    print(design)
    print("RTFx: audio s / wall s; p50/p95: request latency; WER after tests.text normalisation; peak RSS: process "
          "tree during the row; ready: process start to ready;\nCPU s: CPU time of the process tree during the row "
          "(steadier than wall time on a shared machine); batch: windows per engine execution (ours)")
    print()
    print(format_table(table))
    print()
    print("Targets (reported, not asserted):")
    print(format_targets(targets))
    write_json(args.json, meta, design, runs, table, targets)
    print(f"\nWritten to {args.json} in {elapsed / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
