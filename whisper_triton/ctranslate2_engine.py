"""Whisper on CTranslate2 (CPU, or a CUDA GPU without a build step): the `WhisperEngine` of `make serve`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from whisper_triton.engine import Alignment, Generation


def usable_cores() -> int:
    """Cores this process may run on. CTranslate2's own default is 4 threads whatever the machine: on
    fewer cores its OpenMP threads wait on each other."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class CTranslate2Engine:
    """Whisper on CTranslate2: int8 on CPU by default, float16 on a CUDA GPU.

    `inter_threads` replicas share the weights; calls from that many threads run in parallel, each on
    `intra_threads` cores. The encoder runs `encode_batch` windows per call: on CPU its cost per window
    grows with larger batches (cache), while generation gains from them, so a batch is encoded in small
    pieces and generated whole.
    """

    def __init__(
        self,
        model_dir: Path,
        device: str = "cpu",
        compute_type: str = "int8",
        intra_threads: int = 0,
        inter_threads: int = 1,
        encode_batch: int = 2,
    ) -> None:
        import ctranslate2

        self._ct2 = ctranslate2
        self.encode_batch = max(1, encode_batch)
        self.model = ctranslate2.models.Whisper(
            str(model_dir),
            device=device,
            compute_type=compute_type,
            intra_threads=intra_threads if intra_threads > 0 else usable_cores(),
            inter_threads=inter_threads,
        )
        self.n_mels = int(self.model.n_mels)
        self.is_multilingual = bool(self.model.is_multilingual)
        self.num_languages = int(self.model.num_languages)
        self._to_cpu = device != "cpu"

    def encode(self, features: np.ndarray) -> Any:
        array = np.ascontiguousarray(features, dtype=np.float32)
        # On a GPU the encoder output comes back to the host so that sub-batches can be sliced.
        pieces = [
            self.model.encode(self._ct2.StorageView.from_array(array[i : i + self.encode_batch]), to_cpu=self._to_cpu)
            for i in range(0, len(array), self.encode_batch)
        ]
        return pieces[0] if len(pieces) == 1 else self.join(pieces)

    def take(self, encoded: Any, indices: list[int]) -> Any:
        subset = np.ascontiguousarray(np.asarray(encoded)[indices])
        return self._ct2.StorageView.from_array(subset)

    def join(self, parts: list[Any]) -> Any:
        return self._ct2.StorageView.from_array(np.concatenate([np.asarray(part) for part in parts]))

    def detect_language(self, encoded: Any) -> list[list[tuple[str, float]]]:
        results = self.model.detect_language(encoded)
        return [[(token[2:-2], float(prob)) for token, prob in item] for item in results]

    def generate(
        self,
        encoded: Any,
        prompts: list[list[int]],
        temperature: float,
        beam_size: int,
        max_length: int,
    ) -> list[Generation]:
        sampling = temperature > 0
        results = self.model.generate(
            encoded,
            prompts,
            beam_size=1 if sampling else beam_size,
            sampling_temperature=temperature if sampling else 1.0,
            sampling_topk=0 if sampling else 1,
            max_length=max_length,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=[-1],
            max_initial_timestamp_index=50,
        )
        generations = []
        for result in results:
            tokens = list(result.sequences_ids[0])
            # CTranslate2 scores are length-normalised log-probabilities; OpenAI's avg_logprob
            # divides the cumulative log-probability by the length plus the end token.
            cumulative = float(result.scores[0]) * len(tokens)
            generations.append(
                Generation(
                    tokens=tokens,
                    avg_logprob=cumulative / (len(tokens) + 1),
                    no_speech_prob=float(result.no_speech_prob),
                )
            )
        return generations

    def align(
        self,
        encoded: Any,
        start_sequence: list[int],
        text_tokens: list[list[int]],
        num_frames: list[int],
    ) -> list[Alignment]:
        results = self.model.align(
            encoded, start_sequence, text_tokens, num_frames, median_filter_width=7
        )
        return [
            Alignment(
                pairs=[(int(a), int(b)) for a, b in result.alignments],
                token_probs=[float(p) for p in result.text_token_probs],
            )
            for result in results
        ]
