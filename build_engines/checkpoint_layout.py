"""TensorRT-LLM's Whisper checkpoint layout: config.json fields and tensor names of encoder and decoder.

Input tensors use OpenAI's Whisper names (`encoder.blocks.N.attn.query.weight`, ...); Hugging Face checkpoints
are renamed to them first (see `checkpoint_sources`). Output names and config fields follow NVIDIA/TensorRT-LLM
`examples/models/core/whisper/convert_checkpoint.py` at commit 2a9abd9536aa62ad3e4b9314be9286b1b1be523b
(`get_encoder_config`, `get_decoder_config`, `convert_openai_whisper_encoder`, `convert_openai_whisper_decoder`),
checked against the modules they load into in `tensorrt_llm/models/enc_dec/model.py` (`WhisperEncoder` and
`DecoderModel` both keep their parameters under an `EncDecTransformer` named `transformer`: `transformer.conv1`,
`transformer.layers.N...`, `transformer.ln_f`; the decoder's `lm_head` sits beside it). TensorRT-LLM dumps its
IntEnums as integers: `LayerNormType.LayerNorm` and `LayerNormPositionType.pre_layernorm` are both 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

import torch

from build_engines.checkpoint_errors import ConversionError

LAYERNORM_TYPE_LAYERNORM = 0  # tensorrt_llm.functional.LayerNormType.LayerNorm
LAYERNORM_POSITION_PRE = 0  # tensorrt_llm.functional.LayerNormPositionType.pre_layernorm

Params = Mapping[str, torch.Tensor]
Shapes = dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class WhisperDims:
    """OpenAI's `ModelDimensions`, the `dims` of a `.pt` checkpoint."""

    n_mels: int
    n_vocab: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> WhisperDims:
        names = [field.name for field in fields(cls)]
        missing = [name for name in names if name not in values]
        if missing:
            raise ConversionError(f"Whisper dimensions lack {', '.join(missing)}")
        checked: dict[str, int] = {}
        for name in names:
            value = values[name]
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                checked[name] = value
        bad = [name for name in names if name not in checked]
        if bad:
            raise ConversionError(f"Whisper dimensions must be positive integers: {', '.join(bad)}")
        dims = cls(**checked)
        dims.validate()
        return dims

    def validate(self) -> None:
        if self.n_audio_state != self.n_text_state:
            raise ConversionError(
                f"encoder width {self.n_audio_state} differs from decoder width {self.n_text_state}: "
                "TensorRT-LLM's Whisper decoder needs them equal"
            )
        for state, head, part in ((self.n_audio_state, self.n_audio_head, "encoder"),
                                  (self.n_text_state, self.n_text_head, "decoder")):  # fmt: skip
            if state % head:
                raise ConversionError(f"{part} width {state} is not a multiple of its {head} attention heads")
        languages = num_languages(self.n_vocab)
        if not 1 <= languages <= 100:
            raise ConversionError(f"vocabulary of {self.n_vocab} tokens is not a Whisper vocabulary (51864-51866)")


def num_languages(n_vocab: int) -> int:
    """Language tokens in the vocabulary: 51865 -> 99, 51866 -> 100 (large-v3), 51864 (.en) -> 99."""
    return n_vocab - 51765 - int(n_vocab >= 51865)


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's fixed encoder positional embedding (computed in float32, as OpenAI and TensorRT-LLM do)."""
    increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-increment * torch.arange(channels // 2, dtype=torch.float32))
    scaled_time = torch.arange(length, dtype=torch.float32)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled_time), torch.cos(scaled_time)], dim=1)


def encoder_config(dims: WhisperDims, dtype: str) -> dict[str, object]:
    return {
        "architecture": "WhisperEncoder",
        "dtype": dtype,
        "num_hidden_layers": dims.n_audio_layer,
        "num_attention_heads": dims.n_audio_head,
        "hidden_size": dims.n_audio_state,
        "max_position_embeddings": dims.n_audio_ctx,
        "has_position_embedding": True,
        "n_mels": dims.n_mels,
        "vocab_size": dims.n_vocab,
        "hidden_act": "gelu",
        "num_languages": num_languages(dims.n_vocab),
        "quantization": {"quant_algo": None},
    }


