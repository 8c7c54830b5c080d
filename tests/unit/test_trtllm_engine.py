"""The TensorRT-LLM engine at the runtime's boundary, with the shared decoding code on top.

`tensorrt_llm.bindings.executor` is replaced by a fake with the signatures of the real pybind module
(keyword names, keyword-only arguments, what the C++ side checks: cross-KV fraction set for encoder-decoder
models, one beam width for every request, input and sequence lengths within the engine's) that runs a
Whisper-like toy model with in-flight batching and calls the batched logits post-processor at every step,
as the executor does. The toy model reads a script id from the features and emits that script's tokens.
"""

from __future__ import annotations

import enum
import json
import subprocess
import sys
import types
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from harness.toy_whisper import (
    ENCODER_FRAMES,
    ENGLISH_VOCAB,
    MULTILINGUAL_VOCAB,
    FakeAligner,
    Script,
    ToyModel,
    job,
    load,
    texts,
    toy_model,
    ts,
    windows,
)
from whisper_triton.decoding import decode_windows
from whisper_triton.models import ModelInfo, ResolvedModel
from whisper_triton.settings import ModelSettings, SettingsError
from whisper_triton.text import WhisperTokenizer
from whisper_triton.trtllm_common import LogitRules, TensorRTLLMError, Vocabulary, Window, check_engine_settings
from whisper_triton.trtllm_engine import EngineConfig, TensorRTLLMEngine, create_engine, find_engine_dir

# --------------------------------------------------------------------------------------------------
# The fake runtime: the subset of tensorrt_llm.bindings.executor the engine uses, with real signatures.


class ModelType(enum.Enum):
    DECODER_ONLY = 0
    ENCODER_DECODER = 1


class CommunicationType(enum.Enum):
    MPI = 0


class CommunicationMode(enum.Enum):
    LEADER = 0
    ORCHESTRATOR = 1


class KvCacheConfig:
    def __init__(self, enable_block_reuse: bool = True, max_tokens: int | None = None,
                 max_attention_window: list[int] | None = None, sink_token_length: int | None = None,
                 free_gpu_memory_fraction: float | None = None, host_cache_size: int | None = None,
                 onboard_blocks: bool = True, cross_kv_cache_fraction: float | None = None,
                 secondary_offload_min_priority: int | None = None, event_buffer_max_size: int = 0, *,
                 runtime_defaults: Any = None) -> None:
        self.enable_block_reuse = enable_block_reuse
        self.free_gpu_memory_fraction = free_gpu_memory_fraction
        self.cross_kv_cache_fraction = cross_kv_cache_fraction


class LogitsPostProcessorConfig:
    def __init__(self, processor_map: dict[str, Callable[..., None]] | None = None,
                 processor_batched: Callable[..., None] | None = None, replicate: bool = True) -> None:
        self.processor_map = processor_map
        self.processor_batched = processor_batched
        self.replicate = replicate


class ParallelConfig:
    def __init__(self, communication_type: CommunicationType = CommunicationType.MPI,
                 communication_mode: CommunicationMode = CommunicationMode.LEADER,
                 device_ids: list[int] | None = None, participant_ids: list[int] | None = None,
                 orchestrator_config: Any = None, num_nodes: int | None = None) -> None:
        assert isinstance(communication_type, CommunicationType)
        assert isinstance(communication_mode, CommunicationMode)
        self.device_ids = device_ids


class ExecutorConfig:
    def __init__(self, max_beam_width: int = 1, *, scheduler_config: Any = None,
                 kv_cache_config: KvCacheConfig | None = None, enable_chunked_context: bool = False,
                 normalize_log_probs: bool = True, iter_stats_max_iterations: int = 1000,
                 request_stats_max_iterations: int = 0, batching_type: Any = None,
                 max_batch_size: int | None = None, max_num_tokens: int | None = None,
                 parallel_config: ParallelConfig | None = None, peft_cache_config: Any = None,
                 logits_post_processor_config: LogitsPostProcessorConfig | None = None,
                 decoding_config: Any = None, gpu_weights_percent: float = 1.0,
                 max_queue_size: int | None = None) -> None:
        self.max_beam_width = max_beam_width
        self.kv_cache_config = kv_cache_config or KvCacheConfig()
        self.max_batch_size = max_batch_size
        self.parallel_config = parallel_config
        self.logits_post_processor_config = logits_post_processor_config


class SamplingConfig:
    def __init__(self, beam_width: int = 1, *, top_k: int | None = None, top_p: float | None = None,
                 top_p_min: float | None = None, top_p_reset_ids: int | None = None,
                 top_p_decay: float | None = None, seed: int | None = None, temperature: float | None = None,
                 min_tokens: int | None = None, beam_search_diversity_rate: float | None = None,
                 repetition_penalty: float | None = None, presence_penalty: float | None = None,
                 frequency_penalty: float | None = None, length_penalty: float | None = None,
                 early_stopping: int | None = None, no_repeat_ngram_size: int | None = None,
                 num_return_sequences: int | None = None, min_p: float | None = None,
                 beam_width_array: list[int] | None = None) -> None:
        # What the C++ constructor checks.
        assert beam_width >= 1
        assert top_k is None or top_k >= 0
        assert top_p is None or 0 < top_p <= 1
        assert temperature is None or temperature > 0
        self.beam_width, self.top_k, self.top_p, self.seed, self.temperature = (
            beam_width, top_k, top_p, seed, temperature)


