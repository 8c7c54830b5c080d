"""Whisper on TensorRT-LLM's PyTorch backend (GPU), behind the same `WhisperEngine` protocol: no engine build.

The Hugging Face checkpoint is served as it is through TensorRT-LLM's LLM API
(`tensorrt_llm.llmapi.LLM(<checkpoint>, backend="pytorch")`), whose Whisper model runs encoder and decoder with
in-flight batching. Every window is one `generate_async` request; prompts, temperature fallback, timestamps,
language detection and words stay in the shared code, and Whisper's logit rules are the engine route's
(`whisper_triton.trtllm_common`). What TensorRT-LLM's own sources say, and what this module does about it:

- `tensorrt_llm/_torch/models/modeling_whisper.py` (pull request 16141): `WhisperInputProcessor` turns
  `{"prompt": text, "multi_modal_data": {"audio": ...}}` into the decoder prompt and
  `multimodal_data["audio"] = {"encoder_input_features": <[1, ...] tensor>, "encoder_output_len": 1500}`. It takes
  no token ids and refuses a prompt that does not start with `<|startoftranscript|>`; our prompts may start with
  `<|startofprev|>` and previous text, and our windows are log-mel features already. `WindowInputs` therefore
  stands in for it as `llm.input_processor` and hands the runtime the same fields, with the window's log-mel
  as a `[1, n_mels, 3000]` tensor in the model's dtype: the mel layout the encoder takes (a later version of
  the file also takes a raw waveform, `[1, samples]`, and casts the features to its own dtype).
- The decoder runner applies a request's logits processors before sampling (they keep a request off the
  in-graph sampling tier), one request at a time, as `processor(request_id, logits[beam, 1, vocab],
  token_ids per beam, None, None)`, and checks that the callable takes 4 or 5 parameters. Token ids include
  the prompt, so the first call is at the start-of-transcript position, as on the engine route.
- With one GPU, the LLM API runs its worker in another process unless `TLLM_WORKER_USE_SINGLE_PROCESS=1`
  (`tensorrt_llm/executor/executor.py`, `tensorrt_llm/llmapi/utils.py`); the rules capture the no-speech
  probability and the language distribution into the window, so they must run in this process: the engine
  sets that variable before it creates the LLM, and a call whose rules never ran here fails.
- Log-probabilities: the PyTorch backend's default `LogprobMode.RAW` takes the logits the processors left,
  before temperature (TensorRT-LLM pull request 12514 documents it, against the TensorRT backend's tempered
  ones): what OpenAI's `avg_logprob` sums, at every temperature. Forced tokens count 0 (their row allows only them).

Word timestamps come from a CTranslate2 CUDA copy of the same checkpoint, as on the engine route. Nothing here has
run on a GPU: the calls are checked against a fake with the signatures found in those sources
(`tests/unit/test_trtllm_torch_engine.py`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from whisper_triton.engine import Generation, WhisperEngine
from whisper_triton.settings import ModelSettings
from whisper_triton.trtllm_common import (
    CANCEL_TIMEOUT,
    RESPONSE_TIMEOUT,
    Encoded,
    LogitRules,
    TensorRTLLMError,
    Vocabulary,
    Window,
    WindowEngine,
    WordAligner,
    aligner_factory,
    check_engine_settings,
    check_features,
    generation_of,
    languages_of,
    make_window,
)

if TYPE_CHECKING:
    from whisper_triton.models import ModelInfo, ResolvedModel
    from whisper_triton.text import WhisperTokenizer

log = logging.getLogger("whisper_triton.trtllm_torch_engine")

SINGLE_PROCESS = "TLLM_WORKER_USE_SINGLE_PROCESS"
DEFAULT_MAX_BATCH_SIZE = 64
PROMPT_TOKEN_IDS = "prompt_token_ids"  # where a window's prompt travels to `WindowInputs` (mm_processor_kwargs)
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def is_checkpoint(folder: Path) -> bool:
    config = folder / "config.json"
    try:
        return config.is_file() and json.loads(config.read_text(encoding="utf-8")).get("model_type") == "whisper"
    except (OSError, ValueError):
        return False


def find_checkpoint_dir(root: Path, model: str) -> Path:
    """The Hugging Face checkpoint of `model`: `root` itself, `root/hf`, `root/<model id>` or `root/<model id>/hf`
    (where `python -m build_engines all` puts it on the PyTorch route)."""
    for candidate in (root, root / "hf", root / model, root / model / "hf"):
        if is_checkpoint(candidate):
            return candidate
    raise TensorRTLLMError(
        f"No Hugging Face Whisper checkpoint for {model} in {root} (nor in hf/, {model}/ or {model}/hf/ there). "
        f"Fetch it with `python -m build_engines all --route pytorch --model {model} --workdir {root}`."
    )


@dataclass(frozen=True)
class CheckpointConfig:
    """What the runtime needs from the checkpoint's config.json."""

    path: Path
    n_mels: int
    vocab_size: int
    dtype: str
    encoder_positions: int  # max_source_positions: 1500 for every released Whisper
    decoder_positions: int  # max_target_positions: 448

    @property
    def multilingual(self) -> bool:
        return self.vocab_size >= 51865

    @property
    def num_languages(self) -> int:
        return languages_of(self.vocab_size)

    @classmethod
    def read(cls, path: Path) -> CheckpointConfig:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        # transformers 5 writes "dtype", earlier ones "torch_dtype"
        dtype = str(config.get("dtype") or config.get("torch_dtype") or "float16")
        return cls(
            path=path,
            n_mels=int(config.get("num_mel_bins", 80)),
            vocab_size=int(config["vocab_size"]),
            dtype=dtype if dtype in DTYPES else "float16",
            encoder_positions=int(config.get("max_source_positions", 1500)),
            decoder_positions=int(config.get("max_target_positions", 448)),
        )


