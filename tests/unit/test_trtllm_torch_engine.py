"""The PyTorch-route engine at TensorRT-LLM's LLM API, with the shared decoding code on top.

`tensorrt_llm.llmapi` is replaced by a fake that does, at the engine's boundary, what these TensorRT-LLM sources
do (NVIDIA/TensorRT-LLM main branch, 2026, as stored in the code index this was written from; file names are
TensorRT-LLM's):

- `tensorrt_llm/llmapi/llm.py` (`BaseLLM.__init__`, `generate_async`; stored version 4c05a748): an unknown LLM
  keyword raises ValueError; a text prompt with `multi_modal_data` goes through
  `tensorrt_llm/inputs/registry.py::create_input_processor_with_hash`, which calls `llm.input_processor` directly
  when its `multimodal_hashing_supported` is False and then asks it `get_vocab_size()` and `get_mm_token_ids()`;
  the processor's `multimodal_data` becomes the request's multimodal parameters.
- `tensorrt_llm/_torch/models/modeling_whisper.py` (pull request 16141; stored versions 01ac4b41 and 3aa5b34f):
  `WhisperInputProcessor` (`requires_encoder_features`, a prompt must start with <|startoftranscript|>, token-id
  prompts are not consumed, `max_tokens` capped to `max_target_positions` minus the prompt) hands the request
  `encoder_input_features` of shape [1, ...] and `encoder_output_len` = `max_source_positions`; the encoder takes a
  [batch, num_mel_bins, 3000] log-mel (01ac4b41 without casting it: the model's dtype is required here).
- `tensorrt_llm/_torch/pyexecutor/engine/runners/encoder_decoder.py` (`EncoderStage._prepare_feature_inputs`,
  `_pack_features`): the features of a batch are concatenated on dimension 0 and share one shape; the packed
  encoder length (the sum of `encoder_output_len`) must fit `max_num_tokens`.
- The decoder runner's `_execute_logit_post_processors` / `_apply_logits_processors`: before sampling, per request,
  a processor whose signature has 4 or 5 parameters is called as `lp(request_id, logits.view(beam, 1, vocab),
  token ids per beam (prompt included), None, None)` and edits the logits in place.
- `tensorrt_llm/sampling_params.py`: `SamplingParams` is a keyword-only dataclass (an unknown keyword is a
  TypeError); log-probabilities in the PyTorch backend's default mode (RAW, TensorRT-LLM pull request 12514) come
  from the logits the processors left, before temperature.
- `tensorrt_llm/executor/result.py`: `GenerationResult.result(timeout)`, `abort()`, `finished`; `CompletionOutput`
  with `token_ids` (prompt excluded, the end id included when generated), `logprobs` (per position, {token id:
  Logprob}), `cumulative_logprob`, `finish_reason`.
- `tensorrt_llm/executor/executor.py` and `tensorrt_llm/llmapi/utils.py`: with one GPU the worker is another
  process unless `TLLM_WORKER_USE_SINGLE_PROCESS=1`; there, processors work on copies of ours (the fake copies them).
- `docs/source/models/encoder-decoder.md`: `cross_kv_cache_fraction` is required, `max_input_len` at least 1500,
  chunked prefill off, beam search `best_of` at most `max_beam_width`.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import subprocess
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
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
from whisper_triton.trtllm_common import TensorRTLLMError, check_engine_settings
from whisper_triton.trtllm_route import create_engine as route_engine
from whisper_triton.trtllm_torch_engine import (
    SINGLE_PROCESS,
    TensorRTLLMTorchEngine,
    create_engine,
    find_checkpoint_dir,
)

# --------------------------------------------------------------------------------------------------
# The fake LLM API


@dataclass(kw_only=True)
class KvCacheConfig:
    enable_block_reuse: bool = True
    free_gpu_memory_fraction: float | None = None
    cross_kv_cache_fraction: float | None = None
    use_kv_cache_manager_v2: bool = False


@dataclass(kw_only=True)
class SchedulerConfig:
    use_python_scheduler: bool = False


@dataclass(kw_only=True)
class SamplingParams:
    end_id: int | None = None
    pad_id: int | None = None
    max_tokens: int = 32
    logits_processor: Any = None
    n: int = 1
    best_of: int | None = None
    use_beam_search: bool = False
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    temperature: float | None = None
    logprobs: int | None = None
    detokenize: bool = True

    def __post_init__(self) -> None:
        if self.best_of is not None and self.best_of < self.n:
            raise ValueError(f"best_of ({self.best_of}) cannot be less than n ({self.n})")


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None


@dataclass
class CompletionOutput:
    index: int
    token_ids: list[int] = field(default_factory=list)
    cumulative_logprob: float | None = None
    logprobs: list[dict[int, Logprob]] = field(default_factory=list)
    finish_reason: str | None = None


class RequestError(RuntimeError):
    pass


class RequestOutput:
    def __init__(self, llm: LLM, request_id: int) -> None:
        self.llm, self.request_id = llm, request_id
        self.outputs = [CompletionOutput(0)]
        self._done = False
        self.error = ""
        self.aborted = False

    @property
    def finished(self) -> bool:
        return self._done

    def result(self, timeout: float | None = None) -> RequestOutput:
        assert timeout is None or timeout > 0
        self.llm._run(until=self)
        if self.error:
            raise RequestError(self.error)
        return self

    def abort(self) -> None:
        self.aborted = True
        self.llm.aborted.append(self.request_id)


class WhisperInputProcessor:
    """What TensorRT-LLM's own processor does with what it is given (modeling_whisper.py)."""

    requires_encoder_features = True
    multimodal_hashing_supported = False

    def __init__(self, sot: int) -> None:
        self.sot = sot

    def get_vocab_size(self) -> int | None:
        return None

    def get_mm_token_ids(self) -> torch.Tensor | None:
        return None

    def get_mm_special_token_ids(self) -> torch.Tensor | None:
        return None

    def __call__(self, inputs: dict[str, Any], sampling_params: SamplingParams) -> tuple[list[int], dict[str, Any]]:
        raise ValueError("A Whisper text prompt overrides the decoder prompt and must start with "
                         "<|startoftranscript|>")


