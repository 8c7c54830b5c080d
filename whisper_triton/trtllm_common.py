"""What both TensorRT-LLM routes share: settings checks, Whisper's logit rules, windows and their results.

The engine route (`trtllm_engine.py`, engines of `trtllm-build` on the C++ executor) and the PyTorch route
(`trtllm_torch_engine.py`, the Hugging Face checkpoint on TensorRT-LLM's PyTorch backend) differ only in how a
window reaches the runtime and how the rules are called. Both send the prompt up to `<|startoftranscript|>`
and force the rest of the start sequence (language, task) from the logits rules, so that the first step
sees the logits at the start-of-transcript position, where OpenAI's Whisper reads `no_speech_prob` and
detects the language; then suppressed tokens, a blank first token, and the timestamp rules (pairs,
monotonic times, the first timestamp within 1 s, timestamps when they outweigh text) as OpenAI's
`ApplyTimestampRules`. Word timestamps need cross-attention weights, which neither runtime exposes: `align`
runs on a CTranslate2 CUDA model of the same checkpoint (`WordAligner`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

import numpy as np
import torch

from whisper_triton.engine import Alignment, Generation, WhisperEngine
from whisper_triton.settings import ModelSettings, SettingsError
from whisper_triton.trtllm_route import ROUTES

if TYPE_CHECKING:
    from whisper_triton.models import ResolvedModel
    from whisper_triton.text import WhisperTokenizer

log = logging.getLogger("whisper_triton.trtllm")

ENGINES = ("ctranslate2", "tensorrt_llm")
ALIGNERS = ("ctranslate2", "off")
ENCODER_FRAMES = 3000  # log-mel frames of a window; the encoder's output is half as long
MAX_INITIAL_TIMESTAMP_INDEX = 50  # the first timestamp is at most 1 s into the window
RESPONSE_TIMEOUT = timedelta(minutes=10)
CANCEL_TIMEOUT = timedelta(seconds=5)  # for the final response of a cancelled request


class TensorRTLLMError(Exception):
    pass


def check_engine_settings(settings: ModelSettings) -> None:
    """Fails with the variable's name when an engine setting is unusable."""
    checks = {
        "WHISPER_ENGINE": (settings.engine in ENGINES, f"one of {', '.join(ENGINES)}"),
        "WHISPER_TRTLLM_ROUTE": (settings.trtllm_route in ROUTES, f"one of {', '.join(ROUTES)}"),
        "WHISPER_TRTLLM_ENGINE_DIR": (
            settings.engine != "tensorrt_llm" or bool(settings.trtllm_engine_dir),
            "what `python -m build_engines all` prepared, engines or a Hugging Face checkpoint (needed with "
            "WHISPER_ENGINE=tensorrt_llm)",
        ),
        "WHISPER_TRTLLM_MAX_BATCH_SIZE": (settings.trtllm_max_batch_size >= 0, "0 (the engine's) or more"),
        "WHISPER_TRTLLM_KV_CACHE_FRACTION": (0 < settings.trtllm_kv_cache_fraction < 1, "between 0 and 1"),
        "WHISPER_TRTLLM_CROSS_KV_CACHE_FRACTION": (
            0 < settings.trtllm_cross_kv_cache_fraction < 1, "between 0 and 1"),
        "WHISPER_TRTLLM_ALIGNER": (settings.trtllm_aligner in ALIGNERS, f"one of {', '.join(ALIGNERS)}"),
    }
    for variable, (ok, expected) in checks.items():
        if not ok:
            raise SettingsError(f"Invalid value for {variable}: expected {expected}.")


def languages_of(vocab_size: int, num_languages: int | None = None) -> int:
    """Languages of a vocabulary: 99 up to large-v2, 100 from large-v3 on; 1 for English-only models."""
    if vocab_size < 51865:
        return 1
    return num_languages if num_languages is not None else vocab_size - 51765 - int(vocab_size >= 51865)


