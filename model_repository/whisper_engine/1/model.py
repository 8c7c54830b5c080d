"""Triton glue of the Whisper engine model: one dynamic batch of windows per execute()."""

import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

# The stub runs Python in isolated mode (no PYTHONPATH): find the repository's packages from here.
_ROOT = str(Path(__file__).resolve().parents[3])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from whisper_triton import contract
from whisper_triton.decoding import WindowJob, decode_each, warm_up
from whisper_triton.engine import CTranslate2Engine
from whisper_triton.models import read_model_info, resolve_model
from whisper_triton.settings import SettingsError, model_settings
from whisper_triton.text import WhisperTokenizer


class TritonPythonModel:
    def initialize(self, args):
        # One engine model per Whisper model: the generated repository names it in the config. The config's
        # WHISPER_* parameters (the GPU variant rendered by build_engines) take precedence over the environment.
        config = json.loads(args["model_config"])
        parameters = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
        settings = model_settings({**os.environ, **parameters})
        spec = parameters.get("WHISPER_MODEL") or settings.model
        resolved = resolve_model(spec, settings.cache_path())
        info = read_model_info(resolved.path)
        self.tokenizer = WhisperTokenizer(resolved.path / "tokenizer.json", info.multilingual, info.num_languages)
        self.logger = pb_utils.Logger
        if settings.engine == "tensorrt_llm":
            from whisper_triton.trtllm_engine import create_engine

            gpu = args.get("model_instance_kind") == "GPU"
            device_id = int(args.get("model_instance_device_id", 0)) if gpu else None
            self.engine = create_engine(settings, resolved, info, self.tokenizer, device_id=device_id)
            where = f"TensorRT-LLM engines {self.engine.config} on GPU {device_id or 0}"
        elif settings.engine == "ctranslate2":
            self.engine = CTranslate2Engine(
                resolved.path,
                device=settings.device,
                compute_type=settings.compute_type,
                intra_threads=settings.cpu_threads,
            )
            where = f"{settings.device} ({settings.compute_type})"
        else:
            raise SettingsError(f"Invalid value for WHISPER_ENGINE: {settings.engine!r} (ctranslate2 or tensorrt_llm).")
        started = time.monotonic()
        warm_up(self.engine, self.tokenizer)
        self.logger.log_info(
            f"whisper_engine: {resolved.name} from {resolved.path} on {where}, n_mels={self.engine.n_mels}, "
            f"warmed up in {time.monotonic() - started:.2f} s"
        )

    def execute(self, requests):
        jobs, errors = [], {}
        for index, request in enumerate(requests):
            try:
                jobs.append((index, self._job(request)))
            except Exception as exc:  # a malformed request fails alone
                errors[index] = pb_utils.TritonError(f"bad window request: {exc}", pb_utils.TritonError.INVALID_ARG)
        # A window that makes the engine fail fails alone, not the other requests' windows in its batch.
        outcomes = decode_each(self.engine, self.tokenizer, [job for _, job in jobs])
        results = {}
        for (index, _), outcome in zip(jobs, outcomes, strict=True):
            if isinstance(outcome, Exception):
                trace = "".join(traceback.format_exception(outcome, limit=3))
                self.logger.log_error(f"whisper_engine: a window failed (batch of {len(jobs)}): {trace}")
                errors[index] = pb_utils.TritonError("[engine_error] the Whisper engine failed on this window")
            else:
                results[index] = outcome
        responses = []
        for index in range(len(requests)):
            if index in errors:
                responses.append(pb_utils.InferenceResponse(error=errors[index]))
                continue
            payload = np.array([contract.encode(results[index])], dtype=object)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(contract.RESULT, payload)]))
        return responses

    def _job(self, request):
        features = pb_utils.get_input_tensor_by_name(request, contract.FEATURES).as_numpy()[0]
        if features.shape != (self.engine.n_mels, 3000):
            raise ValueError(f"FEATURES must be [{self.engine.n_mels}, 3000], got {list(features.shape)}")
        frames = int(pb_utils.get_input_tensor_by_name(request, contract.NUM_FRAMES).as_numpy().reshape(-1)[0])
        raw_options = pb_utils.get_input_tensor_by_name(request, contract.OPTIONS).as_numpy().reshape(-1)[0]
        options = contract.decode_options(raw_options)
        return WindowJob(features=features.astype(np.float32, copy=False), num_frames=frames, options=options)

    def finalize(self):
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()
