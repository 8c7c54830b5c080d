"""Our stack, `python -m frontend.serve` (Triton + frontend), driven over HTTP and over Triton gRPC.

HTTP: the openai SDK's `audio.transcriptions.create` (json or verbose_json), one shared client.
gRPC: tritonclient's streaming call to the decoupled entry model `whisper`, one client per thread,
as any gRPC user would; the result is the final `done` event (with PROFILE, its seconds per stage).
Every answer format is decoded the same way (with timestamp tokens), so the gRPC rows match the HTTP ones.
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np

from bench.baselines import COMPUTE_TYPE
from bench.load import PhaseResult, SystemRun, Transcribe, run_phase
from bench.rss import RssSampler, tree_cpu_seconds
from bench.workload import Clip, Phase
from whisper_triton import contract

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


class OurRow(msgspec.Struct, frozen=True):
    system: str  # the row's label
    transport: str  # http | grpc
    response_format: str  # json | verbose_json (HTTP); gRPC rows get the whole `done` event
    beam: int
    phase: Phase
    profile: bool = False  # gRPC: keep the stage profile of the phase's first request


def launch_stack(threads: int, work_dir: Path, beam: int = 1) -> Stack:
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
        "WHISPER_BEAM_SIZE": str(beam),
        "FRONTEND_PORT": str(http_port),
        "TRITON_GRPC_PORT": str(grpc_port),
        "TRITON_METRICS_PORT": str(metrics_port),
        "FRONTEND_DATA_DIR": tempfile.mkdtemp(prefix="data-", dir=work_dir),
    })
    log_path = work_dir / f"serve-beam{beam}.log"
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


def http_transcriber(base_url: str, response_format: str) -> Transcribe:
    from openai import OpenAI

    client = OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=REQUEST_TIMEOUT_S)

    def transcribe(clip: Clip) -> str:
        with open(clip.path, "rb") as audio:
            answer = client.audio.transcriptions.create(model="whisper-1", file=audio,
                                                        response_format=response_format)  # type: ignore[call-overload]
            return str(answer.text)

    return transcribe


class GrpcTranscriber:
    """Transcribe over gRPC; with `profile`, the done events' profiles are kept (in request order)."""

    def __init__(self, url: str, profile: bool = False, vad: bool | None = None) -> None:
        self.url, self.profile, self.vad = url, profile, vad
        self.profiles: list[dict[str, Any]] = []
        self._local = threading.local()

    def __call__(self, clip: Clip) -> str:
        import tritonclient.grpc as grpcclient

        if not hasattr(self._local, "client"):
            self._local.client = grpcclient.InferenceServerClient(self.url)
        client = self._local.client
        results: queue.Queue[Any] = queue.Queue()
        audio = grpcclient.InferInput(contract.AUDIO, [1], "BYTES")
        audio.set_data_from_numpy(np.array([Path(clip.path).read_bytes()], dtype=object))
        inputs = [audio]
        if self.profile:
            flag = grpcclient.InferInput(contract.PROFILE, [1], "BOOL")
            flag.set_data_from_numpy(np.array([True], dtype=bool))
            inputs.append(flag)
        if self.vad is not None:
            vad = grpcclient.InferInput(contract.VAD, [1], "BOOL")
            vad.set_data_from_numpy(np.array([self.vad], dtype=bool))
            inputs.append(vad)
        client.start_stream(callback=lambda result, error: results.put(error if error is not None else result))
        try:
            client.async_stream_infer(contract.ENTRY_MODEL, inputs)
            while True:
                item = results.get(timeout=REQUEST_TIMEOUT_S)
                if isinstance(item, Exception):
                    raise item
                event = json.loads(item.as_numpy(contract.EVENT)[0])
                if event["type"] == "done":
                    if "profile" in event:
                        self.profiles.append(event["profile"])
                    return str(event["text"])
        finally:
            client.stop_stream()


def run_row(stack: Stack, row: OurRow, warm: Clip, memory: RssSampler) -> SystemRun:
    grpc = GrpcTranscriber(stack.grpc_url, row.profile) if row.transport == "grpc" else None
    transcribe = grpc or http_transcriber(stack.base_url, row.response_format)
    transcribe(warm)  # untimed
    if grpc is not None:
        grpc.profiles.clear()
    memory.take_peak()
    cpu = tree_cpu_seconds(stack.process.pid)
    wall, records = run_phase(transcribe, row.phase)
    cpu = tree_cpu_seconds(stack.process.pid) - cpu
    profile = grpc.profiles[0] if grpc is not None and grpc.profiles else None
    batch = float(profile["mean_batch"]) if profile else None
    phase = PhaseResult(row.phase.name, row.phase.concurrency, wall, records, memory.take_peak(), batch, cpu, profile)
    settings = {"model": MODEL, "compute_type": COMPUTE_TYPE, "beam_size": str(row.beam),
                "transport": row.transport, "response_format": row.response_format}
    print(f"  {row.system} {row.phase.name}: {wall:.1f} s", file=sys.stderr, flush=True)
    return SystemRun(row.system, stack.ready_s, [phase], settings, memory.overall_peak)


@contextlib.contextmanager
def serving(threads: int, work_dir: Path, beam: int) -> Iterator[tuple[Stack, RssSampler]]:
    """Our stack at one beam size (the server's setting), ready, with its tree's memory sampled."""
    stack = launch_stack(threads, work_dir, beam)
    try:
        with RssSampler(stack.process.pid) as memory:
            wait_ready(stack)
            print(f"  ours (beam {beam}): ready in {stack.ready_s:.1f} s", file=sys.stderr, flush=True)
            yield stack, memory
    except Exception:
        print(stack.log_tail(), file=sys.stderr)
        raise
    finally:
        stop_stack(stack)
