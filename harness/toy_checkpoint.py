"""A tiny Hugging Face transformers Whisper checkpoint (random weights, tiny.en's tokenizer): something to
convert with CTranslate2 in tests of model management, in a second and a few megabytes."""

from __future__ import annotations

import shutil
from pathlib import Path

from whisper_triton.models import resolve_model


def write_toy_checkpoint(target: Path) -> Path:
    """Writes the checkpoint into `target` (config.json, weights, tokenizer.json); returns `target`."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    english = resolve_model("tiny.en").path
    config = WhisperConfig(vocab_size=51864, num_mel_bins=80, d_model=64, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128,
                           decoder_ffn_dim=128, max_source_positions=1500, max_target_positions=448,
                           decoder_start_token_id=50257, eos_token_id=50256, pad_token_id=50256,
                           bos_token_id=50256)
    torch.manual_seed(0)
    WhisperForConditionalGeneration(config).save_pretrained(target)
    for name in ("tokenizer.json", "vocabulary.txt"):
        if (english / name).is_file():
            shutil.copyfile(english / name, target / name)
    return target