def decoder_config(dims: WhisperDims, dtype: str, logits_dtype: str) -> dict[str, object]:
    return {
        "architecture": "DecoderModel",
        "dtype": dtype,
        "logits_dtype": logits_dtype,
        "num_hidden_layers": dims.n_text_layer,
        "num_attention_heads": dims.n_text_head,
        "hidden_size": dims.n_text_state,
        "norm_epsilon": 1e-5,
        "vocab_size": dims.n_vocab,
        "hidden_act": "gelu",
        "use_parallel_embedding": False,
        "embedding_sharding_dim": 0,
        "max_position_embeddings": dims.n_text_ctx,
        "use_prompt_tuning": False,
        "head_size": dims.n_text_state // dims.n_text_head,
        "has_position_embedding": True,
        "layernorm_type": LAYERNORM_TYPE_LAYERNORM,
        "has_attention_qkvo_bias": True,
        "has_mlp_bias": True,
        "has_model_final_layernorm": True,
        "has_embedding_layernorm": False,
        "has_embedding_scale": False,
        "ffn_hidden_size": 4 * dims.n_text_state,
        "q_scaling": 1.0,
        "layernorm_position": LAYERNORM_POSITION_PRE,
        "relative_attention": False,
        "max_distance": 0,
        "num_buckets": 0,
        "model_type": "whisper",
        "rescale_before_lm_head": False,
        "encoder_hidden_size": dims.n_text_state,
        "encoder_num_heads": dims.n_text_head,
        "encoder_head_size": None,
        "skip_cross_kv": False,
        "quantization": {"quant_algo": None},
    }


def _norm_shapes(prefix: str, width: int) -> Shapes:
    return {f"{prefix}.weight": (width,), f"{prefix}.bias": (width,)}


def _attention_shapes(prefix: str, width: int) -> Shapes:
    shapes: Shapes = {f"{prefix}.key.weight": (width, width)}
    for part in ("query", "value", "out"):
        shapes |= {f"{prefix}.{part}.weight": (width, width), f"{prefix}.{part}.bias": (width,)}
    return shapes


def _block_shapes(prefix: str, width: int, cross: bool) -> Shapes:
    # TensorRT-LLM's Whisper layers hard-code a feed-forward width of 4 x the model width.
    shapes = _attention_shapes(f"{prefix}.attn", width) | _norm_shapes(f"{prefix}.attn_ln", width)
    if cross:
        shapes |= _attention_shapes(f"{prefix}.cross_attn", width) | _norm_shapes(f"{prefix}.cross_attn_ln", width)
    return shapes | _norm_shapes(f"{prefix}.mlp_ln", width) | {
        f"{prefix}.mlp.0.weight": (4 * width, width), f"{prefix}.mlp.0.bias": (4 * width,),
        f"{prefix}.mlp.2.weight": (width, 4 * width), f"{prefix}.mlp.2.bias": (width,),
    }  # fmt: skip


def expected_shapes(dims: WhisperDims) -> Shapes:
    """Every OpenAI-named tensor the conversion reads, with its shape (the encoder's positional one is rebuilt)."""
    width = dims.n_audio_state
    shapes: Shapes = {
        "encoder.conv1.weight": (width, dims.n_mels, 3), "encoder.conv1.bias": (width,),
        "encoder.conv2.weight": (width, width, 3), "encoder.conv2.bias": (width,),
        "decoder.token_embedding.weight": (dims.n_vocab, width),
        "decoder.positional_embedding": (dims.n_text_ctx, width),
    }  # fmt: skip
    for i in range(dims.n_audio_layer):
        shapes |= _block_shapes(f"encoder.blocks.{i}", width, cross=False)
    for i in range(dims.n_text_layer):
        shapes |= _block_shapes(f"decoder.blocks.{i}", width, cross=True)
    return shapes | _norm_shapes("encoder.ln_post", width) | _norm_shapes("decoder.ln", width)


