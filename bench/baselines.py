"""The faster-whisper baselines, each run in its own process (so its memory is its own tree).

    python -m bench.baselines {A,B} --model-dir DIR --threads N --workload W.json --out R.json

A: `BatchedInferencePipeline` in-process, N client threads calling it at once (faster-whisper's best
   CPU path: VAD on, windows of one file decoded in batches).
B: sequential `WhisperModel.transcribe` behind a one-at-a-time queue, as the simple Whisper servers
   do; latency counts the time spent waiting in the queue.
Both load the same CTranslate2 directory as our engine, int8, `cpu_threads` = WHISPER_CPU_THREADS,
greedy (beam 1, our default), language detected. Everything else is faster-whisper's default.
The process prints READY once the model is loaded, a line per phase, and writes a SystemRun.
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
from bench.rss import RssSampler, tree_cpu_seconds
from bench.workload import Clip, Workload

REPO = Path(__file__).resolve().parent.parent
BEAM_SIZE = 1  # WHISPER_BEAM_SIZE's default (our stack is started with it)
COMPUTE_TYPE = "int8"  # WHISPER_COMPUTE_TYPE's default on CPU
BATCH_SIZE = 8  # BatchedInferencePipeline's default
SYSTEMS = {"A": "baseline A", "B": "baseline B"}


def _text(segments: Any) -> str:
    return "".join(segment.text for segment in segments).strip()


def batched(model: Any) -> Transcribe:
    from faster_whisper import BatchedInferencePipeline

    pipeline = BatchedInferencePipeline(model)

    def transcribe(clip: Clip) -> str:
        segments, _info = pipeline.transcribe(clip.path, beam_size=BEAM_SIZE, batch_size=BATCH_SIZE)
        return _text(segments)  # decoding happens while the generator is consumed

    return transcribe


def one_at_a_time(model: Any) -> Transcribe:
    jobs: queue.Queue[tuple[Clip, Future[str]]] = queue.Queue()

    def worker() -> None:
        while True:
            clip, future = jobs.get()
            try:
                segments, _info = model.transcribe(clip.path, beam_size=BEAM_SIZE)
                future.set_result(_text(segments))
            except Exception as exc:
                future.set_exception(exc)

    threading.Thread(target=worker, daemon=True, name="whisper-worker").start()

    def transcribe(clip: Clip) -> str:
        future: Future[str] = Future()
        jobs.put((clip, future))
        return future.result()

    return transcribe


def child(system: str, model_dir: str, threads: int, workload: Workload) -> SystemRun:
    with RssSampler() as memory:
        from faster_whisper import WhisperModel

        model = WhisperModel(model_dir, device="cpu", compute_type=COMPUTE_TYPE, cpu_threads=threads)
        print("READY", flush=True)
        transcribe = batched(model) if system == "A" else one_at_a_time(model)
        transcribe(workload.jfk)  # warm-up, untimed
        phases = []
        for phase in workload.phases:
            cpu = tree_cpu_seconds(os.getpid())
            wall, records = run_phase(transcribe, phase)
            cpu = tree_cpu_seconds(os.getpid()) - cpu
            phases.append(PhaseResult(phase.name, phase.concurrency, wall, records, memory.take_peak(), cpu_s=cpu))
            print(f"{phase.name} c={phase.concurrency}: {wall:.1f} s", flush=True)
    settings = {"model": model_dir, "compute_type": COMPUTE_TYPE, "cpu_threads": str(threads),
                "beam_size": str(BEAM_SIZE)}
    if system == "A":
        settings["batch_size"] = str(BATCH_SIZE)
    return SystemRun(SYSTEMS[system], 0.0, phases, settings, memory.overall_peak)


def run_baseline(system: str, workload: Workload, model_dir: Path, threads: int, work_dir: Path,
                 timeout: float = 3600.0) -> SystemRun:
    """Runs one baseline in a fresh process; ready time is from its start to the model loaded."""
    workload_path, out_path = work_dir / "workload.json", work_dir / f"baseline-{system}.json"
    log_path = work_dir / f"baseline-{system}.log"
    workload_path.write_bytes(msgspec.json.encode(workload))
    command = [sys.executable, "-m", "bench.baselines", system, "--model-dir", str(model_dir),
               "--threads", str(threads), "--workload", str(workload_path), "--out", str(out_path)]
    started = time.perf_counter()
    ready = None
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True)
        assert process.stdout is not None
        deadline = threading.Timer(timeout, process.kill)
        deadline.start()
        try:
            for line in process.stdout:
                if line.strip() == "READY" and ready is None:
                    ready = time.perf_counter() - started
                else:
                    print(f"  {SYSTEMS[system]}: {line.rstrip()}", file=sys.stderr, flush=True)
            process.wait()
        finally:
            deadline.cancel()
    if process.returncode != 0 or ready is None:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{SYSTEMS[system]} failed (exit {process.returncode}):\n{tail}")
    run = msgspec.json.decode(out_path.read_bytes(), type=SystemRun)
    return msgspec.structs.replace(run, ready_s=ready)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("system", choices=sorted(SYSTEMS))
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--workload", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    workload = msgspec.json.decode(args.workload.read_bytes(), type=Workload)
    run = child(args.system, args.model_dir, args.threads, workload)
    args.out.write_bytes(msgspec.json.encode(run))


if __name__ == "__main__":
    main()
