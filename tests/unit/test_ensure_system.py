"""scripts/ensure_system.sh: what is installed is not installed again (apt-get is never called for it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ensure_system.sh"


def _fake(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/usr/bin/env bash\n{body}\n")
    path.chmod(0o755)


def _run(tmp_path: Path, listing: str) -> tuple[int, str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "apt-calls"
    _fake(bin_dir, "ldconfig", listing)
    _fake(bin_dir, "apt-get", f'echo "$@" >> {calls}')
    _fake(bin_dir, "sudo", '"$@"')
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(SCRIPT), "serve"], env=env, capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout, calls.read_text() if calls.exists() else ""


def test_an_installed_libpython_is_found_in_a_long_ldconfig_listing(tmp_path: Path) -> None:
    # The match comes first, then a long listing: a reader that stops at the match leaves ldconfig to die of
    # SIGPIPE, which pipefail turned into "missing" (and an apt-get on every make, failing without root).
    listing = ("echo '\tlibpython3.11.so.1.0 (libc6,x86-64) => /lib/x86_64-linux-gnu/libpython3.11.so.1.0'\n"
               "echo '\tlibtcmalloc_minimal.so.4 (libc6,x86-64) => /lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4'\n"
               "for i in $(seq 1 20000); do echo \"\tlibfake$i.so.1 (libc6,x86-64) => /lib/libfake$i.so.1\"; done")
    code, out, apt = _run(tmp_path, listing)
    assert (code, apt) == (0, ""), out
    assert "Installing" not in out


def test_a_missing_libpython_and_tcmalloc_are_installed(tmp_path: Path) -> None:
    code, out, apt = _run(tmp_path, "echo '\tlibc.so.6 (libc6,x86-64) => /lib/x86_64-linux-gnu/libc.so.6'")
    assert code == 0 and "Installing system packages: libpython3.11 libtcmalloc-minimal4" in out
    assert "install -y -qq --no-install-recommends libpython3.11 libtcmalloc-minimal4" in apt