@dataclass(frozen=True)
class Vocabulary:
    """The token ids Whisper's decoding rules use."""

    size: int
    eot: int
    sot: int
    sot_prev: int
    no_timestamps: int
    timestamp_begin: int
    no_speech: int | None
    suppress: tuple[int, ...]  # never sampled (non-speech symbols and the special tokens)
    blank: tuple[int, ...]  # not the first sampled token: a space or the end of text
    language_codes: tuple[str, ...]
    language_ids: tuple[int, ...]

    @classmethod
    def of(cls, tokenizer: WhisperTokenizer, size: int) -> Vocabulary:
        base = tokenizer.get()
        specials = (base.transcribe, base.translate, base.sot, base.sot_prev, base.sot_lm, base.no_speech)
        suppress = {*base.non_speech_tokens, *(t for t in specials if t is not None)}
        codes = tuple(tokenizer.languages) if tokenizer.multilingual else ()
        ids = tuple(base.tokenizer.token_to_id(f"<|{code}|>") for code in codes)
        return cls(
            size=size,
            eot=base.eot,
            sot=base.sot,
            sot_prev=base.sot_prev,
            no_timestamps=base.no_timestamps,
            timestamp_begin=base.timestamp_begin,
            no_speech=base.no_speech,
            suppress=tuple(sorted(suppress)),
            blank=(*base.encode(" "), base.eot),
            language_codes=codes,
            language_ids=ids,
        )


@dataclass
class Window:
    """One runtime request and what its logits rules need and capture."""

    inputs: list[int]  # the decoder input ids: the prompt up to <|startoftranscript|>
    forced: list[int]  # the rest of the start sequence, forced at the first steps
    max_tokens: int
    timestamps: bool
    detect: bool = False  # capture the language distribution at the first step
    no_speech: torch.Tensor | None = None
    languages: torch.Tensor | None = None
    error: str | None = None


@dataclass
class Encoded:
    """Windows ready for the runtime, which runs the encoder inside each request."""

    host: np.ndarray  # (batch, n_mels, 3000) float32, for the word aligner
    items: list[torch.Tensor] = field(default_factory=list)  # one per window, in the form the runtime takes

    def take(self, indices: list[int]) -> Encoded:
        return Encoded(self.host[indices], [self.items[i] for i in indices])

    @staticmethod
    def join(parts: list[Encoded]) -> Encoded:
        return Encoded(np.concatenate([part.host for part in parts]), [item for part in parts for item in part.items])


def check_features(features: np.ndarray, n_mels: int) -> np.ndarray:
    if features.ndim != 3 or features.shape[1:] != (n_mels, ENCODER_FRAMES):
        raise ValueError(f"features must be (batch, {n_mels}, {ENCODER_FRAMES}), got {features.shape}")
    return np.ascontiguousarray(features, dtype=np.float32)


def make_window(vocabulary: Vocabulary, prompt: list[int], max_length: int, max_input_len: int,
                max_seq_len: int) -> Window:
    """The request of a prompt: sent up to <|startoftranscript|>, the rest forced; previous text trimmed to fit."""
    split = prompt.index(vocabulary.sot) + 1 if vocabulary.sot in prompt else len(prompt)
    inputs, forced = list(prompt[:split]), list(prompt[split:])
    if len(inputs) > max_input_len:  # keep the most recent previous text
        keep = max(0, max_input_len - 2)
        inputs = [vocabulary.sot_prev, *inputs[-1 - keep:-1], vocabulary.sot] if keep else [vocabulary.sot]
    budget = min(max_length, max_seq_len) - len(inputs)
    return Window(inputs, forced, max(len(forced) + 1, budget), vocabulary.no_timestamps not in prompt)


def detection_window(vocabulary: Vocabulary) -> Window:
    """A one-step request of <|startoftranscript|> alone, whose rules capture the language distribution."""
    return Window([vocabulary.sot], [], 1, timestamps=False, detect=True)


def generation_of(vocabulary: Vocabulary, window: Window, tokens: list[int], cumulative: float) -> Generation:
    """The generated text tokens of a window (forced start and end of text removed) and OpenAI's avg_logprob:
    the log-probability summed over the generated tokens and the end of text, over their count."""
    tokens = list(tokens)
    if tokens[: len(window.forced)] == window.forced:
        tokens = tokens[len(window.forced):]
    while tokens and tokens[-1] == vocabulary.eot:
        tokens.pop()
    no_speech = float(window.no_speech.item()) if window.no_speech is not None else 0.0
    return Generation(tokens=tokens, avg_logprob=cumulative / (len(tokens) + 1), no_speech_prob=no_speech)