class OutputConfig:
    def __init__(self, return_log_probs: bool = False, return_context_logits: bool = False,
                 return_generation_logits: bool = False, exclude_input_from_output: bool = False,
                 return_encoder_output: bool = False, return_perf_metrics: bool = False,
                 additional_model_outputs: Any = None) -> None:
        self.return_log_probs = return_log_probs
        self.return_generation_logits = return_generation_logits
        self.exclude_input_from_output = exclude_input_from_output


class Request:
    BATCHED_POST_PROCESSOR_NAME = "batched"

    def __init__(self, input_token_ids: list[int], max_tokens: int, *, streaming: bool = False,
                 sampling_config: SamplingConfig | None = None, output_config: OutputConfig | None = None,
                 end_id: int | None = None, pad_id: int | None = None, position_ids: Any = None,
                 bad_words: Any = None, stop_words: Any = None, embedding_bias: Any = None,
                 external_draft_tokens_config: Any = None, prompt_tuning_config: Any = None,
                 multimodal_input: Any = None, multimodal_embedding: Any = None, mrope_config: Any = None,
                 lora_config: Any = None, lookahead_config: Any = None, kv_cache_retention_config: Any = None,
                 logits_post_processor_name: str | None = None, logits_post_processor: Any = None,
                 encoder_input_token_ids: list[int] | None = None, client_id: int | None = None,
                 return_all_generated_tokens: bool = False, priority: float = 0.5, type: Any = None,
                 context_phase_params: Any = None, encoder_input_features: torch.Tensor | None = None,
                 encoder_output_length: int | None = None, cross_attention_mask: Any = None,
                 num_return_sequences: int = 1, eagle_config: Any = None, skip_cross_attn_blocks: Any = None,
                 guided_decoding_params: Any = None, language_adapter_uid: int | None = None,
                 allotted_time_ms: Any = None) -> None:
        # pybind converts these: lists of ints, an int, a torch.Tensor (the tensor caster).
        assert isinstance(input_token_ids, list) and all(isinstance(t, int) for t in input_token_ids)
        assert isinstance(max_tokens, int) and max_tokens > 0
        assert encoder_input_features is None or isinstance(encoder_input_features, torch.Tensor)
        assert encoder_output_length is None or isinstance(encoder_output_length, int)
        self.input_token_ids = input_token_ids
        self.max_tokens = max_tokens
        self.streaming = streaming
        self.sampling_config = sampling_config or SamplingConfig()
        self.output_config = output_config or OutputConfig()
        self.end_id, self.pad_id = end_id, pad_id
        self.logits_post_processor_name = logits_post_processor_name
        self.client_id = client_id
        self.encoder_input_features = encoder_input_features
        self.encoder_output_length = encoder_output_length


@dataclass
class Result:
    is_final: bool
    output_token_ids: list[list[int]]
    cum_log_probs: list[float] | None
    log_probs: list[list[float]] | None


class Response:
    def __init__(self, request_id: int, result: Result | None = None, error_msg: str = "") -> None:
        self.request_id, self.result, self.error_msg = request_id, result, error_msg

    def has_error(self) -> bool:
        return bool(self.error_msg)


@dataclass
class _Running:
    id: int
    request: Request
    tokens: list[int]
    generated: list[int]
    log_probs: list[float]
    generator: torch.Generator


