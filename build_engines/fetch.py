"""The PyTorch route's only preparation: the Hugging Face checkpoint itself, fetched once into the work directory.

TensorRT-LLM's PyTorch backend loads a Hugging Face Whisper checkpoint as it is (config.json, safetensors weights,
the tokenizer and preprocessor files its input processor reads): no conversion, no engine build. A hub id is
downloaded into `WORKDIR/<model id>/hf` (and kept: later runs only check it); a local checkpoint directory is
linked there. OpenAI `.pt` files stay on the engine route, which converts them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from build_engines.build import BuildError

# What TensorRT-LLM's loader and WhisperInputProcessor (AutoProcessor) read; the weights as safetensors only.
HF_PATTERNS = (
    "config.json", "generation_config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
    "vocab.json", "merges.txt", "normalizer.json", "added_tokens.json", "special_tokens_map.json",
    "*.safetensors", "*.safetensors.index.json",
)  # fmt: skip
FETCHED = ".fetched"  # names the hub id a downloaded checkpoint came from, once it is complete


def is_whisper_checkpoint(folder: Path) -> bool:
    config = folder / "config.json"
    try:
        return config.is_file() and json.loads(config.read_text(encoding="utf-8")).get("model_type") == "whisper"
    except (OSError, ValueError):
        return False


def has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors"))


def _complete(folder: Path) -> bool:
    return is_whisper_checkpoint(folder) and has_weights(folder)


def _clear(target: Path) -> None:
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        shutil.rmtree(target)


def fetch_checkpoint(source: str, target: Path, progress: Callable[[str], None] = print) -> Path:
    """`target` holding (or linking to) the Hugging Face Whisper checkpoint `source`: a directory or a hub id."""
    path = Path(source).expanduser()
    if path.is_file():
        raise BuildError(
            f"{source} is an OpenAI checkpoint file: the PyTorch route serves Hugging Face checkpoints. Give a "
            "Hugging Face id or directory, or take the engine route (--route engine), which converts .pt files."
        )
    if path.is_dir():
        if not _complete(path):
            raise BuildError(f"{path} is not a Hugging Face Whisper checkpoint (config.json with model_type "
                             "'whisper' and safetensors weights)")
        if not (target.is_symlink() and target.resolve() == path.resolve()):
            _clear(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path.resolve(), target_is_directory=True)
        progress(f"using the checkpoint in {path}")
        return target
    marker = target / FETCHED
    if not target.is_symlink() and marker.is_file() and marker.read_text(encoding="utf-8").strip() == source \
            and _complete(target):
        progress(f"the checkpoint {source} in {target} is up to date")
        return target
    if target.is_symlink():
        target.unlink()
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(repo_id=source, local_dir=str(target), allow_patterns=list(HF_PATTERNS))
    except Exception as exc:  # offline, unknown repository, gated model: all end the same way
        raise BuildError(
            f"could not fetch {source!r} from the Hugging Face Hub ({type(exc).__name__}: {exc}); offline, give a "
            "local Hugging Face checkpoint directory"
        ) from exc
    if not _complete(target):
        raise BuildError(f"{source} is not a Hugging Face Whisper checkpoint with safetensors weights")
    marker.write_text(source + "\n", encoding="utf-8")
    progress(f"fetched {source} into {target}")
    return target
