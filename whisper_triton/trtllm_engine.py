"""Whisper on TensorRT-LLM (GPU), behind the same `WhisperEngine` protocol as the CTranslate2 engine.

The runtime is TensorRT-LLM's C++ executor (`tensorrt_llm.bindings.executor.Executor`, the object that
`ModelRunnerCpp` wraps) on the encoder and decoder engines of `build_engines`: every window is one request
(its log-mel as `encoder_input_features` [3000, n_mels] in the engine's dtype, `encoder_output_length` 1500,
its prompt as decoder input ids), and the executor batches the requests in flight. We call the executor
directly rather than `ModelRunnerCpp.generate`, which waits on `await_responses()` for any request and so
cannot share an executor between calls, and has no hook for Whisper's decoding rules.

Whisper's rules (`whisper_triton.trtllm_common.LogitRules`, shared with the PyTorch route) live in the
executor's batched logits post-processor, run on every decoding step of every request. Word timestamps need
cross-attention weights, which the TensorRT-LLM engines do not expose: `align` runs on a CTranslate2 CUDA model
of the same checkpoint.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
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
    make_window,
)

if TYPE_CHECKING:
    from whisper_triton.models import ModelInfo, ResolvedModel
    from whisper_triton.text import WhisperTokenizer

log = logging.getLogger("whisper_triton.trtllm_engine")


def find_engine_dir(root: Path, model: str) -> Path:
    """`root` itself when it holds encoder/ and decoder/, else `root/<model id>` (the layout of `all`)."""
    for candidate in (root, root / model):
        if all((candidate / part / "config.json").is_file() for part in ("encoder", "decoder")):
            return candidate
    raise TensorRTLLMError(
        f"No TensorRT-LLM engines for {model}: neither {root} nor {root / model} holds encoder/ and decoder/. "
        f"Build them with `python -m build_engines all --model {model} --workdir {root}`."
    )


@dataclass(frozen=True)
class EngineConfig:
    """What the runtime needs from the engines' config.json files (written by trtllm-build)."""

    n_mels: int
    vocab_size: int
    num_languages: int
    dtype: str
    max_batch_size: int
    max_beam_width: int
    max_input_len: int
    max_seq_len: int

    @property
    def multilingual(self) -> bool:
        return self.vocab_size >= 51865

    @classmethod
    def read(cls, engine_dir: Path) -> EngineConfig:
        import json

        encoder = json.loads((engine_dir / "encoder" / "config.json").read_text(encoding="utf-8"))
        decoder = json.loads((engine_dir / "decoder" / "config.json").read_text(encoding="utf-8"))
        model = encoder.get("pretrained_config", encoder)
        build = decoder.get("build_config", {})
        vocab = int(model["vocab_size"])
        return cls(
            n_mels=int(model["n_mels"]),
            vocab_size=vocab,
            num_languages=int(model.get("num_languages", vocab - 51765 - int(vocab >= 51865))),
            dtype=str(model.get("dtype", "float16")),
            max_batch_size=int(build.get("max_batch_size", 1)),
            max_beam_width=int(build.get("max_beam_width", 1)),
            max_input_len=int(build.get("max_input_len", 14)),
            max_seq_len=int(build.get("max_seq_len", 448)),
        )


