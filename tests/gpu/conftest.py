"""GPU tests: real TensorRT-LLM, on either route. Skipped, with the reason, where there is no NVIDIA GPU or no
`tensorrt_llm` Python package (every machine of the CPU test suite); the engine route's tests also need
`trtllm-build`, the PyTorch route's a TensorRT-LLM with Whisper in its PyTorch backend.

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
    return None


def missing_route(route: str) -> str | None:
    """Why this TensorRT-LLM cannot take `route` (engine or pytorch), or None. Located, not imported."""
    if route == "engine":
        return None if shutil.which("trtllm-build") else "trtllm-build is not on PATH (no engine route)"
    spec = importlib.util.find_spec("tensorrt_llm")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    if not any((Path(f) / "_torch" / "models" / "modeling_whisper.py").is_file() for f in folders):
        return "this TensorRT-LLM has no Whisper in its PyTorch backend (_torch/models/modeling_whisper.py)"
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