@dataclass
class _Running:
    id: int
    output: RequestOutput
    prompt: list[int]
    features: torch.Tensor
    params: SamplingParams
    processors: list[Any]
    generator: torch.Generator
    generated: list[int] = field(default_factory=list)


class LLM:
    """Runs the toy model over all submitted requests, `max_batch_size` at a time (in flight)."""

    created: ClassVar[list[LLM]] = []
    model: ToyModel
    fail: str = ""
    in_process: bool | None = None  # None: as TLLM_WORKER_USE_SINGLE_PROCESS says when the LLM is created
    # TorchLlmArgs fields the engine may use (llm_args.py); anything else is refused like the real constructor.
    FIELDS: ClassVar[set[str]] = {
        "backend", "attn_backend", "max_batch_size", "max_beam_width", "max_input_len", "max_seq_len", "max_num_tokens",
        "enable_chunked_prefill", "kv_cache_config", "scheduler_config"}

    def __init__(self, model: str | Path, tokenizer: Any = None, tokenizer_mode: str = "auto",
                 skip_tokenizer_init: bool = False, trust_remote_code: bool = False, tensor_parallel_size: int = 1,
                 dtype: str = "auto", revision: str | None = None, tokenizer_revision: str | None = None,
                 **kwargs: Any) -> None:
        for key in kwargs:
            if key not in self.FIELDS:
                raise ValueError(f"LLM got invalid argument: {key}")
        assert kwargs.get("backend") == "pytorch"
        config = json.loads((Path(model) / "config.json").read_text())
        assert config["model_type"] == "whisper"
        cache = kwargs["kv_cache_config"]
        assert isinstance(cache, KvCacheConfig)
        if cache.cross_kv_cache_fraction is None:
            raise ValueError("cross_kv_cache_fraction is required for encoder-decoder models")
        assert kwargs["max_input_len"] >= config["max_source_positions"]  # the cross-KV pool is sized by it
        assert kwargs["max_seq_len"] >= config["max_source_positions"]
        assert kwargs.get("enable_chunked_prefill") is False
        assert isinstance(kwargs.get("scheduler_config"), SchedulerConfig)
        self.args = {"model": str(model), "dtype": dtype, **kwargs}
        self.hf = config
        self.max_batch_size = kwargs.get("max_batch_size", 2048)
        self.max_beam_width = kwargs.get("max_beam_width", 1)
        self.single_process = os.environ.get(SINGLE_PROCESS) == "1" if self.in_process is None else self.in_process
        self.input_processor: Any = WhisperInputProcessor(config["decoder_start_token_id"])
        self.requests: list[_Running] = []
        self.batches: list[int] = []  # requests per step
        self.encoder_passes: list[int] = []  # requests per encoder pass
        self.aborted: list[int] = []
        self.shut_down = False
        self._pending: list[_Running] = []
        self._active: list[_Running] = []
        self._next_id = 100
        LLM.created.append(self)

    def shutdown(self) -> None:
        self.shut_down = True

    def generate_async(self, inputs: Any, sampling_params: SamplingParams | None = None, lora_request: Any = None,
                       prompt_adapter_request: Any = None, streaming: bool = False,
                       kv_cache_retention_config: Any = None, disaggregated_params: Any = None,
                       _postproc_params: Any = None, scheduling_params: Any = None,
                       cache_salt: str | None = None) -> RequestOutput:
        params = sampling_params or SamplingParams()
        assert isinstance(params, SamplingParams) and isinstance(inputs, dict)
        if "prompt" not in inputs or "multi_modal_data" not in inputs:
            raise ValueError("Whisper requires multi_modal_data['audio'] (token-id prompts carry no encoder input)")
        processor = self.input_processor
        assert processor.multimodal_hashing_supported is False  # else the registry hashes the audio items
        prompt, extra = processor(inputs, params)
        assert processor.get_vocab_size() is None and processor.get_mm_token_ids() is None
        audio = extra["multimodal_data"]["audio"]
        features, positions = audio["encoder_input_features"], audio["encoder_output_len"]
        assert positions == self.hf["max_source_positions"]
        assert isinstance(features, torch.Tensor)
        assert tuple(features.shape) == (1, self.hf["num_mel_bins"], 2 * positions)  # the mel the encoder takes
        assert features.dtype == {"float16": torch.float16, "bfloat16": torch.bfloat16}[self.args["dtype"]]
        assert len(prompt) + params.max_tokens <= self.hf["max_target_positions"]
        if params.use_beam_search:
            assert params.best_of is not None and params.best_of <= self.max_beam_width and params.n == 1
        processors = params.logits_processor if isinstance(params.logits_processor, list) else [
            params.logits_processor] if params.logits_processor else []
        for lp in processors:
            assert 4 <= len(inspect.signature(lp).parameters) <= 5, "the LogitsProcessor interface"
        if not self.single_process:  # the worker process works on copies of the request's objects
            processors = [copy.deepcopy(lp) for lp in processors]
        self._next_id += 1
        output = RequestOutput(self, self._next_id)
        generator = torch.Generator().manual_seed(params.seed or 0)
        running = _Running(self._next_id, output, prompt, features, params, processors, generator)
        self._pending.append(running)
        self.requests.append(running)
        return output

    def _run(self, until: RequestOutput) -> None:
        """Steps every request in flight until `until` is done (as the executor loop runs, whoever waits)."""
        positions = self.hf["max_source_positions"]
        while not until.finished:
            admitted = []
            while self._pending and len(self._active) + len(admitted) < self.max_batch_size:
                running = self._pending.pop(0)
                if running.output.aborted:
                    self._finish(running, "cancelled")
                else:
                    admitted.append(running)
            if admitted:
                assert len({tuple(r.features.shape) for r in admitted}) == 1  # torch.cat on dimension 0
                assert positions * len(admitted) <= self.args["max_num_tokens"]
                self.encoder_passes.append(len(admitted))
                self._active += admitted
            assert self._active or until.finished, "a request that is neither queued nor running never ends"
            if self._active:
                self.batches.append(len(self._active))
            for running in list(self._active):
                if running.output.aborted:
                    self._finish(running, "cancelled")
                elif self._step(running):
                    self._finish(running, running.output.outputs[0].finish_reason)

    def _finish(self, running: _Running, reason: str | None) -> None:
        running.output.outputs[0].finish_reason = reason
        running.output._done = True
        if running in self._active:
            self._active.remove(running)

    def _step(self, running: _Running) -> bool:
        params = running.params
        beam = params.best_of if params.use_beam_search else 1
        tokens = running.prompt + running.generated
        logits = type(self).model(running.features[0].T, tokens).repeat(beam, 1, 1)  # [beam, 1, vocab]
        for lp in running.processors:
            lp(running.id, logits, [list(tokens)] * beam, None, None)
        row = logits[0, 0].float()
        log_probs = torch.log_softmax(row, dim=-1)  # RAW: the processed logits, before temperature
        if params.temperature:
            token = int(torch.multinomial(torch.softmax(row / params.temperature, dim=-1), 1,
                                          generator=running.generator))
        else:
            token = int(torch.argmax(row))
        running.generated.append(token)
        output = running.output.outputs[0]
        output.token_ids.append(token)
        output.cumulative_logprob = (output.cumulative_logprob or 0.0) + float(log_probs[token])
        if params.logprobs is not None:
            output.logprobs.append({token: Logprob(float(log_probs[token]), 1)})
        if token == params.end_id or len(running.generated) >= params.max_tokens:
            output.finish_reason = "stop" if token == params.end_id else "length"
            running.output.error = self.fail
            return True
        return False


