"""docker/triton_entrypoint.py with LOG_DIR: tritonserver as a child, its lines on the console unchanged and in
triton.log parsed as `make serve` writes them, its exit status and the runtime's signals passed through.

A small Python script stands in for tritonserver: it prints Triton-style lines (one tagged with a request id,
one on stderr followed by a traceback line), then exits with code 3 or waits for SIGTERM.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from harness.deployment import entrypoint
from whisper_triton.log_files import LogFileSettings

FAKE_TRITON = """
import pathlib, signal, sys, time
print("I1205 08:02:16.123456 42 server.cc:1] Started GRPCInferenceService at 0.0.0.0:8001", flush=True)
print('I1205 08:02:17.000001 42 pb_stub.cc:123] "[request_id=req-7] whisper: transcribe of 1050 bytes"', flush=True)
print('E1205 08:02:18.000001 42 pb_stub.cc:123] "[request_id=req-7] whisper: request failed"', file=sys.stderr,
      flush=True)
print("Traceback (most recent call last):", file=sys.stderr, flush=True)
if sys.argv[1] == "exit":
    sys.exit(3)

def stop(signum, frame):
    print(f"I1205 08:02:19.000001 42 server.cc:2] Signal ({signum}) received.", flush=True)
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)

signal.signal(signal.SIGTERM, stop)
pathlib.Path(sys.argv[2]).write_text("ready")
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    time.sleep(0.05)
sys.exit(9)  # never signalled
"""


@pytest.fixture
def module() -> ModuleType:
    return entrypoint()


@pytest.fixture
def fake_triton(tmp_path: Path) -> list[str]:
    script = tmp_path / "tritonserver.py"
    script.write_text(FAKE_TRITON)
    return [sys.executable, str(script)]


def settings(folder: Path, **changes: Any) -> LogFileSettings:
    return LogFileSettings(dir=str(folder), **changes)


def file_lines(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "triton.log").read_text().splitlines()]


def test_lines_reach_the_console_unchanged_and_triton_log_parsed(module: ModuleType, fake_triton: list[str],
                                                                 tmp_path: Path) -> None:
    out, err = io.BytesIO(), io.BytesIO()
    code = module.run_logged([*fake_triton, "exit"], settings(tmp_path / "logs"), out, err)
    assert code == 3
    assert out.getvalue().decode().splitlines() == [
        "I1205 08:02:16.123456 42 server.cc:1] Started GRPCInferenceService at 0.0.0.0:8001",
        'I1205 08:02:17.000001 42 pb_stub.cc:123] "[request_id=req-7] whisper: transcribe of 1050 bytes"']
    assert err.getvalue().decode().splitlines() == [
        'E1205 08:02:18.000001 42 pb_stub.cc:123] "[request_id=req-7] whisper: request failed"',
        "Traceback (most recent call last):"]
    lines = {line["message"]: line for line in file_lines(tmp_path / "logs")}
    assert len(lines) == 4 and {line["logger"] for line in lines.values()} == {"tritonserver"}
    started = lines["I1205 08:02:16.123456 42 server.cc:1] Started GRPCInferenceService at 0.0.0.0:8001"]
    assert started["level"] == "info" and "request_id" not in started
    tagged = next(line for text, line in lines.items() if "transcribe" in text)
    assert (tagged["level"], tagged["request_id"]) == ("info", "req-7")
    failed = next(line for text, line in lines.items() if "request failed" in text)
    assert (failed["level"], failed["request_id"]) == ("error", "req-7")
    assert (lines["Traceback (most recent call last):"]["level"],  # continues the line before it
            lines["Traceback (most recent call last):"]["request_id"]) == ("error", "req-7")


def test_sigterm_is_forwarded_and_a_signal_death_exits_128_plus_it(module: ModuleType, fake_triton: list[str],
                                                                   tmp_path: Path) -> None:
    ready = tmp_path / "ready"

    def terminate_when_ready() -> None:
        deadline = time.monotonic() + 20
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        if ready.exists():
            os.kill(os.getpid(), signal.SIGTERM)  # what `docker stop` sends the container's first process

    before = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=terminate_when_ready, daemon=True).start()
    out = io.BytesIO()
    code = module.run_logged([*fake_triton, "wait", str(ready)], settings(tmp_path / "logs", format="text"),
                             out, io.BytesIO())
    assert code == 128 + signal.SIGTERM
    assert "Signal (15) received." in out.getvalue().decode()  # the child saw it
    assert "INFO tritonserver: I1205 08:02:19.000001 42 server.cc:2] Signal (15) received." in (
        tmp_path / "logs" / "triton.log").read_text()
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_file_that_cannot_be_written_costs_one_warning_not_the_console(
        module: ModuleType, fake_triton: list[str], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "logs" / "triton.log").mkdir(parents=True)  # opening it fails, whoever runs the test
    out, err = io.BytesIO(), io.BytesIO()
    with caplog.at_level(logging.WARNING, logger="triton_entrypoint"):
        code = module.run_logged([*fake_triton, "exit"], settings(tmp_path / "logs"), out, err)
    assert code == 3
    assert len(out.getvalue().splitlines()) == 2 and len(err.getvalue().splitlines()) == 2  # each line once
    warnings = [r.getMessage() for r in caplog.records if r.name == "triton_entrypoint"]
    assert len(warnings) == 1 and "cannot write" in warnings[0] and "triton.log" in warnings[0]


def test_log_dir_decides_between_exec_and_a_child(module: ModuleType, monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    calls: list[tuple[str, Any]] = []
    monkeypatch.setattr(module, "prepare_engines", lambda environ: None)
    monkeypatch.setattr(module, "serve", lambda environ: ["/opt/tritonserver/bin/tritonserver", "--flag"])
    monkeypatch.setattr(module.os, "execv", lambda path, args: calls.append(("exec", args)))

    def run_logged(command: list[str], files: LogFileSettings) -> int:
        calls.append(("child", files.dir))
        return 7

    monkeypatch.setattr(module, "run_logged", run_logged)
    monkeypatch.delenv("LOG_DIR", raising=False)
    assert module.main(["serve"]) == 0
    monkeypatch.setenv("LOG_DIR", str(tmp_path))
    assert module.main(["serve"]) == 7
    assert calls == [("exec", ["/opt/tritonserver/bin/tritonserver", "--flag"]), ("child", str(tmp_path))]
    monkeypatch.setenv("LOG_FORMAT", "xml")
    assert module.main(["serve"]) == 2  # a bad LOG_* setting fails before Triton starts, naming it