def check_params(dims: WhisperDims, params: Params) -> None:
    """Raises ConversionError naming the first tensors that are missing or shaped unlike `dims` says."""
    problems = []
    for name, shape in expected_shapes(dims).items():
        if name not in params:
            problems.append(f"{name} is missing")
        elif tuple(params[name].shape) != shape:
            problems.append(f"{name} has shape {tuple(params[name].shape)}, expected {shape}")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ConversionError("checkpoint does not match its Whisper dimensions: " + "; ".join(problems[:5]) + more)


def _fused_qkv(params: Params, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """[query; key; value] stacked on the output axis, as TensorRT-LLM's `qkv` linear expects.

    The key bias is zero: Whisper's key projection has none (a key bias only adds a per-query constant to the
    attention scores, which softmax cancels).
    """
    weight = torch.cat([params[f"{prefix}.{part}.weight"] for part in ("query", "key", "value")], dim=0)
    query_bias = params[f"{prefix}.query.bias"]
    bias = torch.cat([query_bias, torch.zeros_like(query_bias), params[f"{prefix}.value.bias"]], dim=0)
    return weight, bias


def _put_attention(out: dict[str, torch.Tensor], target: str, params: Params, source: str) -> None:
    out[f"{target}.qkv.weight"], out[f"{target}.qkv.bias"] = _fused_qkv(params, source)
    out[f"{target}.dense.weight"] = params[f"{source}.out.weight"]
    out[f"{target}.dense.bias"] = params[f"{source}.out.bias"]


def _put_linear(out: dict[str, torch.Tensor], target: str, params: Params, source: str) -> None:
    out[f"{target}.weight"] = params[f"{source}.weight"]
    out[f"{target}.bias"] = params[f"{source}.bias"]


def _put_mlp(out: dict[str, torch.Tensor], target: str, params: Params, source: str) -> None:
    _put_linear(out, f"{target}.fc", params, f"{source}.0")
    _put_linear(out, f"{target}.proj", params, f"{source}.2")


def encoder_weights(dims: WhisperDims, params: Params) -> dict[str, torch.Tensor]:
    out = {"transformer.position_embedding.weight": sinusoids(dims.n_audio_ctx, dims.n_audio_state)}
    for conv in ("conv1", "conv2"):
        # TensorRT-LLM's Conv1d is a 2-D convolution with a trailing kernel axis of 1.
        out[f"transformer.{conv}.weight"] = params[f"encoder.{conv}.weight"].unsqueeze(-1)
        out[f"transformer.{conv}.bias"] = params[f"encoder.{conv}.bias"]
    for i in range(dims.n_audio_layer):
        target, source = f"transformer.layers.{i}", f"encoder.blocks.{i}"
        _put_linear(out, f"{target}.attention_layernorm", params, f"{source}.attn_ln")
        _put_attention(out, f"{target}.attention", params, f"{source}.attn")
        _put_linear(out, f"{target}.mlp_layernorm", params, f"{source}.mlp_ln")
        _put_mlp(out, f"{target}.mlp", params, f"{source}.mlp")
    _put_linear(out, "transformer.ln_f", params, "encoder.ln_post")
    return out


def decoder_weights(dims: WhisperDims, params: Params) -> dict[str, torch.Tensor]:
    embedding = params["decoder.token_embedding.weight"]
    out = {
        "transformer.vocab_embedding.weight": embedding,
        "transformer.position_embedding.weight": params["decoder.positional_embedding"],
        "lm_head.weight": embedding.clone(),  # Whisper ties its output projection to the token embedding
    }
    for i in range(dims.n_text_layer):
        target, source = f"transformer.layers.{i}", f"decoder.blocks.{i}"
        _put_linear(out, f"{target}.self_attention_layernorm", params, f"{source}.attn_ln")
        _put_attention(out, f"{target}.self_attention", params, f"{source}.attn")
        _put_linear(out, f"{target}.cross_attention_layernorm", params, f"{source}.cross_attn_ln")
        _put_attention(out, f"{target}.cross_attention", params, f"{source}.cross_attn")
        _put_linear(out, f"{target}.mlp_layernorm", params, f"{source}.mlp_ln")
        _put_mlp(out, f"{target}.mlp", params, f"{source}.mlp")
    _put_linear(out, "transformer.ln_f", params, "decoder.ln")
    return out