class TensorRTLLMEngine(WindowEngine):
    """Whisper's encoder and decoder engines on one TensorRT-LLM executor (in-flight batching)."""

    def __init__(
        self,
        engine_dir: Path,
        tokenizer: WhisperTokenizer,
        *,
        beam_width: int = 1,
        max_batch_size: int = 0,
        kv_cache_fraction: float = 0.5,
        cross_kv_cache_fraction: float = 0.5,
        device_id: int | None = None,
        aligner: Callable[[], WhisperEngine] | None = None,
    ) -> None:
        try:
            import tensorrt_llm.bindings.executor as trtllm
        except ImportError as exc:
            raise TensorRTLLMError(
                f"WHISPER_ENGINE=tensorrt_llm needs TensorRT-LLM's Python package ({exc}): run in NVIDIA's "
                "container nvcr.io/nvidia/tritonserver:<yy.mm>-trtllm-python-py3, with the version that built "
                "the engines."
            ) from exc
        self._trtllm: Any = trtllm
        self.config = EngineConfig.read(engine_dir)
        if not 1 <= beam_width <= self.config.max_beam_width:
            raise TensorRTLLMError(
                f"WHISPER_BEAM_SIZE={beam_width} needs a decoder engine built with --max-beam-width >= "
                f"{beam_width} (this one: {self.config.max_beam_width})."
            )
        self.n_mels = self.config.n_mels
        self.is_multilingual = self.config.multilingual
        self.num_languages = self.config.num_languages if self.is_multilingual else 1
        self.beam_width = beam_width
        self.vocabulary = Vocabulary.of(tokenizer, self.config.vocab_size)
        self._rules = LogitRules(self.vocabulary)
        self._windows: dict[int, Window] = {}
        self._lock = threading.Lock()
        self._client_ids = itertools.count(1)
        self._seeds = itertools.count(1)
        self._aligner = WordAligner(aligner)
        cuda = torch.cuda.is_available()
        self._device = torch.device("cuda", device_id or 0) if cuda else torch.device("cpu")
        self._dtype = torch.bfloat16 if self.config.dtype == "bfloat16" else torch.float16
        self._executor = trtllm.Executor(
            str(engine_dir / "encoder"),
            str(engine_dir / "decoder"),
            trtllm.ModelType.ENCODER_DECODER,
            self._executor_config(max_batch_size, kv_cache_fraction, cross_kv_cache_fraction, device_id),
        )

    def _executor_config(
        self, max_batch_size: int, kv_cache_fraction: float, cross_kv_cache_fraction: float, device_id: int | None
    ) -> Any:
        trtllm = self._trtllm
        options: dict[str, Any] = {
            "max_beam_width": self.beam_width,
            # Encoder-decoder models must split the KV cache between self- and cross-attention.
            "kv_cache_config": trtllm.KvCacheConfig(
                free_gpu_memory_fraction=kv_cache_fraction,
                cross_kv_cache_fraction=cross_kv_cache_fraction,
                enable_block_reuse=False,
            ),
            "logits_post_processor_config": trtllm.LogitsPostProcessorConfig(
                processor_batched=self._process_logits, replicate=False
            ),
        }
        if max_batch_size:
            options["max_batch_size"] = min(max_batch_size, self.config.max_batch_size)
        if device_id is not None:
            options["parallel_config"] = trtllm.ParallelConfig(
                trtllm.CommunicationType.MPI, trtllm.CommunicationMode.LEADER, device_ids=[device_id]
            )
        return trtllm.ExecutorConfig(**options)

    def close(self) -> None:
        self._executor.shutdown()

    # -- the WhisperEngine protocol

    def encode(self, features: np.ndarray) -> Encoded:
        host = check_features(features, self.n_mels)
        frames = torch.from_numpy(host).to(self._device).transpose(1, 2).to(self._dtype)
        return Encoded(host, [item.contiguous() for item in frames])

    def generate(
        self,
        encoded: Encoded,
        prompts: list[list[int]],
        temperature: float,
        beam_size: int,
        max_length: int,
    ) -> list[Generation]:
        # The executor runs every request with its one beam width (WHISPER_BEAM_SIZE): `beam_size` is not
        # per call here, and sampled fallbacks are beam searches over tempered logits when it is above 1.
        windows = [make_window(self.vocabulary, prompt, max_length, self.config.max_input_len, self.config.max_seq_len)
                   for prompt in prompts]
        results = self._run(encoded, windows, temperature)
        return [self._generation(window, result) for window, result in zip(windows, results, strict=True)]

    # -- requests

    def _sampling(self, temperature: float) -> Any:
        trtllm = self._trtllm
        if temperature <= 0:
            if self.beam_width == 1:
                return trtllm.SamplingConfig(beam_width=1, top_k=1)
            return trtllm.SamplingConfig(beam_width=self.beam_width)
        if self.beam_width == 1:  # sampling from the whole distribution
            return trtllm.SamplingConfig(beam_width=1, top_k=0, top_p=1.0, temperature=temperature,
                                         seed=next(self._seeds))
        return trtllm.SamplingConfig(beam_width=self.beam_width, temperature=temperature)

    def _run(self, encoded: Encoded, windows: list[Window], temperature: float) -> list[Any]:
        trtllm = self._trtllm
        output = trtllm.OutputConfig(return_log_probs=True, exclude_input_from_output=True)
        eot = self.vocabulary.eot
        with self._lock:  # registered before enqueueing: the post-processor may run at once
            keys = [next(self._client_ids) for _ in windows]
            self._windows.update(zip(keys, windows, strict=True))
        try:
            requests = [
                trtllm.Request(
                    input_token_ids=window.inputs,
                    max_tokens=window.max_tokens,
                    streaming=False,
                    sampling_config=self._sampling(temperature),
                    output_config=output,
                    end_id=eot,
                    pad_id=eot,
                    logits_post_processor_name=trtllm.Request.BATCHED_POST_PROCESSOR_NAME,
                    client_id=key,
                    encoder_input_features=features,
                    encoder_output_length=int(features.shape[0]) // 2,
                )
                for key, window, features in zip(keys, windows, encoded.items, strict=True)
            ]
            results = self._await(self._executor.enqueue_requests(requests))
        finally:
            with self._lock:
                for key in keys:
                    self._windows.pop(key, None)
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)  # the post-processor's captures ran on the executor's stream
        failed = next((w.error for w in windows if w.error), None)
        if failed:
            raise TensorRTLLMError(f"Whisper's decoding rules failed: {failed}")
        return results

    def _await(self, request_ids: Sequence[int]) -> list[Any]:
        results = []
        for index, request_id in enumerate(request_ids):
            try:
                results.append(self._final(request_id))
            except Exception:
                self._cancel(request_ids[index + 1:])
                raise
        return results

    def _cancel(self, request_ids: Sequence[int]) -> None:
        """Cancels requests and takes their final responses: the executor keeps every response until it is
        awaited, so those of cancelled requests would pile up in its response map for good."""
        for request_id in request_ids:
            self._executor.cancel_request(request_id)
        for request_id in request_ids:
            while True:
                responses = self._executor.await_responses(id=request_id, timeout=CANCEL_TIMEOUT)
                if not responses or any(r.has_error() or r.result.is_final for r in responses):
                    break

    def _final(self, request_id: int) -> Any:
        while True:
            responses = self._executor.await_responses(id=request_id, timeout=RESPONSE_TIMEOUT)
            if not responses:
                self._cancel([request_id])
                raise TensorRTLLMError(f"no response from TensorRT-LLM within {RESPONSE_TIMEOUT}")
            for response in responses:
                if response.has_error():
                    raise TensorRTLLMError(f"TensorRT-LLM failed a window: {response.error_msg}")
                if response.result.is_final:
                    return response.result

    def _generation(self, window: Window, result: Any) -> Generation:
        if result.cum_log_probs:
            cumulative = float(result.cum_log_probs[0])
        else:
            cumulative = float(sum(result.log_probs[0])) if result.log_probs else 0.0
        return generation_of(self.vocabulary, window, list(result.output_token_ids[0]), cumulative)

    # -- Whisper's rules, on the executor's thread at every step

    def _process_logits(
        self,
        request_ids: list[int],
        logits: list[torch.Tensor],
        token_ids: list[list[list[int]]],
        stream_ptr: int | None,
        client_ids: list[int | None],
    ) -> None:
        with self._lock:
            windows = [self._windows.get(client) if client is not None else None for client in client_ids]
        try:
            stream = torch.cuda.ExternalStream(stream_ptr) if stream_ptr and logits and logits[0].is_cuda else None
            context: AbstractContextManager[Any] = torch.cuda.stream(stream) if stream is not None else nullcontext()
            with context:
                self._rules.apply(windows, logits, token_ids)
        except Exception as exc:  # raising into the executor would fail its whole batch; fail ours instead
            log.exception("Whisper's logits rules failed")
            for window in windows:
                if window is not None:
                    window.error = f"{type(exc).__name__}: {exc}"


