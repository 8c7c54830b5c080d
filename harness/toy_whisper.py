"""A Whisper-like toy model for the TensorRT-LLM engines' tests (both routes): the features name a script,
which the model follows token by token, and real Whisper tokenizers (the embedded `base` and `tiny.en`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from whisper_triton.decoding import DecodeOptions, WindowJob
from whisper_triton.engine import Alignment
from whisper_triton.models import ModelInfo, ResolvedModel, read_model_info, resolve_model
from whisper_triton.text import WhisperTokenizer

ENCODER_FRAMES = 3000


MULTILINGUAL_VOCAB = 51865
ENGLISH_VOCAB = 51864


# The model: (features of one window, its tokens so far) -> logits [1, 1, vocabulary].
ToyModel = Callable[[torch.Tensor, list[int]], torch.Tensor]


@dataclass(frozen=True)
class Script:
    language: str = "en"
    segments: tuple[tuple[float, float, str], ...] = ()
    silent: bool = False
    margin: float = 20.0
    first_token: int | None = None  # what the model would emit first, whatever the rules


def load(name: str) -> tuple[WhisperTokenizer, ResolvedModel, ModelInfo]:
    resolved = resolve_model(name)
    info = read_model_info(resolved.path)
    return WhisperTokenizer(resolved.path / "tokenizer.json", info.multilingual, info.num_languages), resolved, info


def ts(tokenizer: WhisperTokenizer, seconds: float) -> int:
    return tokenizer.timestamp_begin + round(seconds / 0.02)


def script_tokens(tokenizer: WhisperTokenizer, script: Script) -> list[int]:
    if script.silent:
        return [ts(tokenizer, 0.0), tokenizer.eot]
    tokens: list[int] = []
    for start, end, text in script.segments:
        tokens += [ts(tokenizer, start), *tokenizer.encode(text), ts(tokenizer, end)]
    return [*tokens, tokenizer.eot]


def toy_model(tokenizer: WhisperTokenizer, scripts: dict[int, Script], width: int) -> ToyModel:
    base_tokenizer = tokenizer.get()

    def model(features: torch.Tensor, tokens: list[int]) -> torch.Tensor:
        script = scripts[int(features[0, 0])]  # features (3000, n_mels): the script id at frame 0, mel 0
        logits = torch.zeros(1, 1, width)
        sot = tokens.index(base_tokenizer.sot)
        if len(tokens) == sot + 1:  # the start-of-transcript position
            if tokenizer.multilingual:
                logits[0, 0, base_tokenizer.tokenizer.token_to_id(f"<|{script.language}|>")] = 8.0
                logits[0, 0, base_tokenizer.tokenizer.token_to_id("<|de|>")] = 6.0
            logits[0, 0, base_tokenizer.no_speech] = 14.0 if script.silent else -4.0
            if tokenizer.multilingual:
                return logits
        start = sot + 1
        while start < len(tokens) and tokenizer.eot < tokens[start] < tokenizer.timestamp_begin:
            start += 1  # language, task, no timestamps
        k = len(tokens) - start
        target = script_tokens(tokenizer, script)
        if k == 0 and script.first_token is not None:
            logits[0, 0, script.first_token] = script.margin
            return logits
        margin = 1.0 if script.silent else script.margin
        logits[0, 0, target[k] if k < len(target) else tokenizer.eot] = margin
        return logits

    return model


def windows(scripts: list[int], n_mels: int = 80) -> np.ndarray:
    features = np.full((len(scripts), n_mels, ENCODER_FRAMES), -0.5, dtype=np.float32)
    for i, script in enumerate(scripts):
        features[i, 0, 0] = script  # read back at [frame 0, mel 0] of the transposed features
    return features


def job(script: int, n_mels: int = 80, **options: Any) -> WindowJob:
    return WindowJob(windows([script], n_mels)[0], ENCODER_FRAMES, DecodeOptions(**options))


def texts(result: Any) -> list[tuple[float, float, str]]:
    return [(s.start, s.end, s.text) for s in result.segments]


@dataclass
class FakeAligner:
    calls: list[tuple[Any, ...]]
    n_mels: int = 80
    is_multilingual: bool = True
    num_languages: int = 99

    def encode(self, features: np.ndarray) -> Any:
        self.calls.append(("encode", features.shape, features.dtype))
        return features

    def align(self, encoded: Any, start: list[int], tokens: list[list[int]], frames: list[int]) -> list[Alignment]:
        self.calls.append(("align", start, frames))
        return [Alignment(pairs=[(i, 10 * i) for i in range(len(t) + 1)], token_probs=[0.9] * len(t))
                for t in tokens]
