"""Whisper checkpoint -> TensorRT-LLM checkpoint, the input of `trtllm-build --checkpoint_dir`.

Sources: a Hugging Face Whisper directory or hub id (openai/whisper-large-v3, -turbo, distil-whisper, fine-tunes),
or an OpenAI `.pt` file. Output: `encoder/` and `decoder/`, each with `config.json` and `rank0.safetensors`, named
and configured as NVIDIA/TensorRT-LLM's `examples/models/core/whisper/convert_checkpoint.py` at commit
2a9abd9536aa62ad3e4b9314be9286b1b1be523b writes them (details in `checkpoint_layout`). Two deliberate differences
from that script: every tensor is written in the requested dtype (the script casts weights to float16 and leaves
the encoder's sinusoids in float32 whatever `--dtype` says), and Hugging Face checkpoints are read directly
instead of through a `.pt` rewrite. Weight-only quantisation (int8/int4) is not done here.

The checkpoint is written to a sibling `.NAME.partial` directory and renamed into place with `conversion.json`,
which records a hash of the inputs (source content, dtypes, converter version). A run whose inputs match a
complete output skips; an interrupted run leaves only the partial directory, which the next run discards.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from build_engines.checkpoint_errors import ConversionError
from build_engines.checkpoint_layout import decoder_config, decoder_weights, encoder_config, encoder_weights
from build_engines.checkpoint_sources import (
    Progress,
    WhisperCheckpoint,
    load_checkpoint,
    source_fingerprint,
    source_kind,
)

__all__ = ["DTYPES", "MANIFEST", "ConversionError", "convert_checkpoint"]

CONVERTER_VERSION = 1
MANIFEST = "conversion.json"
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
LOGITS_DTYPES = ("float16", "float32")
FILES = tuple(f"{part}/{name}" for part in ("encoder", "decoder") for name in ("config.json", "rank0.safetensors"))


def convert_checkpoint(
    source: str,
    output: Path,
    dtype: str = "float16",
    progress: Callable[[str], None] = print,
    *,
    logits_dtype: str = "float32",
) -> Path:
    """Converts `source` into `output` (skipped when `output` already holds this conversion); returns `output`.

    float32 logits by default: decoding compares average log-probabilities against thresholds.
    """
    _check_dtypes(dtype, logits_dtype)
    source, output = str(source), Path(output).expanduser()
    kind = source_kind(source)
    inputs = {
        "converter_version": CONVERTER_VERSION,
        "source": source_fingerprint(source, kind, progress),
        "dtype": dtype,
        "logits_dtype": logits_dtype,
    }
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    if is_complete(output, key):
        progress(f"{output} already holds {source} converted to {dtype}: skipping the conversion")
        return output
    _check_replaceable(output)
    checkpoint = load_checkpoint(source, kind, DTYPES[dtype], progress)
    partial = _sibling(output, "partial")
    _remove(partial)
    partial.mkdir(parents=True)
    files = _write_encoder(partial, checkpoint, dtype, progress)
    files |= _write_decoder(partial, checkpoint, dtype, logits_dtype, progress)
    manifest = {"key": key, "inputs": inputs, "source": source, "source_kind": kind, "files": files}
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    _replace(partial, output)
    progress(f"Wrote the TensorRT-LLM checkpoint {output} ({dtype})")
    return output


def _check_dtypes(dtype: str, logits_dtype: str) -> None:
    if dtype not in DTYPES:
        raise ConversionError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    if logits_dtype not in LOGITS_DTYPES:
        raise ConversionError(f"unknown logits dtype {logits_dtype!r}: use one of {', '.join(LOGITS_DTYPES)}")


def is_complete(output: Path, key: str) -> bool:
    """Whether `output` holds a finished conversion with this input hash and all its files at their sizes."""
    try:
        manifest = json.loads((output / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or manifest.get("key") != key:
        return False
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != set(FILES):
        return False
    return all((output / name).is_file() and (output / name).stat().st_size == size for name, size in files.items())


def _check_replaceable(output: Path) -> None:
    if not output.exists():
        return
    if not output.is_dir():
        raise ConversionError(f"output {output} exists and is not a directory")
    if not (output / MANIFEST).is_file() and any(output.iterdir()):
        raise ConversionError(
            f"output {output} exists and was not written by this converter: remove it or choose another path"
        )


def _write_encoder(root: Path, checkpoint: WhisperCheckpoint, dtype: str, progress: Progress) -> dict[str, int]:
    config = encoder_config(checkpoint.dims, dtype)
    progress(f"Converting the encoder: {checkpoint.dims.n_audio_layer} layers, {checkpoint.dims.n_mels} mel bins")
    return _write_component(root / "encoder", config, encoder_weights(checkpoint.dims, checkpoint.params), dtype)


def _write_decoder(
    root: Path, checkpoint: WhisperCheckpoint, dtype: str, logits_dtype: str, progress: Progress
) -> dict[str, int]:
    config = decoder_config(checkpoint.dims, dtype, logits_dtype)
    progress(f"Converting the decoder: {checkpoint.dims.n_text_layer} layers, vocabulary {checkpoint.dims.n_vocab}")
    return _write_component(root / "decoder", config, decoder_weights(checkpoint.dims, checkpoint.params), dtype)


def _write_component(
    folder: Path, config: dict[str, object], weights: dict[str, torch.Tensor], dtype: str
) -> dict[str, int]:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config, indent=4) + "\n")
    save_file(_prepared(weights, DTYPES[dtype]), str(folder / "rank0.safetensors"))
    (folder / "rank0.safetensors").chmod(0o644)  # safetensors writes 0600; builds may run as another user
    return {f"{folder.name}/{file.name}": file.stat().st_size for file in sorted(folder.iterdir())}


def _prepared(weights: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Cast, contiguous, and no two tensors sharing storage (safetensors refuses shared tensors)."""
    prepared: dict[str, torch.Tensor] = {}
    storages: set[int] = set()
    for name, weight in weights.items():
        tensor = weight.detach().to(dtype).contiguous()
        if tensor.untyped_storage().data_ptr() in storages:
            tensor = tensor.clone()
        storages.add(tensor.untyped_storage().data_ptr())
        prepared[name] = tensor
    return prepared


def _sibling(output: Path, tag: str) -> Path:
    return output.parent / f".{output.name}.{tag}"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _replace(partial: Path, output: Path) -> None:
    """Renames `partial` to `output`; a previous output is moved aside first and deleted after."""
    old = _sibling(output, "old")
    _remove(old)
    if output.exists():
        output.rename(old)
    partial.rename(output)
    _remove(old)
