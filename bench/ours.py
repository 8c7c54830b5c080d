"""Our stack, `python -m frontend.serve` (Triton + frontend), driven over HTTP and over Triton gRPC.

HTTP: the openai SDK's `audio.transcriptions.create` (json or verbose_json), one shared client.
gRPC: tritonclient's streaming call to the decoupled entry model `whisper`, one client per thread,
as any gRPC user would; the result is the final `done` event (with PROFILE, its seconds per stage).
Every answer format is decoded the same way (with timestamp tokens), so the gRPC rows match the HTTP ones.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from bench.baselines import COMPUTE_TYPE
from bench.load import PhaseResult, SystemRun, Transcribe, run_phase
from bench.workload import Clip, Phase
from harness.grpc_calls import bool_input, bytes_input, call_entry
from harness.procfs import RssSampler, tree_cpu_seconds
from harness.stack import Served, launch_served
from whisper_triton import contract

MODEL = "base"
REQUEST_TIMEOUT_S = 1800.0


class OurRow(msgspec.Struct, frozen=True):
    system: str  # the row's label
    transport: str  # http | grpc
    response_format: str  # json | verbose_json (HTTP); gRPC rows get the whole `done` event
    beam: int
    phase: Phase
    profile: bool = False  # gRPC: keep the stage profile of the phase's first request


def launch_ours(threads: int, work_dir: Path, beam: int = 1) -> Served:
    """Starts serve with the `base` model on free ports (not waiting: see Served.wait_ready)."""
    settings = {"WHISPER_CPU_THREADS": str(threads), "WHISPER_DEVICE": "cpu", "WHISPER_COMPUTE_TYPE": COMPUTE_TYPE,
                "WHISPER_BEAM_SIZE": str(beam)}
    return launch_served(work_dir, MODEL, settings, clean=True)


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
        inputs = [bytes_input(contract.AUDIO, Path(clip.path).read_bytes())]
        if self.profile:
            inputs.append(bool_input(contract.PROFILE, True))
        if self.vad is not None:
            inputs.append(bool_input(contract.VAD, self.vad))
        *_, done = call_entry(self.url, inputs, REQUEST_TIMEOUT_S, client=self._local.client)
        if isinstance(done, Exception):
            raise done
        if "profile" in done:
            self.profiles.append(done["profile"])
        return str(done["text"])


def run_row(stack: Served, row: OurRow, warm: Clip, memory: RssSampler) -> SystemRun:
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
def serving(threads: int, work_dir: Path, beam: int) -> Iterator[tuple[Served, RssSampler]]:
    """Our stack at one beam size (the server's setting), ready, with its tree's memory sampled."""
    stack = launch_ours(threads, work_dir, beam)
    try:
        with RssSampler(stack.process.pid) as memory:
            stack.wait_ready()
            print(f"  ours (beam {beam}): ready in {stack.ready_s:.1f} s", file=sys.stderr, flush=True)
            yield stack, memory
    except Exception:
        print(stack.log()[-5000:], file=sys.stderr)
        raise
    finally:
        stack.stop()
