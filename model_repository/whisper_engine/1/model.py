"""Triton glue of the Whisper engine model: windows of all requests queue in one scheduler (in-flight
batching); its workers decode batches in parallel and answer each window's request as it is done.

Decoupled: execute() only queues, so windows that arrive while others are decoded join the queue at
once instead of waiting for a whole batch to finish, and a CANCEL request drops a request's queued windows.
"""

import dataclasses
import functools
import itertools
import json
import os
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import triton_python_backend_utils as pb_utils

from whisper_triton import contract
from whisper_triton.ctranslate2_engine import CTranslate2Engine, usable_cores
from whisper_triton.decoding import warm_up
from whisper_triton.log_files import logged_request_id, tagged, trace_fatal_signals, untrace_fatal_signals
from whisper_triton.models import read_model_info, resolve_model
from whisper_triton.scheduler import QueuedWindow, WindowCancelled, WindowScheduler, decode_queued
from whisper_triton.settings import SettingsError, model_settings
from whisper_triton.text import WhisperTokenizer

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class TritonPythonModel:
    def initialize(self, args):
        trace_fatal_signals()
        self.express_engine = None
        # One engine model per Whisper model: the generated repository names it in the config. The config's
        # WHISPER_* parameters (the GPU variant rendered by build_engines) take precedence over the environment.
        config = json.loads(args["model_config"])
        parameters = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
        settings = model_settings({**os.environ, **parameters})
        spec = parameters.get("WHISPER_MODEL") or settings.model
        # Packing live turns saves encoder passes, which cost most on a CPU; on a GPU the encoder is cheap and
        # the word timings packing needs take a second (CTranslate2) model there.
        self.pack_turns = settings.engine_pack_turns and settings.engine == "ctranslate2"
        resolved = resolve_model(spec, settings.cache_path())
        info = read_model_info(resolved.path)
        self.tokenizer = WhisperTokenizer(resolved.path / "tokenizer.json", info.multilingual, info.num_languages)
        self.logger = pb_utils.Logger
        if settings.engine == "tensorrt_llm":
            from whisper_triton.trtllm_route import create_engine, resolve_route

            gpu = args.get("model_instance_kind") == "GPU"
            device_id = int(args.get("model_instance_device_id", 0)) if gpu else None
            self.engine = create_engine(settings, resolved, info, self.tokenizer, device_id=device_id)
            workers = settings.engine_workers or 1
            route = resolve_route(settings.trtllm_route)
            where = f"TensorRT-LLM ({route} route) {self.engine.config} on GPU {device_id or 0}"
        elif settings.engine == "ctranslate2":
            threads = settings.cpu_threads or usable_cores()
            workers = settings.engine_workers or (threads if settings.device == "cpu" else 1)
            self.engine = CTranslate2Engine(
                resolved.path,
                device=settings.device,
                compute_type=settings.compute_type,
                intra_threads=max(1, threads // workers),
                inter_threads=workers,
            )
            where = f"{settings.device} ({settings.compute_type}, {workers} x {max(1, threads // workers)} threads)"
            if settings.engine_express and settings.device == "cpu" and workers > 1:
                # Live turns that find the engine idle: one replica with every thread, for latency.
                self.express_engine = CTranslate2Engine(resolved.path, device="cpu", compute_type=settings.compute_type,
                                                        intra_threads=threads, inter_threads=1)
                warm_up(self.express_engine, self.tokenizer)
                where += f", live turns on an idle engine: 1 x {threads} threads"
        else:
            raise SettingsError(f"Invalid value for WHISPER_ENGINE: {settings.engine!r} (ctranslate2 or tensorrt_llm).")
        # Kept: the family must outlive its metrics.
        self.windows_family = windows = pb_utils.MetricFamily(
            name="whisper_engine_windows_total",
            description="Windows by outcome: decoded, cancelled (their request was cancelled or its client left), "
                        "failed",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.outcomes = {outcome: windows.Metric(labels={"model": args["model_name"], "outcome": outcome})
                         for outcome in ("decoded", "cancelled", "failed")}
        # The workers count their windows one at a time: Triton 2.51's Python backend writes an update into a
        # shared-memory block that the Metric object owns, with the GIL released, so two threads updating one
        # metric at once can hand tritonserver a block the other just freed, and tritonserver dies of SIGSEGV
        # in TRITONSERVER_MetricIncrement (seen under load: every request of the server failed until restarted).
        self.metrics_lock = threading.Lock()
        started = time.monotonic()
        # Every replica once (concurrent calls go to different ones), so no first request pays for it.
        with ThreadPoolExecutor(workers) as pool:
            for warming in [pool.submit(warm_up, self.engine, self.tokenizer) for _ in range(workers)]:
                warming.result()
        express = self._run_express if self.express_engine is not None else None
        self.scheduler = WindowScheduler(self._run, workers=workers, max_batch=settings.engine_max_batch,
                                         express=express)
        self.logger.log_info(
            f"whisper_engine: {resolved.name} from {resolved.path} on {where}, n_mels={self.engine.n_mels}, "
            f"batches of up to {settings.engine_max_batch}, warmed up in {time.monotonic() - started:.2f} s"
        )

    def _run(self, batch, tickets):
        return decode_queued(self.engine, self.tokenizer, batch, tickets, self.scheduler.is_cancelled,
                             pack=self.pack_turns)

    def _run_express(self, batch, tickets):
        return decode_queued(self.express_engine, self.tokenizer, batch, tickets, self.scheduler.is_cancelled,
                             pack=self.pack_turns)

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            try:
                cancel = _text(request, contract.CANCEL)
                if cancel is not None:
                    dropped = self.scheduler.cancel(cancel)
                    payload = np.array([contract.encode({"cancelled": dropped})], dtype=object)
                    sender.send(pb_utils.InferenceResponse([pb_utils.Tensor(contract.RESULT, payload)]), flags=FINAL)
                    continue
                windows = _windows(request)
            except Exception as exc:  # a malformed request fails alone
                error = pb_utils.TritonError(f"bad window request: {exc}", pb_utils.TritonError.INVALID_ARG)
                sender.send(pb_utils.InferenceResponse(error=error), flags=FINAL)
                continue
            answer = _Answer(sender, len(windows), self)
            for samples, options in windows:
                self.scheduler.submit(QueuedWindow(payload=samples, options=options,
                                                   reply=functools.partial(answer.reply, options)))
        return None

    def count(self, outcome):
        with self.metrics_lock:
            self.outcomes[outcome].increment(1)

    def outcome_payload(self, window, outcome, request=""):
        if isinstance(outcome, WindowCancelled):
            self.count("cancelled")
            return contract.encode_failure(window, "[cancelled] the request was cancelled")
        if isinstance(outcome, BaseException):
            self.count("failed")
            trace = "".join(traceback.format_exception(outcome, limit=3))
            self.logger.log_error(tagged(logged_request_id(request), f"whisper_engine: a window failed: {trace}"))
            return contract.encode_failure(window, "[engine_error] the Whisper engine failed on this window")
        self.count("decoded")
        return contract.encode(outcome)

    def finalize(self):
        untrace_fatal_signals()
        self.scheduler.close()
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()


class _Answer:
    """The responses to one request of several windows: one per window as each is done, the last FINAL."""

    def __init__(self, sender, windows, model):
        self.sender, self.left, self.model = sender, windows, model
        self.lock = threading.Lock()

    def reply(self, options, outcome):
        payload = np.array([self.model.outcome_payload(options.window, outcome, options.request)], dtype=object)
        response = pb_utils.InferenceResponse([pb_utils.Tensor(contract.RESULT, payload)])
        with self.lock:  # the windows of one request finish on different workers
            self.left -= 1
            self.sender.send(response, flags=FINAL if self.left == 0 else 0)


def _windows(request):
    """(samples, options) of each window of the request; raises ValueError for anything malformed."""
    tensor = pb_utils.get_input_tensor_by_name(request, contract.SAMPLES)
    if tensor is None:
        raise ValueError("SAMPLES is missing")
    samples = tensor.as_numpy().reshape(-1).astype(np.float32, copy=False)
    lengths = pb_utils.get_input_tensor_by_name(request, contract.LENGTHS)
    sizes = [samples.size] if lengths is None else [int(n) for n in lengths.as_numpy().reshape(-1)]
    if not sizes or sum(sizes) != samples.size:
        raise ValueError(f"LENGTHS must add up to the {samples.size} SAMPLES")
    if any(not 1 <= size <= contract.WINDOW_SAMPLES for size in sizes):
        raise ValueError(f"each window must hold 1 to {contract.WINDOW_SAMPLES} samples, got {sizes}")
    raw = pb_utils.get_input_tensor_by_name(request, contract.OPTIONS)
    encoded = [b"{}"] if raw is None else list(raw.as_numpy().reshape(-1))
    if len(encoded) not in (1, len(sizes)):
        raise ValueError(f"OPTIONS must be one for all windows or one per window, got {len(encoded)}")
    options = [contract.decode_options(item) for item in encoded]
    if len(options) == 1 and len(sizes) > 1:  # one for all: each window still needs its own index
        options = [dataclasses.replace(options[0], window=index) for index in range(len(sizes))]
    bounds = np.cumsum([0, *sizes])
    return [(samples[start:end], option)
            for (start, end), option in zip(itertools.pairwise(bounds), options, strict=True)]


def _text(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    value = tensor.as_numpy().reshape(-1)[0]
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