class Executor:
    """Runs the toy model over all enqueued requests, `max_batch_size` at a time (in flight)."""

    created: ClassVar[list[Executor]] = []
    model: ToyModel
    fail: str = ""

    def __init__(self, encoder_model_path: Path, decoder_model_path: Path, model_type: ModelType,
                 executor_config: ExecutorConfig) -> None:
        assert (Path(encoder_model_path) / "config.json").is_file(), encoder_model_path
        assert (Path(decoder_model_path) / "config.json").is_file(), decoder_model_path
        assert model_type is ModelType.ENCODER_DECODER
        assert isinstance(executor_config, ExecutorConfig)
        if executor_config.kv_cache_config.cross_kv_cache_fraction is None:
            raise RuntimeError("[TensorRT-LLM][ERROR] Must set crossKvCacheFraction for encoder-decoder model")
        config = json.loads((Path(decoder_model_path) / "config.json").read_text())["build_config"]
        self.engine = config
        assert executor_config.max_beam_width <= config["max_beam_width"]
        self.max_batch_size = executor_config.max_batch_size or config["max_batch_size"]
        assert self.max_batch_size <= config["max_batch_size"]
        self.config = executor_config
        self.requests: list[Request] = []
        self.batches: list[int] = []  # requests per post-processor call
        self._pending: list[tuple[int, Request]] = []
        self._responses: dict[int, list[Response]] = {}
        self._next_id = 100
        self.cancelled: list[int] = []
        self.shut_down = False
        Executor.created.append(self)

    def enqueue_requests(self, requests: list[Request]) -> list[int]:
        ids = []
        for request in requests:
            assert isinstance(request, Request)
            if request.sampling_config.beam_width != self.config.max_beam_width:
                raise RuntimeError(f"Request with beam width {request.sampling_config.beam_width} differs from "
                                   f"the max beam width {self.config.max_beam_width}")
            assert len(request.input_token_ids) <= self.engine["max_input_len"]
            assert len(request.input_token_ids) + request.max_tokens <= self.engine["max_seq_len"]
            self._next_id += 1
            ids.append(self._next_id)
            self._pending.append((self._next_id, request))
            self.requests.append(request)
        return ids

    def await_responses(self, id: int | None = None, timeout: timedelta | None = None) -> list[Response]:
        assert isinstance(id, int) and isinstance(timeout, timedelta)
        if self._pending:
            self._run()
        return self._responses.pop(id, [])

    def cancel_request(self, id: int) -> None:
        self.cancelled.append(id)

    def shutdown(self) -> None:
        self.shut_down = True

    def _run(self) -> None:
        queue, active = list(self._pending), []
        self._pending.clear()
        processor = self.config.logits_post_processor_config.processor_batched
        while queue or active:
            while queue and len(active) < self.max_batch_size:
                request_id, request = queue.pop(0)
                generator = torch.Generator().manual_seed(request.sampling_config.seed or 0)
                active.append(_Running(request_id, request, list(request.input_token_ids), [], [], generator))
            beam = self.config.max_beam_width
            model = type(self).model  # the toy model, a plain function
            logits = [model(r.request.encoder_input_features, r.tokens).repeat(1, beam, 1) for r in active]
            batched = [i for i, r in enumerate(active)
                       if r.request.logits_post_processor_name == Request.BATCHED_POST_PROCESSOR_NAME]
            if batched:
                self.batches.append(len(batched))
                processor([active[i].id for i in batched], [logits[i] for i in batched],
                          [[list(active[i].tokens)] * beam for i in batched], 0,
                          [active[i].request.client_id for i in batched])
            for running, step_logits in zip(list(active), logits, strict=True):
                if self._step(running, step_logits[0, 0]):
                    active.remove(running)

    def _step(self, running: _Running, logits: torch.Tensor) -> bool:
        request = running.request
        sampling = request.sampling_config
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        if sampling.temperature and sampling.top_k == 0:
            probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
            token = int(torch.multinomial(probs, 1, generator=running.generator))
        else:
            token = int(torch.argmax(logits))
        running.tokens.append(token)
        running.log_probs.append(float(log_probs[token]))
        if token != request.end_id:
            running.generated.append(token)
        if token == request.end_id or len(running.tokens) - len(request.input_token_ids) >= request.max_tokens:
            if self.fail:
                self._responses[running.id] = [Response(running.id, error_msg=self.fail)]
                return True
            output = running.generated
            if not request.output_config.exclude_input_from_output:
                output = request.input_token_ids + output
            per_token = running.log_probs[: len(running.generated)] if request.output_config.return_log_probs else None
            cumulative = [sum(running.log_probs)] if request.output_config.return_log_probs else None
            self._responses[running.id] = [Response(running.id, Result(True, [output], cumulative,
                                                                       [per_token] if per_token else None))]
            return True
        return False


def fake_runtime() -> types.ModuleType:
    module = types.ModuleType("tensorrt_llm.bindings.executor")
    for item in (ModelType, CommunicationType, CommunicationMode, KvCacheConfig, LogitsPostProcessorConfig,
                 ParallelConfig, ExecutorConfig, SamplingConfig, OutputConfig, Request, Response, Executor):
        setattr(module, item.__name__, item)
    return module


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Steps over a 52k vocabulary one row at a time: threads only add contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    executor = fake_runtime()
    bindings = types.ModuleType("tensorrt_llm.bindings")
    bindings.executor = executor  # type: ignore[attr-defined]
    package = types.ModuleType("tensorrt_llm")
    package.bindings = bindings  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt_llm", package)
    monkeypatch.setitem(sys.modules, "tensorrt_llm.bindings", bindings)
    monkeypatch.setitem(sys.modules, "tensorrt_llm.bindings.executor", executor)
    Executor.created = []
    Executor.fail = ""
    yield executor


# --------------------------------------------------------------------------------------------------
# A Whisper-like toy model: the features name a script, which the model follows.


@pytest.fixture(scope="module")
def base() -> tuple[WhisperTokenizer, ResolvedModel, ModelInfo]:
    return load("base")


@pytest.fixture(scope="module")
def english() -> tuple[WhisperTokenizer, ResolvedModel, ModelInfo]:
    return load("tiny.en")


