"""faster-whisper, the tool a user would pick instead, run in its own process (so its memory is its own).

    python -m bench.baselines --model-dir DIR --threads N --plan PLAN.json --out RESULTS.json

Each entry of the plan is one table row: a pipeline, its decoding mode and beam size, and a phase.
  A  `BatchedInferencePipeline` (faster-whisper's fastest path: VAD, windows of one file in batches of 8)
  B  sequential `WhisperModel.transcribe` (timestamps, conditioned on previous text: its defaults)
Both load the same CTranslate2 directory as our engine, int8, `cpu_threads` = the threads our engine gets.
Several clients are served one after another (a one-at-a-time queue, as simple Whisper servers do);
latency then counts the time spent waiting in the queue. The process prints READY once the model is
loaded and a line per row.
"""

from __future__ import annotations

import argparse
import os
import queue
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import msgspec

from bench.load import PhaseResult, SystemRun, Transcribe, run_phase
from bench.workload import Clip, Phase
from harness.procfs import RssSampler, tree_cpu_seconds
from whisper_triton.launcher import with_preload

COMPUTE_TYPE = "int8"  # WHISPER_COMPUTE_TYPE's default on CPU
BATCH_SIZE = 8  # BatchedInferencePipeline's default


class BaselineRow(msgspec.Struct, frozen=True):
    system: str  # the row's label
    pipeline: str  # A | B
    beam: int
    timestamps: bool  # A: without_timestamps=False; B always decodes timestamps (its default)
    phase: Phase


def _text(segments: Any) -> str:
    return "".join(segment.text for segment in segments).strip()


def _pipeline(model: Any, row: BaselineRow) -> Transcribe:
    if row.pipeline == "A":
        from faster_whisper import BatchedInferencePipeline

        batched = BatchedInferencePipeline(model)

        def run(clip: Clip) -> str:
            segments, _ = batched.transcribe(clip.path, beam_size=row.beam, batch_size=BATCH_SIZE,
                                             without_timestamps=not row.timestamps)
            return _text(segments)  # decoding happens while the generator is consumed
    else:

        def run(clip: Clip) -> str:
            segments, _ = model.transcribe(clip.path, beam_size=row.beam)
            return _text(segments)

    return run


def one_at_a_time(run: Transcribe) -> Transcribe:
    """A one-worker queue in front of `run`: what a simple server does with concurrent requests."""
    jobs: queue.Queue[tuple[Clip, Future[str]]] = queue.Queue()

    def worker() -> None:
        while True:
            clip, future = jobs.get()
            try:
                future.set_result(run(clip))
            except Exception as exc:
                future.set_exception(exc)

    threading.Thread(target=worker, daemon=True, name="whisper-worker").start()

    def transcribe(clip: Clip) -> str:
        future: Future[str] = Future()
        jobs.put((clip, future))
        return future.result()

    return transcribe


def child(model_dir: str, threads: int, rows: list[BaselineRow], warm: Clip) -> list[SystemRun]:
    runs = []
    with RssSampler() as memory:
        from faster_whisper import WhisperModel

        model = WhisperModel(model_dir, device="cpu", compute_type=COMPUTE_TYPE, cpu_threads=threads)
        print("READY", flush=True)
        for row in rows:
            transcribe = one_at_a_time(_pipeline(model, row))
            transcribe(warm)  # untimed
            memory.take_peak()
            cpu = tree_cpu_seconds(os.getpid())
            wall, records = run_phase(transcribe, row.phase)
            cpu = tree_cpu_seconds(os.getpid()) - cpu
            phase = PhaseResult(row.phase.name, row.phase.concurrency, wall, records, memory.take_peak(), cpu_s=cpu)
            settings = {"model": model_dir, "compute_type": COMPUTE_TYPE, "cpu_threads": str(threads),
                        "beam_size": str(row.beam), "timestamps": str(row.timestamps).lower(),
                        "pipeline": row.pipeline}
            if row.pipeline == "A":
                settings["batch_size"] = str(BATCH_SIZE)
            runs.append(SystemRun(row.system, 0.0, [phase], settings, memory.overall_peak))
            print(f"{row.system} {row.phase.name}: {wall:.1f} s", flush=True)
    return runs


def run_baselines(rows: list[BaselineRow], warm: Clip, model_dir: Path, threads: int, work_dir: Path,
                  timeout: float = 7200.0, malloc: str | None = None) -> list[SystemRun]:
    """Runs the rows in one fresh process; every run's ready time is its process start to model loaded.
    `malloc`: an allocator library preloaded into that process (None: glibc's, as faster-whisper runs)."""
    plan_path, out_path, log_path = work_dir / "baselines.json", work_dir / "baselines-out.json", work_dir / "fw.log"
    plan_path.write_bytes(msgspec.json.encode({"rows": rows, "warm": warm}))
    command = [sys.executable, "-m", "bench.baselines", "--model-dir", str(model_dir), "--threads", str(threads),
               "--plan", str(plan_path), "--out", str(out_path)]
    started = time.perf_counter()
    ready = None
    with log_path.open("wb") as log:
        env = with_preload(dict(os.environ), Path(malloc)) if malloc else None
        process = subprocess.Popen(command, cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE,
                                   stderr=log, text=True, env=env)
        assert process.stdout is not None
        deadline = threading.Timer(timeout, process.kill)
        deadline.start()
        try:
            for line in process.stdout:
                if line.strip() == "READY" and ready is None:
                    ready = time.perf_counter() - started
                else:
                    print(f"  faster-whisper: {line.rstrip()}", file=sys.stderr, flush=True)
            process.wait()
        finally:
            deadline.cancel()
    if process.returncode != 0 or ready is None:
        raise RuntimeError(f"faster-whisper failed (exit {process.returncode}):\n"
                           f"{log_path.read_text(errors='replace')[-3000:]}")
    runs = msgspec.json.decode(out_path.read_bytes(), type=list[SystemRun])
    return [msgspec.structs.replace(run, ready_s=ready) for run in runs]


class _Plan(msgspec.Struct):
    rows: list[BaselineRow]
    warm: Clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--plan", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    plan = msgspec.json.decode(args.plan.read_bytes(), type=_Plan)
    args.out.write_bytes(msgspec.json.encode(child(args.model_dir, args.threads, plan.rows, plan.warm)))


if __name__ == "__main__":
    main()