class WindowInputs:
    """The LLM API's input processor for our windows, in place of TensorRT-LLM's `WhisperInputProcessor`.

    A window comes as `{"prompt": "", "multi_modal_data": {"audio": [features]}, "mm_processor_kwargs":
    {"prompt_token_ids": ids}}` and leaves as the decoder prompt `ids` and Whisper's encoder fields. Hashing is
    off (no placeholder tokens to hash against, as in TensorRT-LLM's own processor); anything else TensorRT-LLM
    asks of its processor goes to the one replaced.
    """

    multimodal_hashing_supported = False
    requires_encoder_features = True

    def __init__(self, replaced: Any, encoder_positions: int) -> None:
        self._replaced = replaced
        self.encoder_positions = encoder_positions

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._replaced, name)

    def get_vocab_size(self) -> int | None:
        return None

    def get_mm_token_ids(self) -> torch.Tensor | None:
        return None

    def get_mm_special_token_ids(self) -> torch.Tensor | None:
        return None

    def __call__(self, inputs: dict[str, Any], sampling_params: Any) -> tuple[list[int], dict[str, Any]]:
        ids = (inputs.get("mm_processor_kwargs") or {}).get(PROMPT_TOKEN_IDS)
        audio = (inputs.get("multi_modal_data") or {}).get("audio")
        if ids is None or audio is None:
            raise ValueError("a Whisper window needs multi_modal_data['audio'] and "
                             "mm_processor_kwargs['prompt_token_ids']")
        features = audio[0] if isinstance(audio, list) else audio
        fields = {"encoder_input_features": features, "encoder_output_len": self.encoder_positions}
        return [int(token) for token in ids], {"multimodal_data": {"audio": fields}}


class WindowRules:
    """One window's logits processor: Whisper's rules at each step (TensorRT-LLM's `LogitsProcessor` signature)."""

    def __init__(self, rules: LogitRules, window: Window) -> None:
        self.rules = rules
        self.window = window
        self.calls = 0

    def __call__(
        self,
        req_id: int,
        logits: torch.Tensor,
        token_ids: list[list[int]],
        stream_ptr: int | None,
        client_id: int | None,
    ) -> None:
        self.calls += 1
        try:
            stream = torch.cuda.ExternalStream(stream_ptr) if stream_ptr and logits.is_cuda else None
            with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                self.rules.apply([self.window], [logits], [token_ids])
        except Exception as exc:  # raising into the runtime would fail the batch of every request; fail ours
            log.exception("Whisper's logits rules failed")
            self.window.error = f"{type(exc).__name__}: {exc}"


def logprob_sum(output: Any, tokens: Sequence[int]) -> float:
    """The log-probability of the generated tokens: per token ({token id: Logprob} per position, the sampled token
    always among them, or plain floats), else the cumulative one (beam search)."""
    per_token = list(output.logprobs or [])
    if per_token and len(per_token) >= len(tokens):
        total = 0.0
        for token, entry in zip(tokens, per_token, strict=False):
            if isinstance(entry, dict):
                if token not in entry:
                    break
                entry = entry[token]
            total += float(getattr(entry, "logprob", entry))
        else:
            return total
    return float(output.cumulative_logprob) if output.cumulative_logprob is not None else 0.0


