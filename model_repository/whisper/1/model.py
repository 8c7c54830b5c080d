"""Triton glue of the entry model: one whole transcription per request, windows sent via BLS."""

import asyncio
import contextlib
import contextvars
import os
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

import msgspec
import numpy as np
import triton_python_backend_utils as pb_utils

from whisper_triton import bls, contract, windows
from whisper_triton.catalogue import fetched_spec
from whisper_triton.errors import (
    EngineError,
    InvalidRequestError,
    ServiceError,
    UnavailableError,
    from_wire,
    is_unavailable,
)
from whisper_triton.log_files import engine_request_id, tagged, trace_fatal_signals, untrace_fatal_signals
from whisper_triton.models import model_id, read_model_info, resolve_model
from whisper_triton.repository import engine_model_name, model_specs
from whisper_triton.settings import model_settings
from whisper_triton.transcriber import Transcriber, TranscriberSettings

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
CANCEL_POLL_S = 0.1
# The Triton request id of the request being answered (each runs in a task of its own): the diarization model's
# lines about it name it too.
_REQUEST_ID = contextvars.ContextVar("whisper_request_id", default="")


class TritonPythonModel:
    def initialize(self, args):
        trace_fatal_signals()
        self.settings = model_settings()
        self.logger = pb_utils.Logger
        # Decoding, VAD and log-mel run in threads (they release the GIL) so the event loop
        # keeps serving other requests; BLS calls block a thread each while the engine works.
        self.cpu_pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="cpu")
        self.bls_pool = ThreadPoolExecutor(max_workers=self.settings.bls_threads, thread_name_prefix="bls")
        self.specs = {model_id(spec): spec for spec in model_specs()}
        self.default_model = next(iter(self.specs))
        self.transcribers = {}
        self.calls_in_flight = set()  # engine calls (BLS threads) not awaited by a caller that left
        windows.warm_up()

    def _transcriber(self, model):
        """The pipeline of one Whisper model (its tokenizer, mel size, engine model), made on first use."""
        if model not in self.transcribers:
            spec = self.specs.get(model) or fetched_spec(  # fetched over HTTP
                self.settings.cache_path(), model, self.settings.managed_path())
            if spec is None:
                raise InvalidRequestError(f"The model '{model}' is not served here.", param="model")
            resolved = resolve_model(spec, self.settings.cache_path())
            engine = engine_model_name(model)

            def decode(calls):
                return self._decode_windows(engine, calls)

            diarization = self.settings.diarization_enabled

            async def cancel(request_id):
                await self._cancel_windows(engine, request_id)

            self.transcribers[model] = Transcriber(
                read_model_info(resolved.path),
                decode,
                cancel=cancel,
                diarize=self._diarize if diarization else None,
                embed=self._embed if diarization else None,
                executor=self.cpu_pool,
                settings=TranscriberSettings(
                    beam_size=self.settings.beam_size,
                    max_audio_seconds=self.settings.max_audio_seconds,
                    max_windows_in_flight=self.settings.max_windows_in_flight,
                    loop_check=self.settings.loop_check,
                    hallucination_silence_threshold=self.settings.hallucination_silence_threshold,
                ),
            )
        return self.transcribers[model]

    async def execute(self, requests):
        await asyncio.gather(*(self._handle(request) for request in requests))
        return None

    async def _handle(self, request):
        reply = Reply(request)
        work = asyncio.ensure_future(self._respond(request, reply))
        # A client that leaves (or a cancelled task) cancels the request in Triton: stop the work, which
        # also drops the request's windows still queued at the engine.
        while not work.done():
            await asyncio.wait([work], timeout=CANCEL_POLL_S)
            if not work.done() and reply.is_cancelled():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
                error = pb_utils.TritonError("cancelled", pb_utils.TritonError.CANCELLED)
                reply.send(pb_utils.InferenceResponse(error=error), final=True)
                return

    async def _respond(self, request, reply):
        request_id = request.request_id()  # the frontend's x-request-id: every line about the request names it
        _REQUEST_ID.set(request_id)
        try:
            audio, options = contract.read_request(lambda name: _input(request, name))
            if request_id and options.request_id is None:  # the engine's lines can name the request too
                options = msgspec.structs.replace(options, request_id=engine_request_id(request_id))
            self.logger.log_info(tagged(request_id, f"whisper: {options.task} of {len(audio)} bytes, model "
                                                    f"{options.model or self.default_model}"))
            transcriber = self._transcriber(options.model or self.default_model)
            async for event in transcriber.answer(audio, options):
                if isinstance(event, contract.DoneEvent):
                    reply.send(_response(event), final=True)
                elif options.stream:
                    reply.send(_response(event))
        except ServiceError as exc:
            (self.logger.log_warn if exc.client_fault else self.logger.log_error)(
                tagged(request_id, f"whisper: request failed: {exc.to_wire()}"))
            code = pb_utils.TritonError.INVALID_ARG if exc.client_fault else pb_utils.TritonError.INTERNAL
            reply.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(exc.to_wire(), code)), final=True)
        except Exception:
            self.logger.log_error(tagged(request_id, f"whisper: request failed: {traceback.format_exc(limit=5)}"))
            error = pb_utils.TritonError("[internal_error] transcription failed", pb_utils.TritonError.INTERNAL)
            reply.send(pb_utils.InferenceResponse(error=error), final=True)

    async def _diarize(self, samples, speakers, known):
        inputs = [pb_utils.Tensor(contract.WAVEFORM, np.ascontiguousarray(samples, dtype=np.float32))]
        for name, count in ((contract.NUM_SPEAKERS, speakers.num), (contract.MIN_SPEAKERS, speakers.min),
                            (contract.MAX_SPEAKERS, speakers.max)):
            if count:
                inputs.append(pb_utils.Tensor(name, np.array([count], dtype=np.int32)))
        if known:
            names = np.array([speaker.name.encode() for speaker in known], dtype=object)
            rows = np.stack([np.asarray(speaker.embedding, dtype=np.float32).ravel() for speaker in known])
            inputs += [pb_utils.Tensor(contract.KNOWN_SPEAKER_NAMES, names),
                       pb_utils.Tensor(contract.KNOWN_SPEAKER_EMBEDDINGS, rows)]
        response = await self._call_diarization(inputs, [contract.TURNS])
        turns = pb_utils.get_output_tensor_by_name(response, contract.TURNS).as_numpy().reshape(-1)[0]
        return msgspec.json.decode(turns)

    async def _embed(self, samples):
        inputs = [pb_utils.Tensor(contract.WAVEFORM, np.ascontiguousarray(samples, dtype=np.float32)),
                  pb_utils.Tensor(contract.EMBED, np.array([True], dtype=bool))]
        response = await self._call_diarization(inputs, [contract.EMBEDDING, contract.EMBEDDING_MODEL])
        vector = pb_utils.get_output_tensor_by_name(response, contract.EMBEDDING).as_numpy().reshape(-1)
        model = pb_utils.get_output_tensor_by_name(response, contract.EMBEDDING_MODEL).as_numpy().reshape(-1)[0]
        return vector.astype(np.float32), model.decode() if isinstance(model, bytes) else str(model)

    async def _call_diarization(self, inputs, outputs):
        call = pb_utils.InferenceRequest(
            model_name=contract.DIARIZATION_MODEL, requested_output_names=outputs, inputs=inputs,
            request_id=_REQUEST_ID.get(),
        )
        response = await asyncio.get_running_loop().run_in_executor(self.bls_pool, call.exec)
        if response.has_error():
            message = response.error().message()
            error = from_wire(message)
            if error.client_fault:
                raise error
            if is_unavailable(message):
                raise EngineError("The diarization model is not loaded: load 'diarization' (Triton model "
                                  "control) or send the request through the HTTP frontend, which loads it.")
            raise EngineError("Speaker diarization failed.")
        return response

    async def _decode_windows(self, engine, calls):
        """One engine call for several windows: (position, result or failure) of each, as they come."""
        positions = {call.options.window: position for position, call in enumerate(calls)}

        def read_results():  # in a BLS thread: building the request copies the audio, reading blocks
            started = time.perf_counter()
            inputs = [
                pb_utils.Tensor(contract.SAMPLES, np.concatenate([c.samples for c in calls], dtype=np.float32)),
                pb_utils.Tensor(contract.LENGTHS, np.array([len(c.samples) for c in calls], dtype=np.int32)),
                pb_utils.Tensor(contract.OPTIONS, np.array([contract.encode(c.options) for c in calls], dtype=object)),
            ]
            overhead = (time.perf_counter() - started) / len(calls)
            for answer in _engine_answers(engine, inputs):
                yield answer, overhead

        try:
            # A caller that stops early leaves the thread to end with the engine's last answer.
            async for answer, overhead in bls.in_thread(read_results, self.bls_pool, self.calls_in_flight):
                if isinstance(answer, str):  # the whole call failed
                    for position in range(len(calls)):
                        yield position, _engine_error(answer)
                    continue
                window, outcome = contract.decode_outcome(answer)
                if isinstance(outcome, str):
                    yield positions[window], _engine_error(outcome)
                else:
                    outcome.timings["transfer"] = overhead
                    yield positions[window], outcome
        except Exception:  # the call could not be made: every window of it failed
            self.logger.log_error(f"whisper: engine call failed: {traceback.format_exc(limit=5)}")
            for position in range(len(calls)):
                yield position, EngineError("The Whisper engine call failed.")

    async def _cancel_windows(self, engine, request_id):
        """Drops the request's windows still queued at the engine (best effort: it may be gone)."""
        await bls.cancel_at_engine(pb_utils, engine, request_id, self.bls_pool)

    def finalize(self):
        untrace_fatal_signals()
        self.cpu_pool.shutdown(wait=False, cancel_futures=True)
        self.bls_pool.shutdown(wait=False, cancel_futures=True)


