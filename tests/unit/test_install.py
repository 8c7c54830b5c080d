"""The project is an installed package: Triton's Python models import it from the venv, never by editing sys.path.

The backend stub embeds Python in isolated mode (PYTHONPATH and the working directory are ignored): `make install`
installs this clone editable into the venv, and the launcher refuses to start Triton on another copy.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from whisper_triton.launcher import TritonError, check_installed, installed_package_dir

ROOT = Path(__file__).resolve().parents[2]
TRITON_MODELS = sorted([*ROOT.glob("model_repository/*/1/model.py"), *ROOT.glob("bench/*/1/model.py")])


def test_every_triton_model_is_found() -> None:
    names = {path.parts[-3] for path in TRITON_MODELS}
    assert {"whisper", "whisper_engine", "diarization", "instant_engine"} <= names


@pytest.mark.parametrize("path", TRITON_MODELS, ids=lambda path: path.parts[-3])
def test_triton_models_do_not_edit_sys_path(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "sys.path" not in text and "parents[" not in text


def test_the_stub_python_imports_this_clone() -> None:
    """What `python -I` of this venv imports (as the stub does) is this working tree: `make install` ran here."""
    assert installed_package_dir() == ROOT / "whisper_triton"
    check_installed()


def test_a_python_that_imports_another_copy_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other" / "whisper_triton"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("")
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\necho {other / '__init__.py'}\n")
    python.chmod(0o755)
    with pytest.raises(TritonError, match="make install"):
        check_installed(str(python))
    python.write_text("#!/bin/sh\nexit 1\n")
    with pytest.raises(TritonError, match="nowhere"):
        check_installed(str(python))


def test_webhook_receivers_import_the_verifier_from_anywhere(tmp_path: Path) -> None:
    """The README's `from frontend.webhooks import verify` works outside the clone (isolated mode, another cwd)."""
    code = "from frontend.webhooks import verify; print(verify.__module__)"
    done = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "frontend.webhooks", done.stderr[-2000:]
