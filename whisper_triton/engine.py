"""The Whisper engine interface: what every engine implements, and what it returns.

An engine only runs the network: encode a batch of log-mel windows, detect languages, generate
tokens from prompts, align text tokens to audio frames. Prompts, temperature fallback, timestamps
and words are shared code (`whisper_triton.decoding`), so every engine gives the same features.
Implementations: `ctranslate2_engine` (CPU, or GPU without a build step), `trtllm_engine` (TensorRT-LLM
engines from `build_engines`) and `trtllm_torch_engine` (TensorRT-LLM's PyTorch backend).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class Generation:
    tokens: list[int]  # generated ids, prompt and end-of-text excluded
    avg_logprob: float
    no_speech_prob: float


@dataclass(frozen=True)
class Alignment:
    pairs: list[tuple[int, int]]  # (text token index, encoder frame index), a monotonic DTW path
    token_probs: list[float]


class WhisperEngine(Protocol):
    """What the shared decoding code needs from an engine. Batch sizes are the caller's."""

    n_mels: int
    is_multilingual: bool
    num_languages: int

    def encode(self, features: np.ndarray) -> Any:
        """Encodes float32 features of shape (batch, n_mels, 3000); returns an opaque batch state."""

    def take(self, encoded: Any, indices: list[int]) -> Any:
        """The encoded state of a sub-batch."""

    def join(self, parts: list[Any]) -> Any:
        """One encoded state of the windows of `parts`, in that order."""

    def detect_language(self, encoded: Any) -> list[list[tuple[str, float]]]:
        """Per item, (language code, probability) pairs, most probable first."""

    def generate(
        self,
        encoded: Any,
        prompts: list[list[int]],
        temperature: float,
        beam_size: int,
        max_length: int,
    ) -> list[Generation]:
        """Decodes one sequence per item, greedy or beam at temperature 0, sampled above it."""

    def align(
        self,
        encoded: Any,
        start_sequence: list[int],
        text_tokens: list[list[int]],
        num_frames: list[int],
    ) -> list[Alignment]:
        """Cross-attention DTW alignment of each item's text tokens to its audio frames."""
