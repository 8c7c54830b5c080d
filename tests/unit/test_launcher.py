"""Launcher housekeeping that needs no server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from whisper_triton import launcher
from whisper_triton.contract import DIARIZATION_MODEL, ENTRY_MODEL, LIVE_MODEL
from whisper_triton.launcher import REPO_ROOT, Supervisor, TritonServer, remove_stale_repositories
from whisper_triton.repository import build_repository


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


class _Server:
    """What the Supervisor needs of a TritonServer, over a real generated repository."""

    def __init__(self, repository: Path) -> None:
        self.repository, self.reloaded, self.stopped = repository, [], 0

    is_decoupled = TritonServer.is_decoupled

    def reload(self, model: str) -> None:
        self.reloaded.append(model)

    def stop(self, timeout: float = 30.0) -> None:
        self.stopped += 1


def test_a_dead_decoupled_model_restarts_triton_and_another_is_loaded_again(tmp_path: Path) -> None:
    """The streams of a dead decoupled model (the entry model's, the engine's that BLS calls read) never
    end: only a restart ends them. The diarization model answers once per request: loading it again is
    enough."""
    [engine] = build_repository(REPO_ROOT / "model_repository", tmp_path / "repo", ["tiny.en"], diarization=True)
    assert (tmp_path / "repo" / LIVE_MODEL / "config.pbtxt").is_file()  # the live model is always served
    server = _Server(tmp_path / "repo")
    supervisor = Supervisor(server)  # type: ignore[arg-type]
    for model in (ENTRY_MODEL, engine):
        supervisor._recover([model])
    assert server.stopped == 2 and server.reloaded == []
    supervisor._recover([DIARIZATION_MODEL])
    assert server.stopped == 2 and server.reloaded == [DIARIZATION_MODEL] and supervisor.model_reloads == 1


def test_too_little_shared_memory_is_named_with_its_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    free = {"mb": 64}
    monkeypatch.setattr(launcher.shutil, "disk_usage", lambda path: SimpleNamespace(free=free["mb"] * 1024 * 1024))
    warning = launcher.shared_memory_warning(tmp_path, needed_mb=512)
    assert warning is not None and "64 MB free" in warning and "--shm-size" in warning and str(tmp_path) in warning
    free["mb"] = 512
    assert launcher.shared_memory_warning(tmp_path, needed_mb=512) is None


def test_no_shared_memory_folder_gives_no_warning(tmp_path: Path) -> None:
    assert launcher.shared_memory_warning(tmp_path / "absent") is None


def test_auto_preloads_the_first_tcmalloc_found_and_warns_without_one(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    empty, found = tmp_path / "empty", tmp_path / "lib"
    empty.mkdir()
    found.mkdir()
    (found / "libtcmalloc.so.4").write_bytes(b"")
    (found / "libtcmalloc_minimal.so.4").write_bytes(b"")
    assert launcher.allocator_library("auto", [empty, found]) == found / "libtcmalloc_minimal.so.4"
    assert launcher.allocator_library("system", [found]) is None
    assert launcher.allocator_library("auto", [empty]) is None
    assert "tcmalloc is not installed" in caplog.text


def test_a_given_allocator_must_be_an_existing_absolute_path(tmp_path: Path) -> None:
    library = tmp_path / "libjemalloc.so.2"
    library.write_bytes(b"")
    assert launcher.allocator_library(str(library)) == library
    for wrong in ("jemalloc", str(tmp_path / "missing.so"), "libjemalloc.so.2"):
        with pytest.raises(launcher.TritonError, match="TRITON_MALLOC"):
            launcher.allocator_library(wrong)


def test_the_allocator_goes_first_in_the_servers_ld_preload(tmp_path: Path) -> None:
    library = tmp_path / "libtcmalloc_minimal.so.4"
    env = launcher.server_environment({"PATH": "/usr/bin", "LD_PRELOAD": "/opt/other.so"}, library)
    assert env["LD_PRELOAD"] == f"{library}:/opt/other.so"
    assert launcher.server_environment({"PATH": "/usr/bin"}, library)["LD_PRELOAD"] == str(library)
    assert "LD_PRELOAD" not in launcher.server_environment({"PATH": "/usr/bin"}, None)


def test_only_unmapped_regions_of_this_servers_prefix_are_removed(tmp_path: Path) -> None:
    shm, proc = tmp_path / "shm", tmp_path / "proc"
    shm.mkdir()
    prefix = launcher.shared_memory_prefix(8001)
    for name in (f"{prefix}dead-1", f"{prefix}dead-2", f"{prefix}live", "whisper_triton_8002_other",
                 "triton_python_backend_shm_region_x"):
        (shm / name).write_bytes(b"x" * 10)
    (proc / "42").mkdir(parents=True)
    (proc / "42" / "maps").write_text(f"7f00-7f10 rw-s 00000000 00:19 77   {shm / prefix}live\n")
    (proc / "43").mkdir()  # a process whose maps cannot be read
    removed = launcher.remove_stale_shared_memory(prefix, shm, proc)
    assert sorted(path.name for path in removed) == [f"{prefix}dead-1", f"{prefix}dead-2"]
    assert sorted(path.name for path in shm.iterdir()) == [
        "triton_python_backend_shm_region_x", f"{prefix}live", "whisper_triton_8002_other"]
    assert launcher.remove_stale_shared_memory(prefix, shm, proc) == []


def test_the_regions_are_named_for_the_server(tmp_path: Path) -> None:
    command = launcher.server_command(launcher.TritonSettings(grpc_port=8123), None, tmp_path, [], binary="t")
    assert "--backend-config=python,shm-region-prefix-name=whisper_triton_8123_" in command


def test_stopping_a_killed_triton_removes_its_regions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Triton SIGKILLed (a test, the OOM killer) and then stopped without a restart unlinked nothing."""
    monkeypatch.setattr(launcher, "SHARED_MEMORY", tmp_path)
    server = TritonServer(launcher.TritonSettings(grpc_port=8555), tmp_path)
    server.process = subprocess.Popen(["sleep", "60"], start_new_session=True)
    mine, other = tmp_path / f"{launcher.shared_memory_prefix(8555)}a", tmp_path / "whisper_triton_8556_a"
    mine.write_bytes(b"x")
    other.write_bytes(b"x")
    server.process.send_signal(signal.SIGKILL)
    server.stop()
    assert not mine.exists() and other.exists()
