"""Shared fixtures: real `make serve` processes (Triton + frontend) on free ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent


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

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited with {self.process.returncode}:\n{self.log()[-5000:]}")
            try:
                if httpx.get(f"{self.base_url}/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"serve was not ready within {timeout} s:\n{self.log()[-5000:]}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # what Ctrl-C does
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_served(tmp: Path, model: str, **env: str) -> Served:
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    log_path = tmp / f"serve-{http_port}.log"
    environment = {
        **os.environ,
        "WHISPER_MODEL": model,
        "FRONTEND_PORT": str(http_port),
        "TRITON_GRPC_PORT": str(grpc_port),
        "TRITON_METRICS_PORT": str(metrics_port),
        "FRONTEND_DATA_DIR": str(tmp / "data"),
        **env,
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "frontend.serve"], cwd=REPO, env=environment,
                                   stdout=log, stderr=subprocess.STDOUT)
    served = Served(process, http_port, grpc_port, log_path, metrics_port)
    try:
        served.wait_ready()
    except BaseException:
        served.stop()
        raise
    return served


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The English tiny.en model: fast, for most end-to-end tests."""
    instance = start_served(tmp_path_factory.mktemp("serve-tiny"), "tiny.en")
    yield instance
    instance.stop()


@pytest.fixture(scope="session")
def served_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The multilingual base model (the `make serve` default): translation, language detection."""
    instance = start_served(tmp_path_factory.mktemp("serve-base"), "base")
    yield instance
    instance.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    """A PostgreSQL server for the session (TEST_DB_URL, or one started here), or None."""
    from tests.postgres import postgres_server

    with postgres_server(free_port()) as url:
        yield url


@contextmanager
def run_frontend(served: Served, **settings: Any) -> Iterator[str]:
    """A second frontend with its own settings, in this process, on the served Triton."""
    import uvicorn

    from frontend.app import create_app
    from frontend.settings import FrontendSettings

    port = free_port()
    settings.setdefault("data_dir", tempfile.mkdtemp(prefix="frontend-data-"))
    app = create_app(FrontendSettings(triton_url=served.grpc_url, models=["tiny.en"], port=port, **settings))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
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
