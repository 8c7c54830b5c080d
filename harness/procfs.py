"""What a served process holds, read from /proc (no psutil) and /metrics: resident memory and CPU time of a
process tree and a sampler of its peak, open files and sockets, Triton's model processes, in-flight requests.

The tree sums count pages shared between processes of the tree (libraries, Triton's shared-memory
regions between tritonserver and its Python stubs) once per process: an upper bound.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import httpx

PROC = Path("/proc")


def parent_pid(stat: str) -> int:
    """The ppid field of /proc/<pid>/stat; the command name may hold spaces and parentheses."""
    return int(stat.rsplit(")", 1)[1].split()[1])


def cpu_ticks(stat: str) -> int:
    """utime + stime of the process and cutime + cstime of its waited-for children, in clock ticks."""
    fields = stat.rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15])  # fields 14-17 of proc(5)


def vm_rss(status: str) -> int:
    """VmRSS of /proc/<pid>/status in bytes (0 for kernel threads and zombies, which have none)."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            fields = line.split()
            return int(fields[1]) * 1024
    return 0


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None  # the process ended while we looked


def rss_bytes(pid: int, proc: Path = PROC) -> int:
    """Resident memory of one process in bytes (0 once it has ended)."""
    status = _read(proc / str(pid) / "status")
    return 0 if status is None else vm_rss(status)


def descendants(pid: int, proc: Path = PROC) -> list[int]:
    """`pid` and every process below it."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        stat = _read(entry / "stat")
        if stat is not None:
            children[parent_pid(stat)].append(int(entry.name))
    tree, stack = [], [pid]
    while stack:
        current = stack.pop()
        tree.append(current)
        stack.extend(children.get(current, []))
    return tree


def tree_rss(pid: int, proc: Path = PROC) -> int:
    """Sum of VmRSS over `pid` and its descendants, in bytes."""
    return sum(rss_bytes(member, proc) for member in descendants(pid, proc))


def tree_cpu_seconds(pid: int, proc: Path = PROC) -> float:
    """CPU seconds used so far by `pid` and its descendants (and by their children that have ended)."""
    ticks = 0
    for member in descendants(pid, proc):
        stat = _read(proc / str(member) / "stat")
        if stat is not None:
            ticks += cpu_ticks(stat)
    return ticks / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """Samples tree_rss(pid) every `interval` seconds in a thread; `take_peak()` reads and resets the peak."""

    def __init__(self, pid: int | None = None, interval: float = 0.2, proc: Path = PROC) -> None:
        self.pid = os.getpid() if pid is None else pid
        self.interval = interval
        self.proc = proc
        self._peak = 0
        self._overall = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="rss-sampler")

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> int:
        value = tree_rss(self.pid, self.proc)
        with self._lock:
            self._peak = max(self._peak, value)
            self._overall = max(self._overall, value)
        return value

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def take_peak(self) -> int:
        """The peak since the last call (sampling once more now, so a short phase is not missed)."""
        now = self.sample()
        with self._lock:
            peak, self._peak = self._peak, now  # the next phase starts from what is resident now
        return peak

    @property
    def overall_peak(self) -> int:
        with self._lock:
            return self._overall


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
