"""TensorRT-LLM's Whisper forward passes rebuilt in plain PyTorch from a converted checkpoint's tensors, and a
small random Hugging Face Whisper to convert: what tests/unit/test_build_engines_convert.py and the bare-GPU-host
checks (tests/gpu/bare_host.py, which must run without pytest) compare. Any device, any dtype.

The passes follow TensorRT-LLM's Whisper encoder and decoder: fused [query; key; value] rows, pre-layernorm
blocks, tied lm_head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import WhisperConfig, WhisperForConditionalGeneration

Weights = dict[str, torch.Tensor]
WIDTH, HEADS, LAYERS = 64, 4, 2


def random_whisper(vocab_size: int, n_mels: int) -> WhisperForConditionalGeneration:
    torch.manual_seed(vocab_size + n_mels)
    config = WhisperConfig(
        vocab_size=vocab_size, num_mel_bins=n_mels, d_model=WIDTH, encoder_layers=LAYERS, decoder_layers=LAYERS,
        encoder_attention_heads=HEADS, decoder_attention_heads=HEADS, encoder_ffn_dim=4 * WIDTH,
        decoder_ffn_dim=4 * WIDTH, max_source_positions=1500, max_target_positions=448,
    )  # fmt: skip
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():  # HF starts biases at 0 and norms at 1: randomise them so that any mix-up shows
        for name, parameter in model.named_parameters():
            if "embed_positions" in name and "encoder" in name:
                continue
            if "layer_norm" in name and name.endswith("weight"):
                parameter.copy_(1 + 0.2 * torch.randn_like(parameter))
            else:
                parameter.normal_(0.0, 0.2)
    return model


def _norm(x: torch.Tensor, w: Weights, prefix: str, eps: float = 1e-5) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], w[f"{prefix}.weight"], w[f"{prefix}.bias"], eps)


def _linear(x: torch.Tensor, w: Weights, prefix: str) -> torch.Tensor:
    return F.linear(x, w[f"{prefix}.weight"], w[f"{prefix}.bias"])


def _attention(
    x: torch.Tensor, memory: torch.Tensor, w: Weights, prefix: str, heads: int, causal: bool
) -> torch.Tensor:
    """TensorRT-LLM's fused qkv: rows [0, d) are the query, [d, 2d) the key, [2d, 3d) the value."""
    d = x.shape[-1]
    weight, bias = w[f"{prefix}.qkv.weight"], w[f"{prefix}.qkv.bias"]
    q, k, v = (
        F.linear(inputs, weight[i * d : (i + 1) * d], bias[i * d : (i + 1) * d]).unflatten(-1, (heads, -1))
        for i, inputs in enumerate((x, memory, memory))
    )
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal).transpose(1, 2).flatten(-2)
    return _linear(out, w, f"{prefix}.dense")


def _mlp(x: torch.Tensor, w: Weights, prefix: str) -> torch.Tensor:
    return _linear(F.gelu(_linear(x, w, f"{prefix}.fc")), w, f"{prefix}.proj")


def trtllm_encoder(w: Weights, config: dict[str, object], mel: torch.Tensor) -> torch.Tensor:
    heads, layers = int(str(config["num_attention_heads"])), int(str(config["num_hidden_layers"]))

    def conv(x: torch.Tensor, name: str, stride: int) -> torch.Tensor:
        weight = w[f"transformer.{name}.weight"].squeeze(-1)  # [out, in, 3, 1]: a 2-D kernel of width 1
        return F.gelu(F.conv1d(x, weight, w[f"transformer.{name}.bias"], stride=stride, padding=1))

    x = conv(conv(mel, "conv1", 1), "conv2", 2).transpose(1, 2)
    x = x + w["transformer.position_embedding.weight"][: x.shape[1]]
    for i in range(layers):
        prefix = f"transformer.layers.{i}"
        h = _norm(x, w, f"{prefix}.attention_layernorm")
        x = x + _attention(h, h, w, f"{prefix}.attention", heads, causal=False)
        x = x + _mlp(_norm(x, w, f"{prefix}.mlp_layernorm"), w, f"{prefix}.mlp")
    return _norm(x, w, "transformer.ln_f")


def trtllm_decoder(w: Weights, config: dict[str, object], ids: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    heads, layers = int(str(config["num_attention_heads"])), int(str(config["num_hidden_layers"]))
    eps = float(str(config["norm_epsilon"]))
    x = w["transformer.vocab_embedding.weight"][ids] + w["transformer.position_embedding.weight"][: ids.shape[1]]
    for i in range(layers):
        prefix = f"transformer.layers.{i}"
        h = _norm(x, w, f"{prefix}.self_attention_layernorm", eps)
        x = x + _attention(h, h, w, f"{prefix}.self_attention", heads, causal=True)
        h = _norm(x, w, f"{prefix}.cross_attention_layernorm", eps)
        x = x + _attention(h, audio, w, f"{prefix}.cross_attention", heads, causal=False)
        x = x + _mlp(_norm(x, w, f"{prefix}.mlp_layernorm", eps), w, f"{prefix}.mlp")
    return F.linear(_norm(x, w, "transformer.ln_f", eps), w["lm_head.weight"])
