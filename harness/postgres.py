"""A throwaway PostgreSQL server for tests, started from Debian's binaries when they are there."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _bin_dir() -> Path | None:
    roots = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    return next((r for r in roots if (r / "initdb").exists()), None)


def _as_postgres() -> list[str]:
    """Commands run as the postgres user when we are root (PostgreSQL refuses to run as root)."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


@contextmanager
def postgres_server(port: int) -> Iterator[str | None]:
    """Yields a `postgresql://` URL, or None when no server can be started here."""
    if os.environ.get("TEST_DB_URL"):
        yield os.environ["TEST_DB_URL"]
        return
    bin_dir = _bin_dir()
    if bin_dir is None or (os.geteuid() == 0 and shutil.which("runuser") is None):
        yield None
        return
    # Not under pytest's tmp dirs: those are private to root, and the server runs as postgres.
    tmp = Path(tempfile.mkdtemp(prefix="whisper-triton-pg-"))
    data = tmp / "pgdata"
    data.mkdir(parents=True)
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres")
        shutil.chown(data, "postgres")
    prefix = _as_postgres()
    subprocess.run([*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", "test", "--auth=trust"],
                   check=True, capture_output=True)
    log = tmp / "pg.log"
    subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-o",
                    f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                   check=True, capture_output=True)
    try:
        for _ in range(50):
            ready = subprocess.run([str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                                   capture_output=True)
            if ready.returncode == 0:
                break
            time.sleep(0.1)
        subprocess.run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "test", "tasks"],
                       check=True, capture_output=True)
        yield f"postgresql://test@127.0.0.1:{port}/tasks"
    finally:
        subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
