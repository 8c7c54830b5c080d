"""Where a bench command's run goes: bench/results/<date>-<host>-<kind>.json, with the machine it ran on."""

from __future__ import annotations

import datetime
import os
import platform
import socket
import sys
from pathlib import Path
from typing import Any

import msgspec

RESULTS = Path(__file__).resolve().parent / "results"


def save_run(kind: str, body: dict[str, Any], path: Path | None = None, **meta: Any) -> Path:
    """Writes `body` with a "meta" entry (date, host, CPU, cores, the command line, and `meta`); its path."""
    now = datetime.datetime.now()
    path = path or RESULTS / f"{now.strftime('%Y-%m-%d-%H%M')}-{socket.gethostname()}-{kind}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join([f"python -m bench.{kind}", *sys.argv[1:]])
    header = {"date": now.isoformat(timespec="seconds"), "host": socket.gethostname(),
              "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), **meta, "command": command}
    path.write_bytes(msgspec.json.format(msgspec.json.encode({"meta": header, **body})))
    return path
