"""Our stack, `python -m frontend.serve` (Triton + frontend), driven over HTTP and over Triton gRPC.

HTTP: the openai SDK's `audio.transcriptions.create` (response_format json), one shared client.
gRPC: tritonclient's streaming call to the decoupled entry model `whisper`, one client per thread,
as any gRPC user would; the result is the final `done` event.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.baselines import BEAM_SIZE, COMPUTE_TYPE
from bench.load import PhaseResult, SystemRun, Transcribe, run_phase
from bench.rss import RssSampler, tree_cpu_seconds
from bench.workload import Clip, Workload
from whisper_triton import contract
from whisper_triton.repository import engine_model_name

REPO = Path(__file__).resolve().parent.parent
MODEL = "base"
REQUEST_TIMEOUT_S = 1800.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    log_path: Path
    started: float  # perf_counter() at launch
    ready_s: float = 0.0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]


def launch_stack(threads: int, work_dir: Path) -> Stack:
    """Starts serve with the `base` model on free ports (not waiting: see wait_ready)."""
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    # Other WHISPER_* variables (cache, windows in flight, ...) pass through, to try settings.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FRONTEND_", "TRITON_")) and k not in ("WHISPER_MODELS", "API_KEYS", "ADMIN_API_KEY")}
    env.update({
        "WHISPER_MODEL": MODEL,
        "WHISPER_CPU_THREADS": str(threads),
        "WHISPER_DEVICE": "cpu",
        "WHISPER_COMPUTE_TYPE": COMPUTE_TYPE,
        "WHISPER_BEAM_SIZE": str(BEAM_SIZE),
        "FRONTEND_PORT": str(http_port),
        "TRITON_GRPC_PORT": str(grpc_port),
        "TRITON_METRICS_PORT": str(metrics_port),
        "FRONTEND_DATA_DIR": tempfile.mkdtemp(prefix="data-", dir=work_dir),
    })
    log_path = work_dir / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "frontend.serve"], cwd=REPO, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    return Stack(process, http_port, grpc_port, log_path, time.perf_counter())


def wait_ready(stack: Stack, timeout: float = 600.0) -> None:
    """Returns once /health/ready answers 200 (Triton and the models ready); sets ready_s."""
    while time.perf_counter() - stack.started < timeout:
        if stack.process.poll() is not None:
            raise RuntimeError(f"serve exited with {stack.process.returncode}:\n{stack.log_tail()}")
        try:
            if httpx.get(f"{stack.base_url}/health/ready", timeout=2).status_code == 200:
                stack.ready_s = time.perf_counter() - stack.started
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"serve was not ready within {timeout:.0f} s:\n{stack.log_tail()}")


def stop_stack(stack: Stack) -> None:
    if stack.process.poll() is None:
        stack.process.send_signal(signal.SIGINT)  # what Ctrl-C does: frontend, then Triton
        try:
            stack.process.wait(60)
        except subprocess.TimeoutExpired:
            stack.process.kill()
            stack.process.wait()


def http_transcriber(base_url: str) -> Transcribe:
    from openai import OpenAI

    client = OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=REQUEST_TIMEOUT_S)

    def transcribe(clip: Clip) -> str:
        with open(clip.path, "rb") as audio:
            return client.audio.transcriptions.create(model="whisper-1", file=audio).text

    return transcribe


def grpc_transcriber(url: str) -> Transcribe:
    import tritonclient.grpc as grpcclient

    local = threading.local()

    def transcribe(clip: Clip) -> str:
        if not hasattr(local, "client"):
            local.client = grpcclient.InferenceServerClient(url)
        client = local.client
        results: queue.Queue[Any] = queue.Queue()
        audio = grpcclient.InferInput(contract.AUDIO, [1], "BYTES")
        audio.set_data_from_numpy(np.array([Path(clip.path).read_bytes()], dtype=object))
        client.start_stream(callback=lambda result, error: results.put(error if error is not None else result))
        try:
            client.async_stream_infer(contract.ENTRY_MODEL, [audio])
            while True:
                item = results.get(timeout=REQUEST_TIMEOUT_S)
                if isinstance(item, Exception):
                    raise item
                event = json.loads(item.as_numpy(contract.EVENT)[0])
                if event["type"] == "done":
                    return str(event["text"])
        finally:
            client.stop_stream()

    return transcribe


def _engine_counts(url: str) -> tuple[int, int]:
    """Windows decoded and engine executions so far (Triton's statistics of the engine model)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        stats = client.get_inference_statistics(engine_model_name(MODEL)).model_stats[0]
        return int(stats.inference_count), int(stats.execution_count)
    finally:
        client.close()


def _run_system(name: str, transcribe: Transcribe, stack: Stack, workload: Workload,
                memory: RssSampler) -> list[PhaseResult]:
    transcribe(workload.jfk)  # warm-up, untimed
    memory.take_peak()
    phases = []
    for phase in workload.phases:
        before, cpu = _engine_counts(stack.grpc_url), tree_cpu_seconds(stack.process.pid)
        wall, records = run_phase(transcribe, phase)
        after, cpu = _engine_counts(stack.grpc_url), tree_cpu_seconds(stack.process.pid) - cpu
        executions = after[1] - before[1]
        batch = (after[0] - before[0]) / executions if executions else None
        phases.append(PhaseResult(phase.name, phase.concurrency, wall, records, memory.take_peak(), batch, cpu))
        print(f"  {name}: {phase.name} c={phase.concurrency}: {wall:.1f} s", file=sys.stderr, flush=True)
    return phases


def run_ours(workload: Workload, threads: int, work_dir: Path, transports: list[str]) -> list[SystemRun]:
    """One serve process for both transports (HTTP first, then gRPC); its tree's memory is sampled."""
    stack = launch_stack(threads, work_dir)
    settings = {"model": MODEL, "compute_type": COMPUTE_TYPE, "cpu_threads": str(threads),
                "beam_size": str(BEAM_SIZE)}
    runs: list[tuple[str, list[PhaseResult]]] = []
    try:
        with RssSampler(stack.process.pid) as memory:
            wait_ready(stack)
            print(f"  ours: ready in {stack.ready_s:.1f} s", file=sys.stderr, flush=True)
            for transport in transports:
                name = f"ours {'HTTP' if transport == 'http' else 'gRPC'}"
                transcribe = http_transcriber(stack.base_url) if transport == "http" else grpc_transcriber(
                    stack.grpc_url)
                runs.append((name, _run_system(name, transcribe, stack, workload, memory)))
    except Exception:
        print(stack.log_tail(), file=sys.stderr)
        raise
    finally:
        stop_stack(stack)
    return [SystemRun(name, stack.ready_s, phases, settings, memory.overall_peak) for name, phases in runs]