class TensorRTLLMTorchEngine(WindowEngine):
    """Whisper's Hugging Face checkpoint on one TensorRT-LLM LLM (PyTorch backend, in-flight batching)."""

    def __init__(
        self,
        checkpoint: Path,
        tokenizer: WhisperTokenizer,
        *,
        beam_width: int = 1,
        max_batch_size: int = 0,
        kv_cache_fraction: float = 0.5,
        cross_kv_cache_fraction: float = 0.5,
        device_id: int | None = None,
        aligner: Callable[[], WhisperEngine] | None = None,
    ) -> None:
        self.config = CheckpointConfig.read(checkpoint)
        os.environ[SINGLE_PROCESS] = "1"  # the rules write into our windows: the worker must be this process
        try:
            from tensorrt_llm.llmapi import LLM, KvCacheConfig, SamplingParams, SchedulerConfig
        except ImportError as exc:
            raise TensorRTLLMError(
                f"WHISPER_TRTLLM_ROUTE=pytorch needs TensorRT-LLM's Python package with Whisper in its PyTorch "
                f"backend ({exc}): run in NVIDIA's container nvcr.io/nvidia/tritonserver:<yy.mm>-trtllm-python-py3."
            ) from exc
        self._sampling_params: Any = SamplingParams
        self.n_mels = self.config.n_mels
        self.is_multilingual = self.config.multilingual
        self.num_languages = self.config.num_languages
        self.beam_width = max(1, beam_width)
        self.max_batch_size = max_batch_size or DEFAULT_MAX_BATCH_SIZE
        self.vocabulary = Vocabulary.of(tokenizer, self.config.vocab_size)
        self._rules = LogitRules(self.vocabulary)
        self._seeds = itertools.count(1)
        self._aligner = WordAligner(aligner)
        self._dtype = DTYPES[self.config.dtype]
        if device_id is not None and torch.cuda.is_available():
            torch.cuda.set_device(device_id)
        positions = self.config.encoder_positions
        self._llm = LLM(
            model=str(checkpoint),
            backend="pytorch",
            attn_backend="TRTLLM",  # the attention backend of encoder-decoder models
            dtype=self.config.dtype,
            max_batch_size=self.max_batch_size,
            max_beam_width=self.beam_width,
            # Every request's encoder yields `positions` (1500) states: the cross-attention cache is sized by
            # max_input_len, and one iteration admits as many encoders as max_num_tokens holds.
            max_input_len=positions,
            max_seq_len=positions,
            max_num_tokens=positions * self.max_batch_size,
            enable_chunked_prefill=False,
            kv_cache_config=KvCacheConfig(
                enable_block_reuse=False,
                free_gpu_memory_fraction=kv_cache_fraction,
                cross_kv_cache_fraction=cross_kv_cache_fraction,
            ),
            scheduler_config=SchedulerConfig(use_python_scheduler=True),
        )
        if not hasattr(self._llm, "input_processor"):
            self._llm.shutdown()
            raise TensorRTLLMError("this TensorRT-LLM's LLM has no input_processor to take our windows")
        self._llm.input_processor = WindowInputs(self._llm.input_processor, positions)

    def close(self) -> None:
        self._llm.shutdown()

    # -- the WhisperEngine protocol

    def encode(self, features: np.ndarray) -> Encoded:
        host = check_features(features, self.n_mels)
        return Encoded(host, [torch.from_numpy(host[i: i + 1]).to(self._dtype) for i in range(len(host))])

    def generate(
        self,
        encoded: Encoded,
        prompts: list[list[int]],
        temperature: float,
        beam_size: int,
        max_length: int,
    ) -> list[Generation]:
        # WHISPER_BEAM_SIZE sets the LLM's beam width: greedy passes search that wide, sampled fallbacks sample.
        positions = self.config.decoder_positions
        windows = [make_window(self.vocabulary, prompt, max_length, positions // 2 + 1, positions)
                   for prompt in prompts]
        results = self._run(encoded, windows, temperature)
        generations = []
        for window, result in zip(windows, results, strict=True):
            output = result.outputs[0]
            tokens = list(output.token_ids)
            generations.append(generation_of(self.vocabulary, window, tokens, logprob_sum(output, tokens)))
        return generations

    # -- requests

    def _inputs(self, window: Window, features: torch.Tensor) -> dict[str, Any]:
        return {"prompt": "", "multi_modal_data": {"audio": [features]},
                "mm_processor_kwargs": {PROMPT_TOKEN_IDS: list(window.inputs)}}

    def _sampling(self, window: Window, rules: WindowRules, temperature: float) -> Any:
        eot = self.vocabulary.eot
        common: dict[str, Any] = {"max_tokens": window.max_tokens, "end_id": eot, "pad_id": eot,
                                  "logits_processor": rules, "detokenize": False}
        if temperature <= 0 and self.beam_width > 1:
            return self._sampling_params(**common, temperature=0.0, use_beam_search=True, best_of=self.beam_width, n=1)
        if temperature <= 0:
            return self._sampling_params(**common, temperature=0.0, logprobs=1)
        # the whole distribution (top_k and top_p left to their defaults: off), a fresh seed per attempt
        return self._sampling_params(**common, temperature=temperature, seed=next(self._seeds), logprobs=1)

    def _run(self, encoded: Encoded, windows: list[Window], temperature: float) -> list[Any]:
        processors = [WindowRules(self._rules, window) for window in windows]
        submitted: list[Any] = []
        try:
            for window, rules, features in zip(windows, processors, encoded.items, strict=True):
                submitted.append(self._llm.generate_async(
                    self._inputs(window, features), sampling_params=self._sampling(window, rules, temperature)))
        except Exception as exc:
            self._cancel(submitted)
            raise TensorRTLLMError(f"TensorRT-LLM refused a window: {type(exc).__name__}: {exc}") from exc
        results = self._await(submitted)
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # the rules' captures ran on the runtime's stream
        failed = next((window.error for window in windows if window.error), None)
        if failed:
            raise TensorRTLLMError(f"Whisper's decoding rules failed: {failed}")
        if any(rules.calls == 0 for rules in processors):
            raise TensorRTLLMError(
                f"Whisper's logit rules never ran in this process: TensorRT-LLM's worker must run in it "
                f"({SINGLE_PROCESS}=1, set before the LLM is created)."
            )
        return results

    def _await(self, outputs: Sequence[Any]) -> list[Any]:
        results = []
        for index, output in enumerate(outputs):
            try:
                results.append(output.result(timeout=RESPONSE_TIMEOUT.total_seconds()))
            except Exception as exc:
                if not output.finished:  # timed out: still running
                    with contextlib.suppress(Exception):
                        output.abort()
                self._cancel(outputs[index + 1:])
                raise TensorRTLLMError(f"TensorRT-LLM failed a window: {type(exc).__name__}: {exc}") from exc
        return results

    def _cancel(self, outputs: Sequence[Any]) -> None:
        """Aborts requests and waits for their final (cancelled) responses, so that none keeps a batch slot and
        its KV cache after the call that sent it has failed."""
        for output in outputs:
            if not output.finished:
                with contextlib.suppress(Exception):
                    output.abort()
        for output in outputs:
            with contextlib.suppress(Exception):
                output.result(timeout=CANCEL_TIMEOUT.total_seconds())


def create_engine(
    settings: ModelSettings,
    resolved: ResolvedModel,
    info: ModelInfo,
    tokenizer: WhisperTokenizer,
    device_id: int | None = None,
) -> TensorRTLLMTorchEngine:
    """The engine of one served model on the PyTorch route, checked against the model the tokenizer comes from."""
    check_engine_settings(settings)
    checkpoint = find_checkpoint_dir(Path(settings.trtllm_engine_dir).expanduser(), resolved.name)
    config = CheckpointConfig.read(checkpoint)
    found = (config.n_mels, config.multilingual, config.num_languages)
    if found != (info.n_mels, info.multilingual, info.num_languages):
        raise TensorRTLLMError(
            f"The checkpoint in {checkpoint} (n_mels {found[0]}, {found[2]} languages) is not {resolved.name} "
            f"(n_mels {info.n_mels}, {info.num_languages} languages): fetch the checkpoint of {resolved.name}."
        )
    return TensorRTLLMTorchEngine(
        checkpoint,
        tokenizer,
        beam_width=settings.beam_size,
        max_batch_size=settings.trtllm_max_batch_size,
        kv_cache_fraction=settings.trtllm_kv_cache_fraction,
        cross_kv_cache_fraction=settings.trtllm_cross_kv_cache_fraction,
        device_id=device_id,
        aligner=aligner_factory(settings, resolved),
    )
