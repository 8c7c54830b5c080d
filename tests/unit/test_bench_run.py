"""bench.run's options: an allocator preloaded into faster-whisper's process only when asked for."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, ClassVar

import pytest

from bench import baselines
from bench.run import parse_args
from bench.workload import Clip


class _FakeProcess:
    """What run_baselines reads of faster-whisper's process: READY, then an empty result file."""

    seen: ClassVar[list[dict[str, str] | None]] = []

    def __init__(self, command: list[str], env: dict[str, str] | None = None, **_: Any) -> None:
        self.seen.append(env)
        Path(command[command.index("--out") + 1]).write_bytes(b"[]")
        self.stdout = io.StringIO("READY\n")
        self.returncode = 0

    def wait(self) -> int:
        return 0

    def kill(self) -> None:
        pass


def test_the_baseline_runs_on_glibc_unless_an_allocator_is_given(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(baselines.subprocess, "Popen", _FakeProcess)
    warm = Clip("warm", str(tmp_path / "warm.wav"), 1.0, "")
    baselines.run_baselines([], warm, tmp_path, 2, tmp_path)
    library = "/usr/lib/libtcmalloc_minimal.so.4"
    baselines.run_baselines([], warm, tmp_path, 2, tmp_path, malloc=library)
    assert _FakeProcess.seen[0] is None  # inherits this process's environment as it is
    assert _FakeProcess.seen[1] is not None and _FakeProcess.seen[1]["LD_PRELOAD"] == library


def test_a_baseline_allocator_must_exist_and_tags_the_results(tmp_path: Path) -> None:
    library = tmp_path / "libjemalloc.so.2"
    library.write_bytes(b"")
    args = parse_args(["--baseline-malloc", str(library)])
    assert args.baseline_malloc == str(library) and args.json.name.endswith("-fw-malloc.json")
    assert not parse_args([]).json.name.endswith("-fw-malloc.json")
    with pytest.raises(SystemExit):
        parse_args(["--baseline-malloc", str(tmp_path / "missing.so")])
