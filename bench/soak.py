"""`python -m bench.soak`: mixed load and faults against the real stack for a while; prints what it saw.

    python -m bench.soak --minutes 5 [--clients 8] [--faults] [--model tiny.en]
    python -m bench.soak --quick          # 1 minute, 4 clients, faults every 12 s: does everything work?
    python -m bench.soak --minutes 15 --clients 16 --leave 0.7   # clients that leave: hunts model crashes

Starts `python -m frontend.serve` (Triton under its Supervisor, and the frontend) on free ports, with a
small admission limit so that overload happens. N clients loop over synchronous transcriptions,
streamed ones (SSE) and tasks (`/speech-to-text`) of 2-11 s clips. With `--faults`, every
`--fault-every` seconds one fault, in turn: Triton SIGKILLed, the engine model's process SIGKILLed,
slow clients (uploads that trickle in, a stream nobody reads), a burst of 100 requests, the entry
model's process SIGKILLed. With `--leave P`, a share P of the synchronous and streamed requests is
made by a client that gives up after 0.2-2.5 s (it closes the connection: the frontend cancels the
request in Triton), the load that set off crashes of the entry model's process.

Every request's outcome is counted: ok, 4xx, 503 (or 429: come back later, with Retry-After),
other (500, a dropped connection, an SSE error other than overload), left (the client gave up) and
hung (no answer within `--request-timeout`). At the end every accepted task must have ended, and every
completed one must hold its transcript. A process that died of a fatal signal nobody sent (Triton's
"Signal (11) received", a model's "Fatal Python error") is a crash. Prints the table and exits 1 if a
request hung, a task was lost or completed without its result, or a process crashed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import functools
import io
import itertools
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import wave
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from harness.assets import jfk_wav
from harness.clients import connect, multipart, status_of, trickle
from harness.procfs import in_flight, open_fds, rss_bytes, stub_pids, tree_rss
from harness.stack import Served, start_served
from whisper_triton.repository import engine_model_name

MIB = 1024 * 1024
OUTCOMES = ("ok", "4xx", "503", "other", "left", "hung")
# What a process that died of a fatal signal writes to the log: tritonserver, and a model (faulthandler).
CRASH_MARKS = ("Signal (11) received", "Signal (6) received", "Fatal Python error")


@dataclass
class Soak:
    served: Served
    model: str
    request_timeout: float
    leave: float = 0.0  # share of sync and streamed requests whose client gives up after 0.2-2.5 s
    records: list[tuple[str, str, float]] = field(default_factory=list)  # (kind, outcome, seconds)
    accepted: list[str] = field(default_factory=list)  # task ids
    faults: list[tuple[float, str, str]] = field(default_factory=list)  # (at, fault, what it gave)
    triton_pids: set[int] = field(default_factory=set)
    task_seconds: list[float] = field(default_factory=list)  # submission to completion, of completed tasks
    frontend_rss: list[int] = field(default_factory=list)  # every 5 s during the run
    triton_rss: list[int] = field(default_factory=list)  # of tritonserver and its model processes, every 5 s

    def record(self, kind: str, outcome: str, seconds: float) -> None:
        self.records.append((kind, outcome, seconds))


def clips() -> list[bytes]:
    """The JFK clip and its first 2, 4 and 7 seconds."""
    with wave.open(str(jfk_wav())) as source:
        params, frames = source.getparams(), source.readframes(source.getnframes())
    cut = []
    for seconds in (2, 4, 7, 11):
        out = io.BytesIO()
        with wave.open(out, "wb") as target:
            target.setparams(params)
            target.writeframes(frames[: seconds * params.framerate * params.sampwidth])
        cut.append(out.getvalue())
    return cut


def outcome_of(status: int) -> str:
    if status == 200:
        return "ok"
    if status in (429, 503):
        return "503"
    return "4xx" if 400 <= status < 500 else "other"


async def timed(soak: Soak, kind: str, call: Callable[[], Awaitable[str]], patience: float | None = None) -> str:
    """The call's outcome, recorded; a client with `patience` gives up after that many seconds ("left")."""
    leaves = patience is not None and patience < soak.request_timeout
    started = time.monotonic()
    try:
        outcome = await asyncio.wait_for(call(), patience if leaves else soak.request_timeout)
    except TimeoutError:
        outcome = "left" if leaves else "hung"
    except httpx.HTTPError:
        outcome = "other"
    soak.record(kind, outcome, time.monotonic() - started)
    return outcome


async def sync_request(client: httpx.AsyncClient, audio: bytes) -> str:
    response = await client.post("/v1/audio/transcriptions", data={"model": "whisper-1"},
                                 files={"file": ("a.wav", audio)})
    if response.status_code == 200 and not response.json().get("text"):
        return "other"
    return outcome_of(response.status_code)