def fake_llmapi() -> types.ModuleType:
    module = types.ModuleType("tensorrt_llm.llmapi")
    for item in (LLM, KvCacheConfig, SamplingParams, SchedulerConfig):
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
def llmapi(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    module = fake_llmapi()
    package = types.ModuleType("tensorrt_llm")
    package.llmapi = module  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt_llm", package)
    monkeypatch.setitem(sys.modules, "tensorrt_llm.llmapi", module)
    monkeypatch.setenv(SINGLE_PROCESS, "0")  # restored (unset) afterwards: the engine sets it
    LLM.created = []
    LLM.fail = ""
    LLM.in_process = None
    yield module


@pytest.fixture(scope="module")
def base() -> tuple[WhisperTokenizer, ResolvedModel, ModelInfo]:
    return load("base")


@pytest.fixture(scope="module")
def english() -> tuple[WhisperTokenizer, ResolvedModel, ModelInfo]:
    return load("tiny.en")


def checkpoint(root: Path, vocab_size: int, n_mels: int = 80, dtype: str = "float16") -> Path:
    """The files of a Hugging Face Whisper checkpoint that the engine reads (weights are TensorRT-LLM's business)."""
    root.mkdir(parents=True, exist_ok=True)
    config = {"model_type": "whisper", "architectures": ["WhisperForConditionalGeneration"], "vocab_size": vocab_size,
              "num_mel_bins": n_mels, "max_source_positions": 1500, "max_target_positions": 448,
              "decoder_start_token_id": 50258, "torch_dtype": dtype}
    (root / "config.json").write_text(json.dumps(config))
    (root / "model.safetensors").write_bytes(b"weights")
    return root


def make_engine(tmp_path: Path, tokenizer: WhisperTokenizer, scripts: dict[int, Script], vocab: int,
                **kwargs: Any) -> TensorRTLLMTorchEngine:
    folder = checkpoint(tmp_path / "whisper", vocab, dtype=kwargs.pop("dtype", "float16"))
    LLM.model = toy_model(tokenizer, scripts, vocab)
    return TensorRTLLMTorchEngine(folder, tokenizer, **kwargs)


# --------------------------------------------------------------------------------------------------
# The LLM and its requests


def test_the_llm_serves_the_checkpoint_on_the_pytorch_backend_in_this_process(
    llmapi: types.ModuleType, tmp_path: Path, base: Any
) -> None:
    engine = make_engine(tmp_path, base[0], {}, MULTILINGUAL_VOCAB, max_batch_size=32, kv_cache_fraction=0.7,
                         cross_kv_cache_fraction=0.4, beam_width=2)
    llm = LLM.created[-1]
    assert llm.args["model"] == str(tmp_path / "whisper") and llm.args["attn_backend"] == "TRTLLM"
    assert (llm.args["dtype"], llm.max_batch_size, llm.max_beam_width) == ("float16", 32, 2)
    assert llm.args["max_num_tokens"] == 32 * 1500  # a whole batch of encoders in one pass
    cache = llm.args["kv_cache_config"]
    assert (cache.free_gpu_memory_fraction, cache.cross_kv_cache_fraction, cache.enable_block_reuse) == (
        0.7, 0.4, False)
    assert llm.single_process and os.environ[SINGLE_PROCESS] == "1"
    assert (engine.n_mels, engine.is_multilingual, engine.num_languages) == (80, True, 99)
    engine.close()
    assert llm.shut_down


def test_requests_carry_our_prompt_and_log_mel_in_the_model_dtype(
    llmapi: types.ModuleType, tmp_path: Path, base: Any
) -> None:
    tokenizer = base[0]
    engine = make_engine(tmp_path, tokenizer, {1: Script("en", ((0.0, 1.0, " Hi."),))}, MULTILINGUAL_VOCAB,
                         dtype="bfloat16")
    features = windows([1])
    encoded = engine.encode(features)
    assert encoded.items[0].dtype == torch.bfloat16 and encoded.items[0].device.type == "cpu"
    prompt = [tokenizer.sot_prev, *tokenizer.encode(" Earlier words."), *tokenizer.sot_sequence("en", "transcribe")]
    engine.generate(encoded, [prompt], 0.0, 1, 448)
    (request,) = LLM.created[-1].requests
    assert request.prompt == prompt[: prompt.index(tokenizer.get().sot) + 1]  # the rest is forced by the rules
    assert torch.equal(request.features[0].float(), torch.from_numpy(features[0]).to(torch.bfloat16).float())
    params = request.params
    assert (params.end_id, params.pad_id, params.detokenize, params.temperature) == (
        tokenizer.eot, tokenizer.eot, False, 0.0)
    assert len(request.prompt) + params.max_tokens == 448


def test_features_of_the_wrong_shape_are_refused(llmapi: types.ModuleType, tmp_path: Path, base: Any) -> None:
    engine = make_engine(tmp_path, base[0], {}, MULTILINGUAL_VOCAB)
    with pytest.raises(ValueError, match="features must be"):
        engine.encode(np.zeros((1, 128, ENCODER_FRAMES), dtype=np.float32))


# --------------------------------------------------------------------------------------------------
# Shared decoding on the engine: segments, timestamps, languages, silence, fallback


def test_windows_decode_to_timestamped_segments_in_one_in_flight_batch(
    llmapi: types.ModuleType, tmp_path: Path, base: Any
) -> None:
    tokenizer = base[0]
    scripts = {
        1: Script("en", ((0.0, 2.5, " And so my fellow Americans,"), (2.5, 5.0, " ask not."))),
        2: Script("en", ((0.5, 3.0, " What your country can do for you."),)),
        3: Script("en", ((0.0, 1.0, " Yes."),)),
    }
    engine = make_engine(tmp_path, tokenizer, scripts, MULTILINGUAL_VOCAB, max_batch_size=2)
    results = decode_windows(engine, tokenizer, [job(i, language="en") for i in (1, 2, 3)])
    assert texts(results[0]) == [(0.0, 2.5, " And so my fellow Americans,"), (2.5, 5.0, " ask not.")]
    assert texts(results[1]) == [(0.5, 3.0, " What your country can do for you.")]
    assert texts(results[2]) == [(0.0, 1.0, " Yes.")]
    llm = LLM.created[-1]
    assert max(llm.batches) == 2 and llm.encoder_passes[0] == 2  # the batch, refilled as requests finish
    for result in results:
        segment = result.segments[0]
        assert -0.01 < segment.avg_logprob <= 0
        assert 0 <= segment.no_speech_prob < 0.01


def test_languages_are_detected_at_the_start_of_transcript(
    llmapi: types.ModuleType, tmp_path: Path, base: Any
) -> None:
    tokenizer = base[0]
    scripts = {1: Script("fr", ((0.0, 2.0, " Bonjour à tous."),)), 2: Script("es", ((0.0, 2.0, " Hola."),))}
    engine = make_engine(tmp_path, tokenizer, scripts, MULTILINGUAL_VOCAB)
    results = decode_windows(engine, tokenizer, [job(1), job(2)])
    assert [r.language for r in results] == ["fr", "es"]
    assert results[0].language_probability == pytest.approx(np.exp(8) / (np.exp(8) + np.exp(6) + 97), rel=1e-3)
    assert texts(results[0]) == [(0.0, 2.0, " Bonjour à tous.")]
    requests = LLM.created[-1].requests
    detection, generation = requests[:2], requests[2:]
    assert all(r.prompt == [tokenizer.get().sot] and r.params.max_tokens == 1 for r in detection)
    assert all(r.prompt == [tokenizer.get().sot] for r in generation)


def test_a_given_language_is_forced_after_the_start_of_transcript(
    llmapi: types.ModuleType, tmp_path: Path, base: Any
) -> None:
    tokenizer = base[0]
    engine = make_engine(tmp_path, tokenizer, {1: Script("en", ((0.0, 1.0, " Hello."),))}, MULTILINGUAL_VOCAB)
    generation = engine.generate(engine.encode(windows([1])), [tokenizer.sot_sequence("de", "translate")], 0.0,
                                 1, 448)[0]
    assert tokenizer.decode(generation.tokens) == " Hello."  # forced tokens are not part of the output
    assert generation.tokens[0] == ts(tokenizer, 0.0)


def test_avg_logprob_is_openais_untempered_mean_over_the_text_and_the_end(
    llmapi: types.ModuleType, tmp_path: Path, base: Any
) -> None:
    tokenizer = base[0]
    engine = make_engine(tmp_path, tokenizer, {1: Script("en", ((0.0, 1.0, " Hi."),), margin=12.0)},
                         MULTILINGUAL_VOCAB)
    encoded = engine.encode(windows([1]))
    greedy = engine.generate(encoded, [tokenizer.sot_sequence("en", "transcribe")], 0.0, 1, 448)[0]
    output = LLM.created[-1].requests[-1].output.outputs[0]
    generated = [next(iter(d)) for d in output.logprobs]
    assert generated[-1] == tokenizer.eot and generated[:2] == tokenizer.sot_sequence("en", "transcribe")[1:]
    text = sum(next(iter(d.values())).logprob for d in output.logprobs[2:])  # forced tokens log-probability 0
    assert greedy.avg_logprob == pytest.approx(text / (len(greedy.tokens) + 1))
    assert greedy.avg_logprob < -0.05  # a margin of 12 over 51865 tokens: not certain
    # Sampled at another temperature the same tokens score the same: log-probabilities are not tempered.
    sampled = engine.generate(encoded, [tokenizer.sot_sequence("en", "transcribe")], 0.2, 1, 448)[0]
    assert sampled.tokens == greedy.tokens and sampled.avg_logprob == pytest.approx(greedy.avg_logprob)


def test_silence_has_a_high_no_speech_probability_and_no_segments(
    llmapi: types.ModuleType, tmp_path: Path, base: Any
) -> None:
    tokenizer = base[0]
    engine = make_engine(tmp_path, tokenizer, {1: Script(silent=True)}, MULTILINGUAL_VOCAB)
    (result,) = decode_windows(engine, tokenizer, [job(1, language="en")])
    assert result.segments == []
    assert len(LLM.created[-1].requests) == 1  # silence is not retried at higher temperatures
    generation = engine.generate(engine.encode(windows([1])), [tokenizer.sot_sequence("en", "transcribe")], 0.0,
                                 1, 448)[0]
    assert generation.no_speech_prob > 0.9 and generation.avg_logprob < -1


def test_english_only_models_prompt_with_the_start_of_transcript_alone(
    llmapi: types.ModuleType, tmp_path: Path, english: Any
) -> None:
    tokenizer = english[0]
    engine = make_engine(tmp_path, tokenizer, {1: Script(segments=((0.0, 2.0, " Ask not."),))}, ENGLISH_VOCAB)
    assert not engine.is_multilingual and engine.num_languages == 1
    (result,) = decode_windows(engine, tokenizer, [job(1)])
    assert (result.language, texts(result)) == ("en", [(0.0, 2.0, " Ask not.")])
    assert LLM.created[-1].requests[0].prompt == [tokenizer.get().sot]


def test_repetitive_output_falls_back_to_seeded_sampling(
    llmapi: types.ModuleType, tmp_path: Path, base: Any
) -> None:
    tokenizer = base[0]
    engine = make_engine(tmp_path, tokenizer, {1: Script("en", ((0.0, 9.0, " the" * 20),))}, MULTILINGUAL_VOCAB)
    (result,) = decode_windows(engine, tokenizer, [job(1, language="en")])
    params = [r.params for r in LLM.created[-1].requests]
    assert [p.temperature for p in params] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert all(p.top_k is None and p.top_p is None for p in params)  # the whole distribution
    assert len({p.seed for p in params[1:]}) == 5
    assert result.segments and result.segments[0].temperature == 0.0  # every attempt failed: the best is kept


def test_greedy_passes_search_the_beam_and_fallbacks_sample(
    llmapi: types.ModuleType, tmp_path: Path, base: Any
) -> None:
    tokenizer = base[0]
    engine = make_engine(tmp_path, tokenizer, {1: Script("en", ((0.0, 1.0, " Hello."),))}, MULTILINGUAL_VOCAB,
                         beam_width=4)
    (result,) = decode_windows(engine, tokenizer, [job(1, language="en", beam_size=1)])
    assert texts(result) == [(0.0, 1.0, " Hello.")]
    (request,) = LLM.created[-1].requests
    assert (request.params.use_beam_search, request.params.best_of, request.params.n) == (True, 4, 1)
    engine.generate(engine.encode(windows([1])), [tokenizer.sot_sequence("en", "transcribe")], 0.4, 4, 448)
    assert LLM.created[-1].requests[-1].params.use_beam_search is False


def test_long_previous_text_is_trimmed_to_half_the_decoder_positions(
    llmapi: types.ModuleType, tmp_path: Path, base: Any
) -> None:
    tokenizer = base[0]
    engine = make_engine(tmp_path, tokenizer, {1: Script("en", ((0.0, 1.0, " Hi."),))}, MULTILINGUAL_VOCAB)
    prompt = [tokenizer.sot_prev, *tokenizer.encode(" word" * 400), *tokenizer.sot_sequence("en", "transcribe")]
    engine.generate(engine.encode(windows([1])), [prompt], 0.0, 1, 448)
    (request,) = LLM.created[-1].requests
    assert len(request.prompt) == 225 and request.prompt[0] == tokenizer.sot_prev
    assert request.prompt[-1] == tokenizer.get().sot


def test_runtime_errors_fail_the_call_and_abort_the_rest(
    llmapi: types.ModuleType, tmp_path: Path, base: Any
) -> None:
    tokenizer = base[0]
    engine = make_engine(tmp_path, tokenizer, {1: Script("en", ((0.0, 1.0, " Hi."),))}, MULTILINGUAL_VOCAB,
                         max_batch_size=1)
    LLM.fail = "Encoder packed length (3000) exceeds max_num_tokens (1500)."
    with pytest.raises(TensorRTLLMError, match="exceeds max_num_tokens"):
        engine.generate(engine.encode(windows([1, 1, 1])), [tokenizer.sot_sequence("en", "transcribe")] * 3, 0.0,
                        1, 448)
    llm = LLM.created[-1]
    assert llm.aborted == [r.id for r in llm.requests[1:]]  # the first failed; the others were still queued
    assert all(r.output.finished for r in llm.requests) and llm._pending == llm._active == []
    assert [r.output.outputs[0].finish_reason for r in llm.requests[1:]] == ["cancelled", "cancelled"]


def test_rules_that_ran_in_another_process_fail_the_call(
    llmapi: types.ModuleType, tmp_path: Path, base: Any
) -> None:
    tokenizer = base[0]
    LLM.in_process = False  # what TensorRT-LLM does without TLLM_WORKER_USE_SINGLE_PROCESS=1
    engine = make_engine(tmp_path, tokenizer, {1: Script("fr", ((0.0, 1.0, " Oui."),))}, MULTILINGUAL_VOCAB)
    with pytest.raises(TensorRTLLMError, match="TLLM_WORKER_USE_SINGLE_PROCESS"):
        engine.generate(engine.encode(windows([1])), [tokenizer.sot_sequence("fr", "transcribe")], 0.0, 1, 448)


def test_a_failing_rule_fails_only_our_call(llmapi: types.ModuleType, tmp_path: Path, base: Any) -> None:
    tokenizer = base[0]
    engine = make_engine(tmp_path, tokenizer, {1: Script("en", ((0.0, 1.0, " Hi."),))}, MULTILINGUAL_VOCAB)
    engine._rules.vocabulary = None  # type: ignore[assignment]
    with pytest.raises(TensorRTLLMError, match="decoding rules failed: AttributeError"):
        engine.generate(engine.encode(windows([1])), [tokenizer.sot_sequence("en", "transcribe")], 0.0, 1, 448)


def test_the_llms_input_processor_refuses_our_windows_and_is_replaced(
    llmapi: types.ModuleType, tmp_path: Path, base: Any
) -> None:
    tokenizer = base[0]
    make_engine(tmp_path, tokenizer, {}, MULTILINGUAL_VOCAB)
    processor = LLM.created[-1].input_processor
    assert type(processor).__name__ == "WindowInputs" and processor.requires_encoder_features
    assert processor.sot == tokenizer.get().sot  # anything else is asked of the one it replaced
    with pytest.raises(ValueError, match="must start with"):
        WhisperInputProcessor(tokenizer.get().sot)({"prompt": "<|startofprev|>"}, SamplingParams())


# --------------------------------------------------------------------------------------------------
# Words: the CTranslate2 aligner of the same checkpoint


def test_words_come_from_the_aligner_on_the_float32_features(
    llmapi: types.ModuleType, tmp_path: Path, base: Any
) -> None:
    tokenizer = base[0]
    aligner = FakeAligner([])
    engine = make_engine(tmp_path, tokenizer, {1: Script("en", ((0.0, 2.0, " Ask not what."),))},
                         MULTILINGUAL_VOCAB, aligner=lambda: aligner)
    (result,) = decode_windows(engine, tokenizer, [job(1, language="en", word_timestamps=True)])
    assert [w.word for w in result.segments[0].words] == [" Ask", " not", " what."]
    assert aligner.calls[0] == ("encode", (1, 80, ENCODER_FRAMES), np.float32)


def test_without_an_aligner_segments_come_without_words(
    llmapi: types.ModuleType, tmp_path: Path, base: Any
) -> None:
    tokenizer = base[0]
    engine = make_engine(tmp_path, tokenizer, {1: Script("en", ((0.0, 2.0, " Ask not."),))}, MULTILINGUAL_VOCAB)
    (result,) = decode_windows(engine, tokenizer, [job(1, language="en", word_timestamps=True)])
    assert texts(result) == [(0.0, 2.0, " Ask not.")] and result.segments[0].words == []


# --------------------------------------------------------------------------------------------------
# Construction: the checkpoint, the route, no tensorrt_llm needed to import


def test_checkpoints_are_found_where_build_engines_puts_them(tmp_path: Path) -> None:
    single = checkpoint(tmp_path / "one", MULTILINGUAL_VOCAB)
    assert find_checkpoint_dir(single, "large-v3-turbo") == single
    nested = checkpoint(tmp_path / "all" / "large-v3-turbo" / "hf", MULTILINGUAL_VOCAB)
    assert find_checkpoint_dir(tmp_path / "all", "large-v3-turbo") == nested
    (tmp_path / "all" / "small").mkdir()
    (tmp_path / "all" / "small" / "config.json").write_text(json.dumps({"architecture": "WhisperEncoder"}))
    with pytest.raises(TensorRTLLMError, match="build_engines all --route pytorch --model small"):
        find_checkpoint_dir(tmp_path / "all", "small")


def test_a_checkpoint_of_another_model_is_refused(llmapi: types.ModuleType, tmp_path: Path, base: Any) -> None:
    tokenizer, resolved, info = base
    checkpoint(tmp_path / "base" / "hf", 51866, n_mels=128)
    settings = ModelSettings(engine="tensorrt_llm", trtllm_route="pytorch", trtllm_engine_dir=str(tmp_path))
    with pytest.raises(TensorRTLLMError, match="is not base"):
        create_engine(settings, resolved, info, tokenizer)
    assert LLM.created == []


def test_the_route_setting_picks_the_pytorch_engine(llmapi: types.ModuleType, tmp_path: Path, base: Any) -> None:
    tokenizer, resolved, info = base
    checkpoint(tmp_path / "base" / "hf", MULTILINGUAL_VOCAB)
    settings = ModelSettings(engine="tensorrt_llm", trtllm_route="pytorch", trtllm_engine_dir=str(tmp_path),
                             trtllm_max_batch_size=16, beam_size=2, trtllm_aligner="off")
    engine = route_engine(settings, resolved, info, tokenizer, device_id=0)
    assert isinstance(engine, TensorRTLLMTorchEngine) and engine._aligner.factory is None
    assert (LLM.created[-1].max_batch_size, LLM.created[-1].max_beam_width) == (16, 2)
    with pytest.raises(SettingsError, match="WHISPER_TRTLLM_ROUTE"):
        check_engine_settings(ModelSettings(trtllm_route="tensorrt"))


def test_without_tensorrt_llm_the_engine_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, base: Any
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)
    monkeypatch.setenv(SINGLE_PROCESS, "0")
    with pytest.raises(TensorRTLLMError, match="needs TensorRT-LLM's Python package"):
        TensorRTLLMTorchEngine(checkpoint(tmp_path, MULTILINGUAL_VOCAB), base[0])


def test_the_module_imports_without_tensorrt_llm() -> None:
    code = ("import sys, whisper_triton.trtllm_torch_engine as m, whisper_triton.trtllm_route as r; "
            "assert 'tensorrt_llm' not in sys.modules; print(m.TensorRTLLMTorchEngine.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "TensorRTLLMTorchEngine"
