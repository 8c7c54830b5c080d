"""Launcher housekeeping that needs no server."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from whisper_triton.launcher import remove_stale_repositories


def test_only_old_repositories_of_servers_that_are_gone_are_removed(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        live_port = listener.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            gone_port = probe.getsockname()[1]  # bound, not listening: nobody answers there
            old = time.time() - 3600
            folders = {name: tmp_path / name for name in
                       (f"repository-{live_port}", f"repository-{gone_port}", "repository-1", "backends")}
            for folder in folders.values():
                (folder / "whisper").mkdir(parents=True)
                os.utime(folder, (old, old))
            young = tmp_path / "repository-2"
            young.mkdir()  # a server that may still be starting
            removed = remove_stale_repositories(tmp_path)
    assert sorted(p.name for p in removed) == sorted([f"repository-{gone_port}", "repository-1"])
    assert folders[f"repository-{live_port}"].exists() and folders["backends"].exists() and young.exists()