async def stream_request(client: httpx.AsyncClient, audio: bytes) -> str:
    async with client.stream("POST", "/v1/audio/transcriptions", data={"model": "whisper-1", "stream": "true"},
                             files={"file": ("a.wav", audio)}) as response:
        if response.status_code != 200:
            await response.aread()
            return outcome_of(response.status_code)
        last: dict[str, object] = {}
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                last = json.loads(line[6:])
    if last.get("type") == "transcript.text.done":
        return "ok"
    error = last.get("error")
    return "503" if isinstance(error, dict) and error.get("code") == "server_overloaded" else "other"


async def task_request(client: httpx.AsyncClient, audio: bytes, soak: Soak) -> str:
    response = await client.post("/speech-to-text", files={"file": ("a.wav", audio)})
    if response.status_code == 200:
        soak.accepted.append(response.json()["identifier"])
    return outcome_of(response.status_code)


async def client_loop(soak: Soak, deadline: float, seed: int) -> None:
    rng, audio = random.Random(seed), clips()
    limits = httpx.Limits(max_connections=2)
    async with httpx.AsyncClient(base_url=soak.served.base_url, timeout=None, limits=limits) as client:
        while time.monotonic() < deadline:
            kind = rng.choices(("sync", "stream", "task"), weights=(5, 3, 2))[0]
            clip = rng.choice(audio)
            patience = rng.uniform(0.2, 2.5) if kind != "task" and rng.random() < soak.leave else None
            if kind == "sync":
                outcome = await timed(soak, kind, functools.partial(sync_request, client, clip), patience)
            elif kind == "stream":
                outcome = await timed(soak, kind, functools.partial(stream_request, client, clip), patience)
            else:
                outcome = await timed(soak, kind, functools.partial(task_request, client, clip, soak))
            # Told to come back later, a client waits a little (less than Retry-After, to keep the pressure on).
            await asyncio.sleep(rng.uniform(0.5, 1.5) if outcome == "503" else rng.uniform(0.0, 0.3))


async def burst(soak: Soak, count: int = 100) -> str:
    audio = clips()[0]
    async with httpx.AsyncClient(base_url=soak.served.base_url, timeout=None,
                                 limits=httpx.Limits(max_connections=count)) as client:
        call = functools.partial(sync_request, client, audio)
        got = Counter(await asyncio.gather(*(timed(soak, "burst", call) for _ in range(count))))
    return ", ".join(f"{k} {v}" for k, v in sorted(got.items()))


async def recovery(soak: Soak, limit_s: float = 180) -> str:
    """Seconds from a fault to the next transcription that succeeds (retried while the answer is 503)."""
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=soak.served.base_url, timeout=60) as client:
        while time.monotonic() - started < limit_s:
            try:
                if await sync_request(client, clips()[0]) == "ok":
                    return f"transcribing again after {time.monotonic() - started:.1f} s"
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
    return f"not transcribing {limit_s:.0f} s later"


def slow_clients(soak: Soak) -> str:
    """Four uploads that trickle in and a stream nobody reads: the server must cut them all."""
    port = soak.served.http_port
    head, body = multipart(clips()[3])
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: trickle(port, head, body), range(4)))
    cut = sum(status_of(answer) == 408 and seconds < 60 for answer, seconds in answers)
    stream_head, stream_body = multipart(clips()[3], stream="true")
    reader = connect(port, receive_buffer=4096)
    try:
        reader.sendall(stream_head + stream_body)
        time.sleep(5)
    finally:
        reader.close()
    return f"{cut}/4 trickling uploads cut with 408; a stream nobody read"


def kill(pids: list[int], what: str) -> str:
    if not pids:
        return f"no {what} process to kill (restarting)"
    os.kill(pids[0], signal.SIGKILL)
    return f"SIGKILL {what} (pid {pids[0]})"


async def fault_loop(soak: Soak, deadline: float, every: float) -> None:
    served, started = soak.served, time.monotonic()
    engine = engine_model_name(soak.model)
    cycle = itertools.cycle(("triton", "engine", "slow clients", "burst", "entry model"))
    for k in itertools.count(1):  # at every, 2 every, ... (or right after the previous fault, if it took longer)
        if started + k * every >= deadline - 5:
            return
        await asyncio.sleep(max(0.0, started + k * every - time.monotonic()))
        fault, at = next(cycle), time.monotonic() - started
        if fault == "triton":
            what = kill(served.triton_pids(), "tritonserver") + "; " + await recovery(soak)
        elif fault == "engine":
            what = kill(stub_pids(served.grpc_port, engine), engine) + "; " + await recovery(soak)
        elif fault == "entry model":
            what = kill(stub_pids(served.grpc_port, "whisper"), "the entry model") + "; " + await recovery(soak)
        elif fault == "slow clients":
            what = await asyncio.to_thread(slow_clients, soak)
        else:
            what = await burst(soak)
        soak.faults.append((at, fault, what))
        print(f"  {at:6.0f} s  {fault}: {what}", flush=True)


