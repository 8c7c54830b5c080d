"""Sending one phase's clips from N client threads and recording what came back."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

from bench.workload import Clip, Phase

Transcribe = Callable[[Clip], str]


class RequestRecord(msgspec.Struct, frozen=True):
    clip: str
    audio_seconds: float
    reference: str
    latency_s: float  # submission to the full transcript
    text: str = ""
    error: str | None = None


class PhaseResult(msgspec.Struct, frozen=True):
    phase: str
    concurrency: int
    wall_s: float  # first submission to last answer
    requests: list[RequestRecord]
    peak_rss_bytes: int = 0
    # Windows per engine execution during the phase (our stack only: Triton's statistics).
    engine_batch: float | None = None
    cpu_s: float | None = None  # CPU seconds of the system's process tree during the phase
    profile: dict[str, Any] | None = None  # ours: seconds per stage of the phase's (first) request


class SystemRun(msgspec.Struct, frozen=True):
    system: str
    ready_s: float  # process start to ready for requests
    phases: list[PhaseResult]
    settings: dict[str, str] = msgspec.field(default_factory=dict)
    peak_rss_bytes: int = 0  # over the process tree's whole life, start-up included


def run_phase(transcribe: Transcribe, phase: Phase) -> tuple[float, list[RequestRecord]]:
    """`phase.clips` in order, taken by `phase.concurrency` threads; returns wall time and records in clip order.

    A failed request is recorded with its error; the others go on.
    """
    records: list[RequestRecord | None] = [None] * len(phase.clips)
    lock = threading.Lock()
    next_index = 0

    def client() -> None:
        nonlocal next_index
        while True:
            with lock:
                index = next_index
                next_index += 1
            if index >= len(phase.clips):
                return
            clip = phase.clips[index]
            started = time.perf_counter()
            try:
                text, error = transcribe(clip), None
            except Exception as exc:  # recorded and reported, the run goes on
                text, error = "", f"{type(exc).__name__}: {exc}"[:500]
            records[index] = RequestRecord(clip.name, clip.duration, clip.reference,
                                           time.perf_counter() - started, text, error)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(max(1, phase.concurrency))]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return wall, [record for record in records if record is not None]
