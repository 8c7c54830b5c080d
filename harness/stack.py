"""Our stack on free ports, as the tests and the benchmarks run it: `python -m frontend.serve` (the frontend and
its supervised tritonserver) in a process of its own, or a second frontend in this process on a served Triton."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
# What a clean environment leaves out of the caller's: the settings of another frontend or Triton, and keys that
# would make every request need authentication. Other WHISPER_* variables pass through, to try settings.
FOREIGN_SETTINGS = ("FRONTEND_", "TRITON_")
FOREIGN_NAMES = ("WHISPER_MODELS", "API_KEYS", "ADMIN_API_KEY")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    """One `python -m frontend.serve` process: the frontend and its supervised tritonserver."""

    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    log_path: Path
    metrics_port: int = 0
    data_dir: Path = Path()  # FRONTEND_DATA_DIR: the task database, uploads in flight
    log_dir: Path = Path()  # LOG_DIR: frontend.log, triton.log (every test stack logs to files too)
    started: float = field(default_factory=time.perf_counter)  # at launch
    ready_s: float = 0.0  # launch to ready, once wait_ready returned

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples on Triton's /metrics whose labels include `labels` (0 if none)."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                head, _, value = line.rpartition(" ")
                if all(f'{key}="{wanted}"' in head for key, wanted in labels.items()):
                    total += float(value)
        return total

    def triton_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-f", f"tritonserver.*--grpc-port={self.grpc_port}"],
                             capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def wait_ready(self, timeout: float = 600) -> None:
        """Returns once /health/ready answers 200 (Triton and the models ready); sets ready_s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited with {self.process.returncode}:\n{self.log()[-5000:]}")
            try:
                if httpx.get(f"{self.base_url}/health/ready", timeout=2).status_code == 200:
                    self.ready_s = time.perf_counter() - self.started
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"serve was not ready within {timeout:.0f} s:\n{self.log()[-5000:]}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # what Ctrl-C does: frontend, then Triton
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def launch_served(tmp: Path, model: str, env: Mapping[str, str] | None = None, clean: bool = False) -> Served:
    """Starts serve with `model` and `env` on free ports, its data in a new folder under `tmp` (or the
    `FRONTEND_DATA_DIR` of `env`), without waiting for it to be ready. The caller's environment passes
    through (`clean`: without another frontend's or Triton's settings)."""
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    log_path = tmp / f"serve-{http_port}.log"
    given = (env or {}).get("FRONTEND_DATA_DIR")  # a restart on the data of an earlier launch
    data_dir = Path(given) if given else Path(tempfile.mkdtemp(prefix="data-", dir=tmp))
    log_dir = Path((env or {}).get("LOG_DIR") or tempfile.mkdtemp(prefix="logs-", dir=tmp))
    environment = {key: value for key, value in os.environ.items()
                   if not clean or not (key.startswith(FOREIGN_SETTINGS) or key in FOREIGN_NAMES)}
    environment.update({
        "WHISPER_MODEL": model,
        "FRONTEND_PORT": str(http_port),
        "TRITON_GRPC_PORT": str(grpc_port),
        "TRITON_METRICS_PORT": str(metrics_port),
        "FRONTEND_DATA_DIR": str(data_dir),
        "LOG_DIR": str(log_dir),
        **(env or {}),
    })
    if not {"WHISPER_CACHE_DIR", "WHISPER_MANAGED_DIR"} & set(env or {}):  # fetched models stay with the test's data
        environment["WHISPER_MANAGED_DIR"] = str(data_dir / "managed")
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "frontend.serve"], cwd=REPO, env=environment,
                                   stdout=log, stderr=subprocess.STDOUT)
    return Served(process, http_port, grpc_port, log_path, metrics_port, data_dir, log_dir=log_dir)


def start_served(tmp: Path, model: str, **env: str) -> Served:
    """`launch_served`, ready (stopped again if it does not get ready)."""
    served = launch_served(tmp, model, env)
    try:
        served.wait_ready(300)
    except BaseException:
        served.stop()
        raise
    return served


@contextmanager
def run_frontend(served: Served, **settings: Any) -> Iterator[str]:
    """A second frontend with its own settings, in this process, on the served Triton."""
    import uvicorn

    from frontend.app import create_app
    from frontend.settings import FrontendSettings

    port = free_port()
    settings.setdefault("data_dir", tempfile.mkdtemp(prefix="frontend-data-"))
    app = create_app(FrontendSettings(triton_url=served.grpc_url, models=["tiny.en"], port=port, **settings))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           ws_max_size=24 * 1024 * 1024))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the frontend did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