def engine_dir(root: Path, vocab_size: int, n_mels: int = 80, num_languages: int = 99, dtype: str = "float16",
               **build: int) -> Path:
    settings = {"max_batch_size": 4, "max_beam_width": 4, "max_input_len": 225, "max_seq_len": 448, **build}
    for part in ("encoder", "decoder"):
        (root / part).mkdir(parents=True, exist_ok=True)
        pretrained = {"architecture": "WhisperEncoder" if part == "encoder" else "DecoderModel", "dtype": dtype,
                      "vocab_size": vocab_size, "n_mels": n_mels, "num_languages": num_languages}
        (root / part / "config.json").write_text(json.dumps({"version": "0.20.0", "pretrained_config": pretrained,
                                                             "build_config": settings}))
        (root / part / "rank0.engine").write_bytes(b"engine")
    return root


def make_engine(tmp_path: Path, tokenizer: WhisperTokenizer, scripts: dict[int, Script], vocab: int,
                **kwargs: Any) -> TensorRTLLMEngine:
    build = kwargs.pop("build", {})
    folder = engine_dir(tmp_path / "engines", vocab, **build)
    Executor.model = toy_model(tokenizer, scripts, kwargs.pop("width", vocab))
    return TensorRTLLMEngine(folder, tokenizer, **kwargs)


# --------------------------------------------------------------------------------------------------
# Executor configuration and request shapes


def test_executor_is_an_encoder_decoder_with_cross_kv_cache_and_the_rules(
    runtime: types.ModuleType, tmp_path: Path, base: Any
) -> None:
    tokenizer = base[0]
    engine = make_engine(tmp_path, tokenizer, {}, MULTILINGUAL_VOCAB, beam_width=2, max_batch_size=64,
                         kv_cache_fraction=0.4, cross_kv_cache_fraction=0.3, device_id=1)
    executor = Executor.created[-1]
    config = executor.config
    assert config.max_beam_width == 2
    assert config.max_batch_size == 4  # capped to the engine's
    assert config.kv_cache_config.free_gpu_memory_fraction == 0.4
    assert config.kv_cache_config.cross_kv_cache_fraction == 0.3
    assert config.kv_cache_config.enable_block_reuse is False
    assert config.parallel_config.device_ids == [1]
    assert config.logits_post_processor_config.processor_batched is not None
    assert (engine.n_mels, engine.is_multilingual, engine.num_languages) == (80, True, 99)
    engine.close()
    assert executor.shut_down


def test_requests_carry_half_precision_features_lengths_and_prompts(
    runtime: types.ModuleType, tmp_path: Path, base: Any
) -> None:
    tokenizer = base[0]
    scripts = {1: Script("en", ((0.0, 2.0, " Hello there."),))}
    engine = make_engine(tmp_path, tokenizer, scripts, MULTILINGUAL_VOCAB)
    decode_windows(engine, tokenizer, [job(1, language="en", prompt="Vocabulary: Triton")])
    (request,) = Executor.created[-1].requests
    features = request.encoder_input_features
    assert features is not None
    assert features.dtype == torch.float16 and tuple(features.shape) == (ENCODER_FRAMES, 80)
    assert features.is_contiguous()
    assert request.encoder_output_length == ENCODER_FRAMES // 2
    base_tokenizer = tokenizer.get()
    assert request.input_token_ids[0] == base_tokenizer.sot_prev
    assert request.input_token_ids[-1] == base_tokenizer.sot  # language and task are forced by the rules
    assert request.end_id == request.pad_id == tokenizer.eot
    assert request.logits_post_processor_name == Request.BATCHED_POST_PROCESSOR_NAME
    assert isinstance(request.client_id, int)
    assert request.output_config.return_log_probs and request.output_config.exclude_input_from_output
    assert request.sampling_config.top_k == 1 and request.sampling_config.beam_width == 1
    assert len(request.input_token_ids) + request.max_tokens <= 448


def test_bfloat16_engines_get_bfloat16_features(runtime: types.ModuleType, tmp_path: Path, base: Any) -> None:
    tokenizer = base[0]
    folder = engine_dir(tmp_path / "engines", MULTILINGUAL_VOCAB, dtype="bfloat16")
    Executor.model = toy_model(tokenizer, {1: Script(segments=((0.0, 1.0, " Yes."),))}, MULTILINGUAL_VOCAB)
    engine = TensorRTLLMEngine(folder, tokenizer)
    decode_windows(engine, tokenizer, [job(1, language="en")])
    assert Executor.created[-1].requests[0].encoder_input_features.dtype == torch.bfloat16


def test_features_of_the_wrong_shape_are_refused(runtime: types.ModuleType, tmp_path: Path, base: Any) -> None:
    engine = make_engine(tmp_path, base[0], {}, MULTILINGUAL_VOCAB)
    with pytest.raises(ValueError, match=r"\(batch, 80, 3000\)"):
        engine.encode(np.zeros((1, 128, ENCODER_FRAMES), dtype=np.float32))


# --------------------------------------------------------------------------------------------------
# Shared decoding on the engine: segments, timestamps, languages, silence, fallback


