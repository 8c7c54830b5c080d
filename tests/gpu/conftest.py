"""GPU tests: real TensorRT-LLM engines. Skipped, with the reason, where there is no NVIDIA GPU, no
`tensorrt_llm` Python package or no `trtllm-build` (every machine of the CPU test suite).

Engines are built once into `$GPU_ENGINES_DIR` (default `$WHISPER_CACHE_DIR/gpu-test-engines`); later runs
find them up to date (`python -m build_engines all` is idempotent).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from whisper_triton.models import default_cache_dir


def missing_gpu_stack() -> str | None:
    """Why the GPU tests cannot run here, or None."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "no NVIDIA GPU (nvidia-smi not found)"
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"no usable NVIDIA GPU ({exc})"
    if listed.returncode != 0 or "GPU " not in listed.stdout:
        return "no usable NVIDIA GPU (nvidia-smi -L lists none)"
    if importlib.util.find_spec("tensorrt_llm") is None:
        return "the tensorrt_llm Python package is not installed"
    if shutil.which("trtllm-build") is None:
        return "trtllm-build is not on PATH"
    return None


@pytest.fixture(scope="session", autouse=True)
def gpu_stack() -> None:
    """Session-scoped, so it skips before any engine is built."""
    reason = missing_gpu_stack()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def engines_root() -> Path:
    root = Path(os.environ.get("GPU_ENGINES_DIR") or default_cache_dir() / "gpu-test-engines")
    root.mkdir(parents=True, exist_ok=True)
    return root