async def watch(soak: Soak, deadline: float) -> None:
    """Notes every tritonserver process seen (restarts) and samples the frontend's memory every 5 s."""
    next_sample = 0.0
    while time.monotonic() < deadline:
        soak.triton_pids.update(soak.served.triton_pids())
        if time.monotonic() >= next_sample:
            soak.frontend_rss.append(rss_bytes(soak.served.process.pid))
            soak.triton_rss.append(triton_state(soak.served)[0])
            next_sample = time.monotonic() + 5
        await asyncio.sleep(0.5)


def triton_state(served: Served) -> tuple[int, int]:
    """RSS of tritonserver and its model processes, and tritonserver's open files."""
    pids = served.triton_pids()
    if not pids:
        return 0, 0
    return tree_rss(pids[0]), open_fds(pids[0])


def settle_tasks(soak: Soak, timeout: float) -> tuple[Counter[str], int]:
    """Waits for the accepted tasks to end; their final states, and completed ones without a transcript.
    Keeps the seconds from submission to completion in `soak.task_seconds`."""
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    empty = 0
    with httpx.Client(base_url=soak.served.base_url, timeout=30) as client:
        while True:
            empty = 0
            for task_id in soak.accepted:
                if states.get(task_id) in ("completed", "failed", "cancelled"):
                    continue
                response = client.get(f"/task/{task_id}")
                if response.status_code == 404:
                    states[task_id] = "lost"
                    continue
                task = response.json()
                states[task_id] = task["status"]
                if task["status"] == "completed" and not (task.get("result") or {}).get("text"):
                    empty += 1
                if task["status"] == "completed":
                    meta = task["metadata"]
                    soak.task_seconds.append((datetime.datetime.fromisoformat(meta["end_time"])
                                              - datetime.datetime.fromisoformat(meta["created_at"])).total_seconds())
            if all(s in ("completed", "failed", "cancelled", "lost") for s in states.values()) \
                    or time.monotonic() > deadline:
                break
            time.sleep(1)
    final = Counter("lost" if s not in ("completed", "failed", "cancelled") else s for s in states.values())
    return final, empty


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def report(soak: Soak, minutes: float, clients: int, tasks: Counter[str], empty: int,
           start: dict[str, int], end: dict[str, int], log: str) -> str:
    """The tables; `log` is the served stack's log at the end (reloads and crashes are counted in it)."""
    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    latencies: dict[str, list[float]] = defaultdict(list)
    for kind, outcome, seconds in soak.records:
        by_kind[kind][outcome] += 1
        if outcome == "ok":
            latencies[kind].append(seconds)
    lines = [f"Soak: {minutes:g} min, {clients} clients, {len(soak.faults)} faults, model {soak.model}",
             "",
             "| requests | " + " | ".join(OUTCOMES) + " | total | ok p50 s | ok p95 s |",
             "|---|" + "---:|" * (len(OUTCOMES) + 3)]
    kinds = [k for k in ("sync", "stream", "burst", "task") if k in by_kind]
    latencies["task"] = soak.task_seconds  # for a task: from submission to its end, not the 200 of the submission
    for kind in [*kinds, "all"]:
        counts = sum(by_kind.values(), Counter()) if kind == "all" else by_kind[kind]
        times = [t for k in kinds if k != "task" for t in latencies[k]] if kind == "all" else latencies[kind]
        lines.append(f"| {kind} | " + " | ".join(str(counts[o]) for o in OUTCOMES)
                     + f" | {sum(counts.values())} | {percentile(times, 50):.2f} | {percentile(times, 95):.2f} |")
    lines.append("(latency of ok answers: transcript complete; for tasks, submission to completion; "
                 "`all` leaves tasks out)")
    restarts = max(0, len(soak.triton_pids) - 1)
    reloads = log.count("loading the model again")
    accepted = len(soak.accepted)
    lines += ["",
              f"Triton restarts observed: {restarts}; model processes reloaded: {reloads}; "
              f"crashes (fatal signals nobody sent): {crashes(log)}",
              f"Tasks accepted: {accepted}; completed {tasks['completed']}, failed {tasks['failed']}, "
              f"lost {tasks['lost']}; completed without a transcript: {empty}",
              "",
              "| process | RSS start MiB | RSS end MiB | open fds start | open fds end |",
              "|---|---:|---:|---:|---:|",
              f"| frontend (serve) | {start['rss'] / MIB:.0f} | {end['rss'] / MIB:.0f} | {start['fds']} | "
              f"{end['fds']} |",
              f"| Triton + model processes | {start['triton_rss'] / MIB:.0f} | {end['triton_rss'] / MIB:.0f} | "
              f"{start['triton_fds']} | {end['triton_fds']} |"]
    for name, samples in (("Frontend", soak.frontend_rss), ("Triton + model processes", soak.triton_rss)):
        samples = [value for value in samples if value]  # (0 while Triton restarts)
        if samples:
            quarters = [samples[min(len(samples) - 1, i * len(samples) // 4)] for i in range(1, 4)] + [samples[-1]]
            lines.append(f"{name} RSS at each quarter of the run: " + ", ".join(f"{v / MIB:.0f}" for v in quarters)
                         + f" MiB (peak {max(samples) / MIB:.0f} MiB)")
    if soak.faults:
        lines += ["", "Faults: " + "; ".join(f"{at:.0f} s {fault} ({what})" for at, fault, what in soak.faults)]
    return "\n".join(lines)


def crashes(log: str) -> int:
    """Processes that died of a fatal signal, from their last words in the log (the faults send SIGKILL)."""
    return sum(log.count(mark) for mark in CRASH_MARKS)


def state(served: Served) -> dict[str, int]:
    triton_rss, triton_fds = triton_state(served)
    return {"rss": rss_bytes(served.process.pid), "fds": open_fds(served.process.pid), "triton_rss": triton_rss,
            "triton_fds": triton_fds}


async def run(soak: Soak, minutes: float, clients: int, faults: bool, fault_every: float) -> None:
    deadline = time.monotonic() + minutes * 60
    jobs = [client_loop(soak, deadline, seed) for seed in range(clients)]
    jobs.append(watch(soak, deadline))
    if faults:
        jobs.append(fault_loop(soak, deadline, fault_every))
    await asyncio.gather(*jobs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--faults", action="store_true",
                        help="inject faults: Triton and model processes killed, slow clients, bursts")
    parser.add_argument("--fault-every", type=float, default=None,
                        help="seconds between faults (default: a sixth of the run, 10 to 40 s)")
    parser.add_argument("--request-timeout", type=float, default=180.0,
                        help="a request without an answer by then counts as hung")
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--leave", type=float, default=0.0,
                        help="share of sync and streamed requests whose client gives up after 0.2-2.5 s")
    parser.add_argument("--quick", action="store_true", help="1 minute, 4 clients, faults every 12 s")
    args = parser.parse_args(argv)
    if args.quick:
        args.minutes, args.clients, args.faults, args.fault_every = 1.0, 4, True, 12.0
    if args.fault_every is None:
        args.fault_every = max(10.0, min(40.0, args.minutes * 60 / 6))
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        served = start_served(Path(tmp), args.model,
                              FRONTEND_MAX_CONCURRENT_REQUESTS=str(max(2, args.clients // 2)),
                              MAX_TASK_QUEUE_SIZE="20", FRONTEND_TASK_WORKERS="2", FRONTEND_TASK_LEASE_S="5",
                              FRONTEND_BODY_TIMEOUT_S="5", FRONTEND_SEND_TIMEOUT_S="10", TMPDIR=tmp)
        try:
            soak = Soak(served, args.model, args.request_timeout, leave=args.leave)
            asyncio.run(burst(soak, 20))  # warm-up, not counted
            soak.records.clear()
            start = state(served)
            faults = f"every {args.fault_every:g} s" if args.faults else "off"
            print(f"soak: {args.minutes:g} min, {args.clients} clients, faults {faults}, "
                  f"{args.leave:.0%} of clients leave", flush=True)
            asyncio.run(run(soak, args.minutes, args.clients, args.faults, args.fault_every))
            with contextlib.suppress(RuntimeError):  # not ready again: the hung requests and lost tasks tell
                served.wait_ready(300)
            tasks, empty = settle_tasks(soak, timeout=300)
            deadline = time.monotonic() + 30
            while in_flight(served.base_url) and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(6)  # idle keep-alive connections close after 5 s
            end = state(served)
            print()
            log = served.log()
            crashed = crashes(log)
            print(report(soak, args.minutes, args.clients, tasks, empty, start, end, log))
        finally:
            served.stop()
    hung = sum(outcome == "hung" for _, outcome, _ in soak.records)
    return 1 if hung or tasks["lost"] or empty or crashed else 0


if __name__ == "__main__":
    sys.exit(main())