def test_windows_decode_to_timestamped_segments_in_one_in_flight_batch(
    runtime: types.ModuleType, tmp_path: Path, base: Any
) -> None:
    tokenizer = base[0]
    scripts = {
        1: Script("en", ((0.0, 2.5, " And so my fellow Americans,"), (2.5, 5.0, " ask not."))),
        2: Script("en", ((0.5, 3.0, " What your country can do for you."),)),
        3: Script("en", ((0.0, 1.0, " Yes."),)),
    }
    engine = make_engine(tmp_path, tokenizer, scripts, MULTILINGUAL_VOCAB, build={"max_batch_size": 2})
    results = decode_windows(engine, tokenizer, [job(i, language="en") for i in (1, 2, 3)])
    assert texts(results[0]) == [(0.0, 2.5, " And so my fellow Americans,"), (2.5, 5.0, " ask not.")]
    assert texts(results[1]) == [(0.5, 3.0, " What your country can do for you.")]
    assert texts(results[2]) == [(0.0, 1.0, " Yes.")]
    executor = Executor.created[-1]
    assert max(executor.batches) == 2  # the engine's batch, refilled as requests finish
    assert sum(executor.batches) > len(executor.batches)  # requests shared steps
    for result in results:
        segment = result.segments[0]
        assert -0.01 < segment.avg_logprob <= 0
        assert 0 <= segment.no_speech_prob < 0.01


def test_languages_are_detected_at_the_start_of_transcript(
    runtime: types.ModuleType, tmp_path: Path, base: Any
) -> None:
    tokenizer = base[0]
    scripts = {1: Script("fr", ((0.0, 2.0, " Bonjour à tous."),)), 2: Script("es", ((0.0, 2.0, " Hola."),))}
    engine = make_engine(tmp_path, tokenizer, scripts, MULTILINGUAL_VOCAB)
    results = decode_windows(engine, tokenizer, [job(1), job(2)])
    assert [r.language for r in results] == ["fr", "es"]
    assert results[0].language_probability == pytest.approx(np.exp(8) / (np.exp(8) + np.exp(6) + 97), rel=1e-3)
    assert texts(results[0]) == [(0.0, 2.0, " Bonjour à tous.")]
    requests = Executor.created[-1].requests
    detection, generation = requests[:2], requests[2:]
    assert all(r.input_token_ids == [tokenizer.get().sot] and r.max_tokens == 1 for r in detection)
    assert all(r.input_token_ids == [tokenizer.get().sot] for r in generation)


def test_a_given_language_is_forced_after_the_start_of_transcript(
    runtime: types.ModuleType, tmp_path: Path, base: Any
) -> None:
    tokenizer = base[0]
    engine = make_engine(tmp_path, tokenizer, {1: Script("en", ((0.0, 1.0, " Hello."),))}, MULTILINGUAL_VOCAB)
    generation = engine.generate(engine.encode(windows([1])), [tokenizer.sot_sequence("de", "translate")], 0.0,
                                 1, 448)[0]
    assert tokenizer.decode(generation.tokens) == " Hello."  # forced tokens are not part of the output
    assert generation.tokens[0] == ts(tokenizer, 0.0)


def test_silence_has_a_high_no_speech_probability_and_no_segments(
    runtime: types.ModuleType, tmp_path: Path, base: Any
) -> None:
    tokenizer = base[0]
    engine = make_engine(tmp_path, tokenizer, {1: Script(silent=True)}, MULTILINGUAL_VOCAB)
    (result,) = decode_windows(engine, tokenizer, [job(1, language="en")])
    assert result.segments == []
    assert len(Executor.created[-1].requests) == 1  # silence is not retried at higher temperatures
    generation = engine.generate(engine.encode(windows([1])), [tokenizer.sot_sequence("en", "transcribe")], 0.0,
                                 1, 448)[0]
    assert generation.no_speech_prob > 0.9 and generation.avg_logprob < -1


def test_english_only_models_prompt_with_the_start_of_transcript_alone(
    runtime: types.ModuleType, tmp_path: Path, english: Any
) -> None:
    tokenizer = english[0]
    scripts = {1: Script(segments=((0.0, 2.0, " Ask not."),))}
    engine = make_engine(tmp_path, tokenizer, scripts, ENGLISH_VOCAB, build={"max_batch_size": 2})
    assert not engine.is_multilingual and engine.num_languages == 1
    (result,) = decode_windows(engine, tokenizer, [job(1)])
    assert (result.language, texts(result)) == ("en", [(0.0, 2.0, " Ask not.")])
    assert Executor.created[-1].requests[0].input_token_ids == [tokenizer.get().sot]