def language_rankings(vocabulary: Vocabulary, windows: Sequence[Window]) -> list[list[tuple[str, float]]]:
    rankings = []
    for window in windows:
        if window.languages is None:
            raise TensorRTLLMError("the runtime returned without running the language detection step")
        probs = window.languages.float().cpu().tolist()
        pairs = zip(vocabulary.language_codes, probs, strict=True)
        rankings.append(sorted(((code, float(p)) for code, p in pairs), key=lambda pair: -pair[1]))
    return rankings


class WordAligner:
    """Word timestamps from a CTranslate2 model of the same checkpoint, created on the first window with words."""

    def __init__(self, factory: Callable[[], WhisperEngine] | None) -> None:
        self.factory = factory
        self._aligner: WhisperEngine | None = None

    def align(self, encoded: Encoded, start_sequence: list[int], text_tokens: list[list[int]],
              num_frames: list[int]) -> list[Alignment]:
        if self._aligner is None and self.factory is not None:
            self._aligner = self.factory()
            self.factory = None
        if self._aligner is None:
            log.warning("word timestamps asked with WHISPER_TRTLLM_ALIGNER=off: segments come without words")
            return [Alignment(pairs=[], token_probs=[]) for _ in text_tokens]
        return self._aligner.align(self._aligner.encode(encoded.host), start_sequence, text_tokens, num_frames)


class WindowEngine:
    """The WhisperEngine methods both TensorRT-LLM routes answer alike: a batch is its `Encoded` windows,
    the language comes from a detection pass through the route's `_run` (Whisper's logit rules read it at
    the start of transcript), and words from the CTranslate2 aligner. A route sets `vocabulary`,
    `is_multilingual` and `_aligner`, and runs windows in `_run`."""

    vocabulary: Vocabulary
    is_multilingual: bool
    _aligner: WordAligner

    def _run(self, encoded: Encoded, windows: list[Window], temperature: float) -> list[object]:
        raise NotImplementedError

    def take(self, encoded: Encoded, indices: list[int]) -> Encoded:
        return encoded.take(indices)

    def join(self, parts: list[Encoded]) -> Encoded:
        return Encoded.join(parts)

    def detect_language(self, encoded: Encoded) -> list[list[tuple[str, float]]]:
        if not self.is_multilingual:
            return [[("en", 1.0)] for _ in encoded.items]
        windows = [detection_window(self.vocabulary) for _ in encoded.items]
        self._run(encoded, windows, temperature=0.0)
        return language_rankings(self.vocabulary, windows)

    def align(self, encoded: Encoded, start_sequence: list[int], text_tokens: list[list[int]],
              num_frames: list[int]) -> list[Alignment]:
        return self._aligner.align(encoded, start_sequence, text_tokens, num_frames)


def aligner_factory(settings: ModelSettings, resolved: ResolvedModel) -> Callable[[], WhisperEngine] | None:
    """WHISPER_TRTLLM_ALIGNER: the CTranslate2 CUDA model of `resolved` (float16, GPU 0), or none."""
    if settings.trtllm_aligner != "ctranslate2":
        return None

    def aligner() -> WhisperEngine:
        from whisper_triton.ctranslate2_engine import CTranslate2Engine

        return CTranslate2Engine(resolved.path, device="cuda", compute_type="float16")

    return aligner


