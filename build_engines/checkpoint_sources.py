"""Whisper checkpoints in, OpenAI-named tensors out: OpenAI `.pt` files, Hugging Face directories and hub ids."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from build_engines.checkpoint_errors import ConversionError
from build_engines.checkpoint_layout import WhisperDims, check_params

SourceKind = Literal["openai", "huggingface", "hub"]
Progress = Callable[[str], None]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# Files whose content defines a Hugging Face checkpoint (tokenizer and generation files do not change the weights).
_HF_FILES = ("config.json", "*.safetensors", "*.safetensors.index.json", "*.bin", "*.bin.index.json")

_HF_NAMES = {
    "encoder.conv1.weight": "encoder.conv1.weight",
    "encoder.conv1.bias": "encoder.conv1.bias",
    "encoder.conv2.weight": "encoder.conv2.weight",
    "encoder.conv2.bias": "encoder.conv2.bias",
    "encoder.embed_positions.weight": "encoder.positional_embedding",
    "encoder.layer_norm.weight": "encoder.ln_post.weight",
    "encoder.layer_norm.bias": "encoder.ln_post.bias",
    "decoder.embed_tokens.weight": "decoder.token_embedding.weight",
    "decoder.embed_positions.weight": "decoder.positional_embedding",
    "decoder.layer_norm.weight": "decoder.ln.weight",
    "decoder.layer_norm.bias": "decoder.ln.bias",
}
_HF_LAYER = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.(.+)\.(weight|bias)$")
_HF_LAYER_PARTS = {
    "self_attn.q_proj": "attn.query",
    "self_attn.k_proj": "attn.key",
    "self_attn.v_proj": "attn.value",
    "self_attn.out_proj": "attn.out",
    "self_attn_layer_norm": "attn_ln",
    "encoder_attn.q_proj": "cross_attn.query",
    "encoder_attn.k_proj": "cross_attn.key",
    "encoder_attn.v_proj": "cross_attn.value",
    "encoder_attn.out_proj": "cross_attn.out",
    "encoder_attn_layer_norm": "cross_attn_ln",
    "fc1": "mlp.0",
    "fc2": "mlp.2",
    "final_layer_norm": "mlp_ln",
}


@dataclass(frozen=True)
class WhisperCheckpoint:
    dims: WhisperDims
    params: dict[str, torch.Tensor]  # OpenAI names


def source_kind(source: str) -> SourceKind:
    path = Path(source).expanduser()
    if path.is_file():
        return "openai"
    if path.is_dir():
        return "huggingface"
    if _HUB_ID.match(source) and not source.endswith((".pt", ".pth")):
        return "hub"
    raise ConversionError(
        f"source {source!r} not found: give a Hugging Face Whisper checkpoint directory, a hub id such as "
        "openai/whisper-large-v3, or an OpenAI Whisper .pt file"
    )


def _source_files(path: Path, kind: SourceKind) -> list[Path]:
    if kind == "openai":
        return [path]
    return sorted({file for pattern in _HF_FILES for file in path.glob(pattern) if file.is_file()})


def source_fingerprint(source: str, kind: SourceKind, progress: Progress) -> str:
    """sha256 of the files that define the weights; a hub id stands for itself (its files are not local yet)."""
    if kind == "hub":
        return f"hub:{source}"
    path = Path(source).expanduser()
    files = _source_files(path, kind)
    progress(f"Hashing {len(files)} source file(s), {sum(file.stat().st_size for file in files) / 1e6:.0f} MB")
    digest = hashlib.sha256()
    for file in files:
        if kind == "huggingface":
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return f"{kind}:sha256:{digest.hexdigest()}"


def load_checkpoint(source: str, kind: SourceKind, dtype: torch.dtype, progress: Progress) -> WhisperCheckpoint:
    """Dimensions and OpenAI-named tensors, shapes checked against the dimensions."""
    if kind == "openai":
        checkpoint = _load_openai(Path(source).expanduser(), progress)
    else:
        checkpoint = _load_huggingface(source, kind, dtype, progress)
    check_params(checkpoint.dims, checkpoint.params)
    return checkpoint


def _load_openai(path: Path, progress: Progress) -> WhisperCheckpoint:
    progress(f"Loading OpenAI Whisper checkpoint {path}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # foreign bytes fail deep in unpickling with any exception type (KeyError, ...)
        raise ConversionError(f"{path} is not a readable OpenAI Whisper checkpoint ({error})") from error
    if (
        not isinstance(raw, dict)
        or not isinstance(raw.get("dims"), Mapping)
        or not isinstance(raw.get("model_state_dict"), Mapping)
    ):
        raise ConversionError(
            f"{path} is not an OpenAI Whisper checkpoint: expected a dict with 'dims' and 'model_state_dict'"
        )
    params = {name: value for name, value in raw["model_state_dict"].items() if isinstance(value, torch.Tensor)}
    return WhisperCheckpoint(WhisperDims.from_mapping(raw["dims"]), params)


def _check_local_config(path: Path) -> None:
    config_file = path / "config.json"
    try:
        config = json.loads(config_file.read_text())
    except FileNotFoundError as error:
        raise ConversionError(f"{path} has no config.json: not a Hugging Face checkpoint directory") from error
    except (OSError, ValueError) as error:
        raise ConversionError(f"{config_file} is not readable JSON ({error})") from error
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != "whisper":
        raise ConversionError(f"{path} holds a {model_type!r} checkpoint, not Whisper")


def _hf_failure(source: str, kind: SourceKind, error: Exception) -> ConversionError:
    if kind == "hub":
        return ConversionError(
            f"cannot load {source!r} from the Hugging Face hub, and it is no local path ({error}). Without network "
            f"access, download it where there is (`hf download {source} --local-dir DIR`) and pass DIR"
        )
    return ConversionError(f"cannot load the Hugging Face checkpoint in {source} ({error})")


def _load_huggingface(source: str, kind: SourceKind, dtype: torch.dtype, progress: Progress) -> WhisperCheckpoint:
    from transformers import AutoConfig, WhisperForConditionalGeneration  # seconds to import: only when needed

    if kind == "huggingface":
        _check_local_config(Path(source).expanduser())
    progress(f"Loading Hugging Face checkpoint {source}" + (" (downloads it if not cached)" if kind == "hub" else ""))
    try:
        config = AutoConfig.from_pretrained(source)
        if config.model_type != "whisper":
            raise ConversionError(f"{source} is a {config.model_type!r} checkpoint, not Whisper")
        _check_hf_config(source, config)
        precision: dict[str, Any] = {dtype_keyword(): dtype}
        model = WhisperForConditionalGeneration.from_pretrained(source, config=config, **precision)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise _hf_failure(source, kind, error) from error
    dims = WhisperDims.from_mapping(hf_dims(config))
    return WhisperCheckpoint(dims, openai_params(model.state_dict()))


def dtype_keyword(version: str | None = None) -> str:
    """`from_pretrained`'s dtype keyword: `dtype` from transformers 4.56 on, `torch_dtype` before. An older
    transformers (NVIDIA's TensorRT-LLM images) passes an unknown `dtype` on to the model constructor,
    which raises TypeError."""
    from packaging.version import InvalidVersion, Version

    if version is None:
        import transformers

        version = transformers.__version__
    try:
        return "dtype" if Version(version) >= Version("4.56") else "torch_dtype"
    except InvalidVersion:
        return "dtype"


def _check_hf_config(source: str, config: Any) -> None:
    if config.activation_function != "gelu":
        raise ConversionError(f"{source} uses activation {config.activation_function!r}; TensorRT-LLM's Whisper: gelu")
    if config.scale_embedding:
        raise ConversionError(f"{source} scales its embeddings, which TensorRT-LLM's Whisper decoder does not")


def hf_dims(config: Any) -> dict[str, object]:
    """OpenAI's dimension names for a transformers `WhisperConfig`."""
    return {
        "n_mels": config.num_mel_bins,
        "n_vocab": config.vocab_size,
        "n_audio_ctx": config.max_source_positions,
        "n_audio_state": config.d_model,
        "n_audio_head": config.encoder_attention_heads,
        "n_audio_layer": config.encoder_layers,
        "n_text_ctx": config.max_target_positions,
        "n_text_state": config.d_model,
        "n_text_head": config.decoder_attention_heads,
        "n_text_layer": config.decoder_layers,
    }


def openai_name(hf_name: str) -> str | None:
    """OpenAI's name for a transformers Whisper tensor; None for tensors the conversion does not read."""
    name = hf_name.removeprefix("model.")
    if name in _HF_NAMES:
        return _HF_NAMES[name]
    match = _HF_LAYER.match(name)
    if match and match[3] in _HF_LAYER_PARTS:
        return f"{match[1]}.blocks.{match[2]}.{_HF_LAYER_PARTS[match[3]]}.{match[4]}"
    return None


def openai_params(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames a transformers Whisper state dict; refuses an output projection not tied to the embedding."""
    params = {new: tensor for name, tensor in state.items() if (new := openai_name(name)) is not None}
    projection = state.get("proj_out.weight")
    embedding = params.get("decoder.token_embedding.weight")
    if projection is not None and embedding is not None and not torch.equal(projection, embedding):
        raise ConversionError(
            "the checkpoint's output projection (proj_out) differs from its token embedding; TensorRT-LLM's "
            "Whisper decoder ties them (lm_head = token embedding)"
        )
    return params