class Reply:
    """A request's response sender that knows when its final response went out. Triton may release the request
    then: asking it afterwards whether it was cancelled would make tritonserver read a freed request, and a second
    final response is refused. Both are skipped once it is done (responses are sent from the event loop only)."""

    def __init__(self, request):
        self._request = request
        self._sender = request.get_response_sender()
        self.done = False

    def send(self, response, final=False):
        if self.done:
            return
        self.done = final
        self._sender.send(response, flags=FINAL if final else 0)

    def is_cancelled(self):
        return not self.done and self._request.is_cancelled()


def _engine_error(message):
    """An engine failure as the request's error: client faults as they are, a dead engine as retryable."""
    error = from_wire(message)
    if error.code != "internal_error":
        return error
    if is_unavailable(message):  # the engine's process died: `make serve` reloads it
        return UnavailableError("The Whisper engine is restarting; retry shortly.")
    return EngineError(error.message)


def _engine_answers(engine, inputs):
    """One BLS call to a (decoupled) engine model, read in the calling thread: each response's RESULT bytes, or
    the message of a response that failed (a str)."""
    request = pb_utils.InferenceRequest(model_name=engine, requested_output_names=[contract.RESULT], inputs=inputs)
    for response in bls.responses(request):
        if response.has_error():
            yield response.error().message()
            continue
        tensor = pb_utils.get_output_tensor_by_name(response, contract.RESULT)
        if tensor is not None:
            yield bytes(tensor.as_numpy().reshape(-1)[0])


def _input(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def _response(event):
    payload = np.array([contract.encode(event)], dtype=object)
    return pb_utils.InferenceResponse([pb_utils.Tensor(contract.EVENT, payload)])
