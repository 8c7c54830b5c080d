"""What a served process holds, read from /proc and /metrics: memory, open files, Triton's processes."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def open_sockets(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            continue
    return count


def metric(base_url: str, name: str) -> float:
    """One unlabelled sample of the frontend's /metrics (e.g. `whisper_frontend_transcriptions_in_flight`)."""
    for line in httpx.get(f"{base_url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


def in_flight(base_url: str) -> float:
    return metric(base_url, "whisper_frontend_transcriptions_in_flight")


def stub_pids(grpc_port: int, model: str) -> list[int]:
    """The live Python-backend processes of `model` in the Triton serving on `grpc_port`."""
    out = subprocess.run(["pgrep", "-f", f"repository-{grpc_port}/{model}/1/model.py"], capture_output=True,
                         text=True)
    return [int(p) for p in out.stdout.split()]


def eventually(check: Callable[[], bool], timeout: float, every: float = 0.25) -> bool:
    """Whether `check()` became true within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(every)


def steady(read: Callable[[], int], timeout: float = 30, calm_s: float = 2.0) -> int:
    """The value of `read()` once it stopped changing for `calm_s` seconds (or after `timeout`)."""
    deadline = time.monotonic() + timeout
    value, since = read(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < calm_s:
        time.sleep(0.25)
        current = read()
        if current != value:
            value, since = current, time.monotonic()
    return value