def create_engine(
    settings: ModelSettings,
    resolved: ResolvedModel,
    info: ModelInfo,
    tokenizer: WhisperTokenizer,
    device_id: int | None = None,
) -> TensorRTLLMEngine:
    """The engine of one served model, checked against the model the tokenizer comes from."""
    check_engine_settings(settings)
    engine_dir = find_engine_dir(Path(settings.trtllm_engine_dir).expanduser(), resolved.name)
    config = EngineConfig.read(engine_dir)
    built = (config.n_mels, config.multilingual, config.num_languages if config.multilingual else 1)
    if built != (info.n_mels, info.multilingual, info.num_languages):
        raise TensorRTLLMError(
            f"The engines in {engine_dir} (n_mels {built[0]}, {built[2]} languages) were not built from "
            f"{resolved.name} (n_mels {info.n_mels}, {info.num_languages} languages): rebuild them."
        )
    return TensorRTLLMEngine(
        engine_dir,
        tokenizer,
        beam_width=settings.beam_size,
        max_batch_size=settings.trtllm_max_batch_size,
        kv_cache_fraction=settings.trtllm_kv_cache_fraction,
        cross_kv_cache_fraction=settings.trtllm_cross_kv_cache_fraction,
        device_id=device_id,
        aligner=aligner_factory(settings, resolved),
    )
