"""Triton glue of the live model: sessions of live audio (whisper_triton.live_service), turns transcribed by
the entry model through BLS."""

import asyncio
import contextvars
import io
import traceback
import wave
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import triton_python_backend_utils as pb_utils

from whisper_triton import bls, contract
from whisper_triton.errors import InvalidRequestError, ServiceError, from_wire
from whisper_triton.live_contract import AUDIO, CONTROL, SEQ, SESSION, AckEvent, ErrorEvent, encode
from whisper_triton.live_service import LiveLimits, LiveSessions
from whisper_triton.log_files import logged_request_id, tagged, trace_fatal_signals, untrace_fatal_signals
from whisper_triton.models import model_id
from whisper_triton.repository import engine_model_name, model_specs
from whisper_triton.settings import model_settings

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
# The request id (`<x-request-id>/<seq>` from the frontend) of the request being handled, without its `/<seq>`:
# its log lines and the entry model's requests for its turns (speculative ones too: tasks copy it) carry it.
_LOG_ID = contextvars.ContextVar("whisper_live_log_id", default="")
SWEEP_S = 10.0


class TritonPythonModel:
    def initialize(self, args):
        trace_fatal_signals()
        self.logger = pb_utils.Logger
        settings = model_settings()
        # Each session's VAD steps and each turn's call to the entry model block a thread.
        self.pool = ThreadPoolExecutor(max_workers=max(8, settings.bls_threads), thread_name_prefix="live")
        limits = LiveLimits(settings.live_max_sessions, settings.live_idle_s, settings.live_max_buffer_s)
        self.sessions = LiveSessions(self._transcribe, limits, self.pool, cancel=self._cancel)
        self.default_model = model_id(model_specs()[0])
        self.sweeper = None
        # Kept: the family must outlive its metric.
        self.sessions_family = pb_utils.MetricFamily(
            name="whisper_live_sessions", description="Live sessions held by the live model now.",
            kind=pb_utils.MetricFamily.GAUGE)
        self.sessions_metric = self.sessions_family.Metric(labels={"model": args["model_name"]})

    async def execute(self, requests):
        if self.sweeper is None:
            self.sweeper = asyncio.ensure_future(self._sweep())
        await asyncio.gather(*(self._handle(request) for request in requests))
        return None

    async def _handle(self, request):
        sender = request.get_response_sender()
        log_id = logged_request_id(request.request_id())
        _LOG_ID.set(log_id)  # (each request is handled in a task of its own)
        try:
            session = _text(request, SESSION)
            seq = _input(request, SEQ)
            if session is None or seq is None:
                raise InvalidRequestError("SESSION and SEQ are required.", param="SESSION")
            control = _input(request, CONTROL)
            audio = _input(request, AUDIO)
            events = self.sessions.handle(
                session, int(seq.reshape(-1)[0]), bytes(audio.reshape(-1)[0]) if audio is not None else None,
                bytes(control.reshape(-1)[0]) if control is not None else None)
            async for event in events:
                sender.send(_response(event))
        except ServiceError as exc:
            sender.send(_response(ErrorEvent(exc.code or "invalid_request", exc.message, exc.param)))
        except Exception:
            self.logger.log_error(tagged(log_id, f"whisper_live: request failed: {traceback.format_exc(limit=5)}"))
            sender.send(_response(ErrorEvent("internal_error", "The live session failed on this request.")))
        finally:
            self.sessions_metric.set(len(self.sessions))
            sender.send(_response(AckEvent()), flags=FINAL)

    async def _transcribe(self, samples, config, request_id):
        """The entry model's events for one turn (`segments` per window, then `done`), through BLS; its windows
        carry `request_id` at the engine (None: the entry model picks one)."""
        log_id = _LOG_ID.get()
        inputs = [pb_utils.Tensor(contract.AUDIO, np.array([_wav(samples)], dtype=object)),
                  pb_utils.Tensor(contract.STREAM, np.array([True])),
                  pb_utils.Tensor(contract.LIVE, np.array([True]))]  # before file windows at the engine
        if config.logprobs:
            inputs.append(pb_utils.Tensor(contract.LOGPROBS, np.array([True])))
        for name, value in ((contract.MODEL, config.model), (contract.LANGUAGE, config.language),
                            (contract.PROMPT, config.prompt), (contract.REQUEST_ID, request_id)):
            if value:
                inputs.append(pb_utils.Tensor(name, np.array([value.encode()], dtype=object)))

        def events():  # in a thread: a BLS call blocks while the entry model works
            request = pb_utils.InferenceRequest(model_name=contract.ENTRY_MODEL, inputs=inputs,
                                                requested_output_names=[contract.EVENT], request_id=log_id)
            for response in bls.responses(request):
                if response.has_error():
                    yield from_wire(response.error().message())
                    continue
                tensor = pb_utils.get_output_tensor_by_name(response, contract.EVENT)
                if tensor is not None:
                    yield contract.decode_event(bytes(tensor.as_numpy().reshape(-1)[0]))

        async for item in bls.in_thread(events, self.pool):
            if isinstance(item, Exception):
                raise item
            yield item

    async def _cancel(self, request_id, config):
        """Drops the windows of a request that no one waits for any more, still queued at its engine."""
        engine = engine_model_name(config.model or self.default_model)
        await bls.cancel_at_engine(pb_utils, engine, request_id, self.pool)

    async def _sweep(self):
        while True:
            await asyncio.sleep(SWEEP_S)
            dropped = self.sessions.sweep()
            self.sessions_metric.set(len(self.sessions))
            if dropped:
                self.logger.log_info(f"whisper_live: dropped {dropped} idle session(s)")

    def finalize(self):
        untrace_fatal_signals()
        if self.sweeper is not None:
            self.sweeper.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)


def _wav(samples):
    """16 kHz float32 as a 16-bit WAV file (the entry model reads containers)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes((np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes())
    return out.getvalue()


def _input(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def _text(request, name):
    value = _input(request, name)
    return None if value is None else bytes(value.reshape(-1)[0]).decode("utf-8", "replace")


def _response(event):
    return pb_utils.InferenceResponse([pb_utils.Tensor(contract.EVENT, np.array([encode(event)], dtype=object))])