def test_repetitive_output_falls_back_to_seeded_sampling(
    runtime: types.ModuleType, tmp_path: Path, base: Any
) -> None:
    tokenizer = base[0]
    text = " the" * 20
    assert len(text) / len(zlib.compress(text.encode())) > 2.4
    engine = make_engine(tmp_path, tokenizer, {1: Script("en", ((0.0, 9.0, text),))}, MULTILINGUAL_VOCAB)
    (result,) = decode_windows(engine, tokenizer, [job(1, language="en")])
    requests = Executor.created[-1].requests
    sampling = [r.sampling_config for r in requests]
    assert [s.temperature for s in sampling] == [None, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert all(s.top_k == 0 and s.top_p == 1.0 for s in sampling[1:])
    assert len({s.seed for s in sampling[1:]}) == 5
    assert result.segments and result.segments[0].temperature == 0.0  # every attempt failed: the best is kept


def test_beam_search_runs_every_request_at_the_executor_beam_width(
    runtime: types.ModuleType, tmp_path: Path, base: Any
) -> None:
    tokenizer = base[0]
    engine = make_engine(tmp_path, tokenizer, {1: Script("en", ((0.0, 1.0, " Hello."),))}, MULTILINGUAL_VOCAB,
                         beam_width=4)
    (result,) = decode_windows(engine, tokenizer, [job(1, language="en", beam_size=1)])
    assert texts(result) == [(0.0, 1.0, " Hello.")]
    assert {r.sampling_config.beam_width for r in Executor.created[-1].requests} == {4}


def test_a_beam_wider_than_the_engine_is_refused(runtime: types.ModuleType, tmp_path: Path, base: Any) -> None:
    with pytest.raises(TensorRTLLMError, match=r"WHISPER_BEAM_SIZE=5.*--max-beam-width"):
        make_engine(tmp_path, base[0], {}, MULTILINGUAL_VOCAB, beam_width=5)


def test_long_previous_text_is_trimmed_to_the_engine_input_length(
    runtime: types.ModuleType, tmp_path: Path, base: Any
) -> None:
    tokenizer = base[0]
    engine = make_engine(tmp_path, tokenizer, {1: Script("en", ((0.0, 1.0, " Hi."),))}, MULTILINGUAL_VOCAB,
                         build={"max_input_len": 14})
    decode_windows(engine, tokenizer, [job(1, language="en", prompt=" ".join(["word"] * 100))])
    (request,) = Executor.created[-1].requests
    sot_prev, sot = tokenizer.sot_prev, tokenizer.get().sot
    assert len(request.input_token_ids) == 14
    assert request.input_token_ids[0] == sot_prev and request.input_token_ids[-1] == sot


def test_runtime_errors_fail_the_call_and_cancel_the_rest(
    runtime: types.ModuleType, tmp_path: Path, base: Any
) -> None:
    tokenizer = base[0]
    engine = make_engine(tmp_path, tokenizer, {1: Script("en", ((0.0, 1.0, " Hi."),))}, MULTILINGUAL_VOCAB)
    Executor.fail = "Encoder length (3000) exceeds maximum encoder input length (1500)"
    with pytest.raises(TensorRTLLMError, match="exceeds maximum encoder input length"):
        engine.generate(engine.encode(windows([1, 1])), [tokenizer.sot_sequence("en", "transcribe")] * 2, 0.0, 1,
                        448)
    assert len(Executor.created[-1].cancelled) == 1
    assert engine._windows == {}
    # The cancelled request's final response was taken: none is left in the executor's response map.
    assert Executor.created[-1]._responses == {}


# --------------------------------------------------------------------------------------------------
# Words: the CTranslate2 aligner of the same checkpoint


def test_words_come_from_the_aligner_on_the_float32_features(
    runtime: types.ModuleType, tmp_path: Path, base: Any
) -> None:
    tokenizer = base[0]
    aligner = FakeAligner([])
    engine = make_engine(tmp_path, tokenizer, {1: Script("en", ((0.0, 2.0, " Ask not what."),))},
                         MULTILINGUAL_VOCAB, aligner=lambda: aligner)
    (result,) = decode_windows(engine, tokenizer, [job(1, language="en", word_timestamps=True)])
    assert [w.word for w in result.segments[0].words] == [" Ask", " not", " what."]
    assert aligner.calls[0] == ("encode", (1, 80, ENCODER_FRAMES), np.float32)
    assert aligner.calls[1][1] == tokenizer.sot_sequence("en", "transcribe")


def test_without_an_aligner_segments_come_without_words(
    runtime: types.ModuleType, tmp_path: Path, base: Any
) -> None:
    tokenizer = base[0]
    engine = make_engine(tmp_path, tokenizer, {1: Script("en", ((0.0, 2.0, " Ask not."),))}, MULTILINGUAL_VOCAB)
    (result,) = decode_windows(engine, tokenizer, [job(1, language="en", word_timestamps=True)])
    assert texts(result) == [(0.0, 2.0, " Ask not.")] and result.segments[0].words == []


# --------------------------------------------------------------------------------------------------
# Whisper's logit rules, step by step


@pytest.fixture(scope="module")
def rules(base: Any) -> tuple[LogitRules, Vocabulary, WhisperTokenizer]:
    tokenizer = base[0]
    vocabulary = Vocabulary.of(tokenizer, MULTILINGUAL_VOCAB)
    return LogitRules(vocabulary), vocabulary, tokenizer


WIDTH = MULTILINGUAL_VOCAB + 7  # a padded engine vocabulary


def text_heavy(vocabulary: Vocabulary) -> torch.Tensor:
    """Logits where text clearly beats every timestamp, so that the rules alone decide."""
    logits = torch.zeros(1, 1, WIDTH)
    logits[0, 0, : vocabulary.eot + 1] = 10.0  # and the end of text
    return logits


def allowed(rules: Any, window: Window, tokens: list[int], logits: torch.Tensor | None = None) -> torch.Tensor:
    rule = rules[0]
    tensor = text_heavy(rules[1]) if logits is None else logits.clone()
    rule.apply([window], [tensor], [[tokens]])
    return torch.isfinite(tensor[0, 0]).nonzero().flatten()


def prompt_window(tokenizer: WhisperTokenizer, timestamps: bool = True) -> Window:
    sot, *rest = tokenizer.sot_sequence("en", "transcribe")
    if not timestamps:
        rest.append(tokenizer.get().no_timestamps)
    return Window([sot], rest, 100, timestamps=timestamps)


def test_rules_force_the_start_sequence(rules: Any) -> None:
    _, _, tokenizer = rules
    window = prompt_window(tokenizer)
    sot, language, task = tokenizer.sot_sequence("en", "transcribe")
    assert allowed(rules, window, [sot]).tolist() == [language]
    assert allowed(rules, window, [sot, language]).tolist() == [task]


def test_rules_start_with_a_timestamp_within_the_first_second(rules: Any) -> None:
    _, vocabulary, tokenizer = rules
    window = prompt_window(tokenizer)
    ok = allowed(rules, window, tokenizer.sot_sequence("en", "transcribe"))
    begin = vocabulary.timestamp_begin
    assert ok.tolist() == list(range(begin, begin + 51))


def test_rules_pair_timestamps_and_keep_them_in_order(rules: Any) -> None:
    _, vocabulary, tokenizer = rules
    window = prompt_window(tokenizer)
    start = tokenizer.sot_sequence("en", "transcribe")
    hello = tokenizer.encode(" Hello")
    begin = vocabulary.timestamp_begin
    after_text = allowed(rules, window, [*start, ts(tokenizer, 0.4), *hello])
    assert after_text.min() == 0 and after_text.max() == WIDTH - 8  # text, the end, later timestamps
    assert ts(tokenizer, 0.2) not in after_text and ts(tokenizer, 0.42) in after_text
    closed = allowed(rules, window, [*start, ts(tokenizer, 0.4), *hello, ts(tokenizer, 1.0)])
    assert closed.min() == vocabulary.eot  # no text right after a closing timestamp
    assert ts(tokenizer, 1.0) in closed and ts(tokenizer, 0.98) not in closed
    pair = allowed(rules, window, [*start, ts(tokenizer, 0.4), *hello, ts(tokenizer, 1.0), ts(tokenizer, 1.0)])
    assert pair.max() < begin  # two timestamps in a row: text (or the end) must follow


def test_rules_suppress_symbols_specials_and_padding(rules: Any) -> None:
    _, vocabulary, tokenizer = rules
    window = prompt_window(tokenizer)
    start = tokenizer.sot_sequence("en", "transcribe")
    ok = set(allowed(rules, window, [*start, ts(tokenizer, 0.0), *tokenizer.encode(" Hi")]).tolist())
    assert not ok & set(vocabulary.suppress)
    assert vocabulary.no_timestamps not in ok and tokenizer.get().no_speech not in ok
    assert all(token < MULTILINGUAL_VOCAB for token in ok)


def test_rules_prefer_timestamps_when_they_outweigh_text(rules: Any) -> None:
    _, vocabulary, tokenizer = rules
    window = prompt_window(tokenizer)
    tokens = [*tokenizer.sot_sequence("en", "transcribe"), ts(tokenizer, 0.0), *tokenizer.encode(" Hi")]
    logits = torch.zeros(1, 1, WIDTH)
    logits[0, 0, vocabulary.timestamp_begin:] = 3.0  # many likely timestamps against one likely word
    logits[0, 0, tokenizer.encode(" there")[0]] = 8.0
    assert allowed(rules, window, tokens, logits).min() >= vocabulary.eot
    logits[0, 0, tokenizer.encode(" there")[0]] = 12.0
    assert allowed(rules, window, tokens, logits).min() == 0


def test_rules_without_timestamps_never_sample_one_and_do_not_start_blank(rules: Any) -> None:
    _, vocabulary, tokenizer = rules
    window = prompt_window(tokenizer, timestamps=False)
    start = [*tokenizer.sot_sequence("en", "transcribe"), vocabulary.no_timestamps]
    first = set(allowed(rules, window, start).tolist())
    assert max(first) < vocabulary.timestamp_begin and not first & set(vocabulary.blank)
    later = set(allowed(rules, window, [*start, *tokenizer.encode(" Hi")]).tolist())
    assert vocabulary.eot in later and tokenizer.encode(" ")[0] in later
    assert max(later) < vocabulary.timestamp_begin and vocabulary.no_timestamps not in later


def test_rules_leave_other_requests_alone(rules: Any) -> None:
    rule = rules[0]
    theirs = torch.randn(1, 1, WIDTH)
    before = theirs.clone()
    rule.apply([None], [theirs], [[[1, 2, 3]]])
    assert torch.equal(theirs, before)


# --------------------------------------------------------------------------------------------------
# Construction: settings, engine lookup, model checks, no tensorrt_llm needed to import


def test_engine_settings_name_the_bad_variable() -> None:
    check_engine_settings(ModelSettings())
    with pytest.raises(SettingsError, match="WHISPER_ENGINE"):
        check_engine_settings(ModelSettings(engine="tensorrt"))
    with pytest.raises(SettingsError, match="WHISPER_TRTLLM_ENGINE_DIR"):
        check_engine_settings(ModelSettings(engine="tensorrt_llm"))
    with pytest.raises(SettingsError, match="WHISPER_TRTLLM_CROSS_KV_CACHE_FRACTION"):
        check_engine_settings(ModelSettings(trtllm_cross_kv_cache_fraction=0.0))
    with pytest.raises(SettingsError, match="WHISPER_TRTLLM_ALIGNER"):
        check_engine_settings(ModelSettings(trtllm_aligner="dtw"))


def test_engine_settings_come_from_the_environment_and_the_rendered_config() -> None:
    from whisper_triton.settings import model_settings

    environment = {"WHISPER_ENGINE": "ctranslate2", "WHISPER_TRTLLM_KV_CACHE_FRACTION": "0.7"}
    parameters = {"WHISPER_ENGINE": "tensorrt_llm", "WHISPER_TRTLLM_ENGINE_DIR": "/engines",
                  "WHISPER_TRTLLM_MAX_BATCH_SIZE": "64", "WHISPER_MODEL": "large-v3-turbo"}
    settings = model_settings({**environment, **parameters})  # what the engine model does
    assert (settings.engine, settings.trtllm_engine_dir, settings.trtllm_max_batch_size) == (
        "tensorrt_llm", "/engines", 64)
    assert settings.trtllm_kv_cache_fraction == 0.7 and settings.trtllm_cross_kv_cache_fraction == 0.5
    assert settings.trtllm_aligner == "ctranslate2"


def test_engines_are_found_in_the_directory_or_under_the_model_id(tmp_path: Path) -> None:
    single = engine_dir(tmp_path / "one", MULTILINGUAL_VOCAB)
    assert find_engine_dir(single, "large-v3-turbo") == single
    nested = engine_dir(tmp_path / "all" / "large-v3-turbo", MULTILINGUAL_VOCAB)
    assert find_engine_dir(tmp_path / "all", "large-v3-turbo") == nested
    with pytest.raises(TensorRTLLMError, match="build_engines all --model small"):
        find_engine_dir(tmp_path / "all", "small")


def test_engine_config_is_read_from_trtllm_build_output(tmp_path: Path) -> None:
    config = EngineConfig.read(engine_dir(tmp_path, 51866, n_mels=128, num_languages=100, max_batch_size=64))
    assert (config.n_mels, config.num_languages, config.multilingual, config.max_batch_size) == (128, 100, True, 64)


def test_engines_of_another_model_are_refused(runtime: types.ModuleType, tmp_path: Path, base: Any) -> None:
    tokenizer, resolved, info = base
    engine_dir(tmp_path / "base", 51866, n_mels=128, num_languages=100)
    settings = ModelSettings(engine="tensorrt_llm", trtllm_engine_dir=str(tmp_path))
    with pytest.raises(TensorRTLLMError, match="were not built from base"):
        create_engine(settings, resolved, info, tokenizer)
    assert Executor.created == []


def test_create_engine_passes_the_settings(runtime: types.ModuleType, tmp_path: Path, base: Any) -> None:
    tokenizer, resolved, info = base
    engine_dir(tmp_path / "base", MULTILINGUAL_VOCAB, max_batch_size=64)
    settings = ModelSettings(engine="tensorrt_llm", trtllm_engine_dir=str(tmp_path), trtllm_max_batch_size=32,
                             trtllm_kv_cache_fraction=0.6, beam_size=2, trtllm_aligner="off")
    engine = create_engine(settings, resolved, info, tokenizer, device_id=0)
    config = Executor.created[-1].config
    assert (config.max_batch_size, config.max_beam_width, config.kv_cache_config.free_gpu_memory_fraction) == (
        32, 2, 0.6)
    assert engine._aligner.factory is None


def test_without_tensorrt_llm_the_engine_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, base: Any
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)
    with pytest.raises(TensorRTLLMError, match="needs TensorRT-LLM's Python package"):
        TensorRTLLMEngine(engine_dir(tmp_path, MULTILINGUAL_VOCAB), base[0])


def test_the_module_imports_without_tensorrt_llm() -> None:
    code = ("import sys, whisper_triton.trtllm_engine as m; "
            "assert 'tensorrt_llm' not in sys.modules; print(m.TensorRTLLMEngine.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "TensorRTLLMEngine"
