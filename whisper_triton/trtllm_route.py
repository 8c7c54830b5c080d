"""Which TensorRT-LLM route serves Whisper, decided without importing TensorRT-LLM.

- `engine`: TensorRT engines built by `trtllm-build` from our converted checkpoint (`build_engines`), run by the
  C++ executor (`whisper_triton/trtllm_engine.py`). TensorRT-LLM up to the 1.x releases on PyPI (1.2.1).
- `pytorch`: the Hugging Face checkpoint served as it is by TensorRT-LLM's PyTorch backend through its LLM API
  (`whisper_triton/trtllm_torch_engine.py`); no conversion, no build. TensorRT-LLM's main branch removed the
  TensorRT-engine backend in mid-2026 ("Migration Guide: TensorRT Backend Removed": no convert_checkpoint.py, no
  trtllm-build) and added Whisper to the PyTorch backend (NVIDIA/TensorRT-LLM pull request 16141).

`WHISPER_TRTLLM_ROUTE=auto` (the default) takes the engine route where the installed TensorRT-LLM can still build
engines (`trtllm-build` on PATH and the `tensorrt_llm.builder` module present), the PyTorch route elsewhere.
`python -m build_engines all`, the GPU image's entry point and the engine model decide the same way.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from whisper_triton.settings import ModelSettings, SettingsError

if TYPE_CHECKING:
    from whisper_triton.engine import WhisperEngine
    from whisper_triton.models import ModelInfo, ResolvedModel
    from whisper_triton.text import WhisperTokenizer

ROUTES = ("auto", "engine", "pytorch")
TRTLLM_BUILD = "trtllm-build"


def has_engine_builder() -> bool:
    """Whether the installed TensorRT-LLM still builds engines: `trtllm-build` on PATH and `tensorrt_llm.builder`
    in the package. The module is located, not imported: importing tensorrt_llm loads CUDA and takes seconds."""
    if shutil.which(TRTLLM_BUILD) is None:
        return False
    try:
        spec = importlib.util.find_spec("tensorrt_llm")
    except (ImportError, ValueError):
        return False
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return any((Path(p) / "builder.py").is_file() or (Path(p) / "builder" / "__init__.py").is_file()
               for p in locations)


def supported_route() -> str:
    return "engine" if has_engine_builder() else "pytorch"


def resolve_route(setting: str) -> str:
    """`engine` or `pytorch`: the route WHISPER_TRTLLM_ROUTE (or --route) names, `auto` as the installation allows."""
    if setting not in ROUTES:
        raise SettingsError(f"Invalid value for WHISPER_TRTLLM_ROUTE: expected one of {', '.join(ROUTES)}.")
    return supported_route() if setting == "auto" else setting


def create_engine(
    settings: ModelSettings,
    resolved: ResolvedModel,
    info: ModelInfo,
    tokenizer: WhisperTokenizer,
    device_id: int | None = None,
) -> WhisperEngine:
    """The TensorRT-LLM engine of one served model on the route the settings and the installation choose."""
    if resolve_route(settings.trtllm_route) == "engine":
        from whisper_triton.trtllm_engine import create_engine as engine_route

        return engine_route(settings, resolved, info, tokenizer, device_id=device_id)
    from whisper_triton.trtllm_torch_engine import create_engine as pytorch_route

    return pytorch_route(settings, resolved, info, tokenizer, device_id=device_id)
