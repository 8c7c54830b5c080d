"""Whisper on TensorRT-LLM (GPU), behind the same `WhisperEngine` protocol as the CTranslate2 engine.

The runtime is TensorRT-LLM's C++ executor (`tensorrt_llm.bindings.executor.Executor`, the object that
`ModelRunnerCpp` wraps) on the encoder and decoder engines of `build_engines`: every window is one request
(its log-mel as `encoder_input_features` [3000, n_mels] in the engine's dtype, `encoder_output_length` 1500,
its prompt as decoder input ids), and the executor batches the requests in flight. We call the executor
directly rather than `ModelRunnerCpp.generate`, which waits on `await_responses()` for any request and so
cannot share an executor between calls, and has no hook for Whisper's decoding rules.

Whisper's rules live in the executor's batched logits post-processor, run on every decoding step of every
request: the prompt is sent up to `<|startoftranscript|>` and the rest of the start sequence (language, task)
is forced there, so the first step sees the logits at the start-of-transcript position, where OpenAI's
Whisper reads `no_speech_prob` and detects the language; then suppressed tokens, a blank first token, and
the timestamp rules (pairs, monotonic times, the first timestamp within 1 s, timestamps when they
outweigh text) as OpenAI's `ApplyTimestampRules`. Word timestamps need cross-attention weights, which the
TensorRT-LLM engines do not expose: `align` runs on a CTranslate2 CUDA model of the same checkpoint.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from whisper_triton.engine import Alignment, Generation, WhisperEngine
from whisper_triton.settings import ModelSettings, SettingsError

if TYPE_CHECKING:
    from whisper_triton.models import ModelInfo, ResolvedModel
    from whisper_triton.text import WhisperTokenizer

log = logging.getLogger("whisper_triton.trtllm_engine")

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
        "WHISPER_TRTLLM_ENGINE_DIR": (
            settings.engine != "tensorrt_llm" or bool(settings.trtllm_engine_dir),
            "the engines of `python -m build_engines` (needed with WHISPER_ENGINE=tensorrt_llm)",
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
class _Window:
    """One executor request and what its logits post-processor needs and captures."""

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
    """Windows ready for the executor, which runs the encoder inside each request."""

    host: np.ndarray  # (batch, n_mels, 3000) float32, for the word aligner
    items: list[torch.Tensor] = field(default_factory=list)  # (3000, n_mels) each, in the engine's dtype


class TensorRTLLMEngine:
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
        self._windows: dict[int, _Window] = {}
        self._lock = threading.Lock()
        self._client_ids = itertools.count(1)
        self._seeds = itertools.count(1)
        self._aligner_factory = aligner
        self._aligner: WhisperEngine | None = None
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
        if features.ndim != 3 or features.shape[1:] != (self.n_mels, ENCODER_FRAMES):
            raise ValueError(f"features must be (batch, {self.n_mels}, {ENCODER_FRAMES}), got {features.shape}")
        host = np.ascontiguousarray(features, dtype=np.float32)
        frames = torch.from_numpy(host).to(self._device).transpose(1, 2).to(self._dtype)
        return Encoded(host, [item.contiguous() for item in frames])

    def take(self, encoded: Encoded, indices: list[int]) -> Encoded:
        return Encoded(encoded.host[indices], [encoded.items[i] for i in indices])

    def join(self, parts: list[Encoded]) -> Encoded:
        return Encoded(np.concatenate([part.host for part in parts]), [item for part in parts for item in part.items])

    def detect_language(self, encoded: Encoded) -> list[list[tuple[str, float]]]:
        if not self.is_multilingual:
            return [[("en", 1.0)] for _ in encoded.items]
        windows = [_Window([self.vocabulary.sot], [], 1, timestamps=False, detect=True) for _ in encoded.items]
        self._run(encoded, windows, temperature=0.0)
        rankings = []
        for window in windows:
            if window.languages is None:
                raise TensorRTLLMError("the executor returned without running the language detection step")
            probs = window.languages.float().cpu().tolist()
            pairs = zip(self.vocabulary.language_codes, probs, strict=True)
            rankings.append(sorted(((code, float(p)) for code, p in pairs), key=lambda pair: -pair[1]))
        return rankings

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
        windows = [self._window(prompt, max_length) for prompt in prompts]
        results = self._run(encoded, windows, temperature)
        return [self._generation(window, result) for window, result in zip(windows, results, strict=True)]

    def align(
        self,
        encoded: Encoded,
        start_sequence: list[int],
        text_tokens: list[list[int]],
        num_frames: list[int],
    ) -> list[Alignment]:
        aligner = self._word_aligner()
        if aligner is None:
            return [Alignment(pairs=[], token_probs=[]) for _ in text_tokens]
        return aligner.align(aligner.encode(encoded.host), start_sequence, text_tokens, num_frames)

    # -- requests

    def _window(self, prompt: list[int], max_length: int) -> _Window:
        vocabulary = self.vocabulary
        split = prompt.index(vocabulary.sot) + 1 if vocabulary.sot in prompt else len(prompt)
        inputs, forced = list(prompt[:split]), list(prompt[split:])
        if len(inputs) > self.config.max_input_len:  # keep the most recent previous text
            keep = max(0, self.config.max_input_len - 2)
            inputs = [vocabulary.sot_prev, *inputs[-1 - keep:-1], vocabulary.sot] if keep else [vocabulary.sot]
        budget = min(max_length, self.config.max_seq_len) - len(inputs)
        return _Window(inputs, forced, max(len(forced) + 1, budget), vocabulary.no_timestamps not in prompt)

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

    def _run(self, encoded: Encoded, windows: list[_Window], temperature: float) -> list[Any]:
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

    def _generation(self, window: _Window, result: Any) -> Generation:
        eot = self.vocabulary.eot
        tokens = list(result.output_token_ids[0])
        if tokens[: len(window.forced)] == window.forced:
            tokens = tokens[len(window.forced):]
        while tokens and tokens[-1] == eot:
            tokens.pop()
        if result.cum_log_probs:
            cumulative = float(result.cum_log_probs[0])
        else:
            cumulative = float(sum(result.log_probs[0])) if result.log_probs else 0.0
        no_speech = float(window.no_speech.item()) if window.no_speech is not None else 0.0
        # OpenAI's avg_logprob: the sum over the generated tokens and the end of text, over their count.
        return Generation(tokens=tokens, avg_logprob=cumulative / (len(tokens) + 1), no_speech_prob=no_speech)

    def _word_aligner(self) -> WhisperEngine | None:
        if self._aligner is None and self._aligner_factory is not None:
            self._aligner = self._aligner_factory()
            self._aligner_factory = None
        if self._aligner is None:
            log.warning("word timestamps asked with WHISPER_TRTLLM_ALIGNER=off: segments come without words")
        return self._aligner

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

    def row(self, window: _Window, tokens: list[int], width: int) -> tuple[int, int, int, int, int, int]:
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
        self, windows: Sequence[_Window | None], logits: list[torch.Tensor], token_ids: list[list[list[int]]]
    ) -> None:
        ours = [(w, t, beams) for w, t, beams in zip(windows, logits, token_ids, strict=True) if w is not None]
        if not ours:
            return
        width = ours[0][1].shape[-1]
        rows: list[torch.Tensor] = []
        params: list[tuple[int, int, int, int, int, int]] = []
        firsts: list[tuple[_Window, int]] = []
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

    def _capture(self, raw: torch.Tensor, firsts: list[tuple[_Window, int]]) -> None:
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
    aligner = None
    if settings.trtllm_aligner == "ctranslate2":
        def aligner() -> WhisperEngine:
            from whisper_triton.engine import CTranslate2Engine

            return CTranslate2Engine(resolved.path, device="cuda", compute_type="float16")

    return TensorRTLLMEngine(
        engine_dir,
        tokenizer,
        beam_width=settings.beam_size,
        max_batch_size=settings.trtllm_max_batch_size,
        kv_cache_fraction=settings.trtllm_kv_cache_fraction,
        cross_kv_cache_fraction=settings.trtllm_cross_kv_cache_fraction,
        device_id=device_id,
        aligner=aligner,
    )
