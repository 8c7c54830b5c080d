"""Watching the Python-backend processes ("stubs") of a tritonserver through /proc.

Triton runs each instance of a Python-backend model in its own stub process. When a stub dies
(killed, out of memory, a crash in native code), Triton 2.51 does not notice: the model still
reports ready, it does not start the process again, a non-decoupled model fails every later
request ("Stub process ... is not healthy") and a decoupled model's in-flight streams never end.
Triton does not reap the dead process either: it stays a zombie, which is how we see it. A stub
Triton stops itself (unloading a model) is reaped at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class Child:
    pid: int
    zombie: bool
    model: str | None  # the model a stub serves, from its command line (None: not a stub, or a zombie)


def stub_model(argv: list[str]) -> str | None:
    """`triton_python_backend_stub <repository>/<model>/<version>/model.py <shm region> ...` → the model."""
    if len(argv) < 2 or not argv[0].endswith("triton_python_backend_stub"):
        return None
    script = Path(argv[1])
    return script.parent.parent.name if script.name == "model.py" else None


def children(pid: int, proc: Path = PROC) -> list[Child]:
    """The direct children of `pid` (any of its threads may have started them)."""
    pids: set[int] = set()
    for listing in (proc / str(pid) / "task").glob("*/children"):
        try:
            pids.update(int(p) for p in listing.read_text().split())
        except (OSError, ValueError):
            continue
    found = []
    for child in sorted(pids):
        try:
            stat = (proc / str(child) / "stat").read_text()
            argv = (proc / str(child) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone (reaped) meanwhile
        state = stat.rsplit(")", 1)[-1].split()[0]  # the name in parentheses may hold spaces
        found.append(Child(child, state == "Z", stub_model([a.decode(errors="replace") for a in argv if a])))
    return found


@dataclass
class StubWatch:
    """Remembers which model each stub serves (a zombie's command line is empty) and reports each dead
    stub once, after it was seen dead twice (so a stub Triton is about to reap is not taken for a crash)."""

    models: dict[int, str] = field(default_factory=dict)
    dead_once: set[int] = field(default_factory=set)
    reported: set[int] = field(default_factory=set)

    def crashed(self, current: list[Child]) -> list[str]:
        crashed = []
        for child in current:
            if child.model and not child.zombie:
                self.models[child.pid] = child.model
            if not child.zombie or child.pid not in self.models or child.pid in self.reported:
                continue
            if child.pid in self.dead_once:
                self.reported.add(child.pid)
                crashed.append(self.models[child.pid])
            else:
                self.dead_once.add(child.pid)
        alive = {child.pid for child in current}
        for pid in list(self.models):
            if pid not in alive:  # reaped: a normal stop (or a zombie reaped at last)
                self.models.pop(pid)
        self.dead_once &= alive
        self.reported &= alive
        return sorted(set(crashed))