class LogitRules:
    """OpenAI Whisper's logit filters, vectorised over the rows (beams) of all requests of a step."""

    def __init__(self, vocabulary: Vocabulary) -> None:
        self.vocabulary = vocabulary
        self._masks: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def _static(self, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        key = (width, str(device))
        if key not in self._masks:
            v = self.vocabulary
            index = torch.arange(width, device=device)
            never = index >= v.size  # the engine's vocabulary may be padded
            never[[t for t in (*v.suppress, v.no_timestamps) if t < width]] = True
            blank = torch.zeros(width, dtype=torch.bool, device=device)
            blank[list(v.blank)] = True
            self._masks[key] = (index, never, blank)
        return self._masks[key]

    def row(self, window: Window, tokens: list[int], width: int) -> tuple[int, int, int, int, int, int]:
        """(forced token or -1, text below this id banned, timestamps allowed in [lo, hi), blank banned,
        timestamps preferred when they outweigh text)."""
        v = self.vocabulary
        step = len(tokens) - len(window.inputs)
        if 0 <= step < len(window.forced):
            return window.forced[step], 0, width, width, 0, 0
        sampled = tokens[len(window.inputs) + len(window.forced):]
        first = int(not sampled)
        if not window.timestamps:
            return -1, 0, width, width, first, 0
        begin = v.timestamp_begin
        low, ts_lo, ts_hi = 0, begin, width
        last = len(sampled) >= 1 and sampled[-1] >= begin
        penultimate = len(sampled) < 2 or sampled[-2] >= begin
        if last:
            if penultimate:
                ts_lo = width  # two timestamps in a row: text must follow
            else:
                low = v.eot  # a segment just closed: a timestamp (or the end) must follow
        previous = next((t for t in reversed(sampled) if t >= begin), None)
        if previous is not None:  # times never go back
            ts_lo = max(ts_lo, previous if last and not penultimate else previous + 1)
        if first:
            low = begin
            ts_hi = begin + MAX_INITIAL_TIMESTAMP_INDEX + 1
        return -1, low, ts_lo, ts_hi, first, 1

    def apply(
        self, windows: Sequence[Window | None], logits: list[torch.Tensor], token_ids: list[list[list[int]]]
    ) -> None:
        ours = [(w, t, beams) for w, t, beams in zip(windows, logits, token_ids, strict=True) if w is not None]
        if not ours:
            return
        width = ours[0][1].shape[-1]
        rows: list[torch.Tensor] = []
        params: list[tuple[int, int, int, int, int, int]] = []
        firsts: list[tuple[Window, int]] = []
        for window, tensor, beams in ours:
            view = tensor.reshape(-1, width)
            if beams and len(beams[0]) == len(window.inputs):
                firsts.append((window, sum(r.shape[0] for r in rows)))
            for r in range(view.shape[0]):
                params.append(self.row(window, beams[min(r, len(beams) - 1)], width))
            rows.append(view)
        raw = torch.cat(rows).float()
        self._capture(raw, firsts)
        masked = self._mask(raw, params, width)
        offset = 0
        for (_, tensor, _), view in zip(ours, rows, strict=True):
            tensor.copy_(masked[offset: offset + view.shape[0]].reshape(tensor.shape))
            offset += view.shape[0]

    def _capture(self, raw: torch.Tensor, firsts: list[tuple[Window, int]]) -> None:
        """At the start-of-transcript position: P(no speech) and the language distribution."""
        if not firsts:
            return
        v = self.vocabulary
        probs = torch.softmax(raw[[row for _, row in firsts]], dim=-1)
        languages = list(v.language_ids)
        for i, (window, row) in enumerate(firsts):
            if v.no_speech is not None:
                window.no_speech = probs[i, v.no_speech]
            if window.detect and languages:
                window.languages = torch.softmax(raw[row, languages], dim=-1)

    def _mask(self, x: torch.Tensor, params: list[tuple[int, int, int, int, int, int]], width: int) -> torch.Tensor:
        v = self.vocabulary
        index, never, blank_ids = self._static(width, x.device)
        forced, low, ts_lo, ts_hi, blank, prefer = torch.tensor(params, dtype=torch.long).to(x.device).unbind(1)
        banned = never[None, :] | (index[None, :] < low[:, None])
        stamps = index[None, :] >= v.timestamp_begin
        banned |= stamps & ((index[None, :] < ts_lo[:, None]) | (index[None, :] >= ts_hi[:, None]))
        banned |= blank.bool()[:, None] & blank_ids[None, :]
        x = x.masked_fill(banned, float("-inf"))
        if any(p[5] for p in params):  # decided on the host: no device sync in the step
            logprobs = torch.log_softmax(x, dim=-1)
            stamp = torch.logsumexp(logprobs[:, v.timestamp_begin:], dim=-1)
            text = logprobs[:, : v.timestamp_begin].max(dim=-1).values
            to_stamp = prefer.bool() & (stamp > text)
            x[:, : v.timestamp_begin] = x[:, : v.timestamp_begin].masked_fill(to_stamp[:, None], float("-inf"))
        only = torch.where(index[None, :] == forced[:, None], 0.0, float("-inf"))
        return torch.where((forced >= 0)[:, None], only, x)
