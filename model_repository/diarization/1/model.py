"""Triton glue of the diarization model: one recording (or one voice clip) per request (whisper_triton.diarization)."""

import traceback

import numpy as np
import triton_python_backend_utils as pb_utils

from whisper_triton import contract
from whisper_triton.diarization import Diarizer, turns_to_json
from whisper_triton.errors import InvalidRequestError, ServiceError
from whisper_triton.log_files import tagged, trace_fatal_signals, untrace_fatal_signals
from whisper_triton.settings import model_settings
from whisper_triton.speakers import KnownSpeaker


class TritonPythonModel:
    def initialize(self, args):
        trace_fatal_signals()
        settings = model_settings()
        self.threshold = settings.speaker_match_threshold
        self.diarizer = Diarizer(settings.diarization, device=settings.diarization_device,
                                 threads=settings.diarization_threads, hf_token=settings.hf_token or None)
        pb_utils.Logger.log_info(f"diarization: {settings.diarization} on {self.diarizer.device}, "
                                 f"embeddings {self.diarizer.embedding_model}")

    def finalize(self):
        untrace_fatal_signals()

    def execute(self, requests):
        responses = []
        for request in requests:
            request_id = request.request_id()  # the entry model's request's (the frontend's x-request-id)
            try:
                responses.append(self._answer(request, request_id))
            except ServiceError as exc:
                code = pb_utils.TritonError.INVALID_ARG if exc.client_fault else pb_utils.TritonError.INTERNAL
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(exc.to_wire(), code)))
            except Exception:
                pb_utils.Logger.log_error(tagged(request_id,
                                                 f"diarization failed: {traceback.format_exc(limit=5)}"))
                error = pb_utils.TritonError("[engine_error] speaker diarization failed", pb_utils.TritonError.INTERNAL)
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses

    def _answer(self, request, request_id):
        samples = pb_utils.get_input_tensor_by_name(request, contract.WAVEFORM).as_numpy().reshape(-1)
        samples = samples.astype(np.float32, copy=False)
        embedding, turns = np.zeros(0, dtype=np.float32), []
        embed = pb_utils.get_input_tensor_by_name(request, contract.EMBED)
        seconds = len(samples) / 16000
        if embed is not None and bool(embed.as_numpy().reshape(-1)[0]):
            pb_utils.Logger.log_info(tagged(request_id, f"diarization: a voice's embedding, {seconds:.1f} s"))
            embedding = self.diarizer.embed(samples).astype(np.float32)
        else:
            pb_utils.Logger.log_info(tagged(request_id, f"diarization: speaker turns of {seconds:.1f} s"))
            counts = {name: _count(request, tensor) for name, tensor in
                      (("num_speakers", contract.NUM_SPEAKERS), ("min_speakers", contract.MIN_SPEAKERS),
                       ("max_speakers", contract.MAX_SPEAKERS))}
            turns = self.diarizer(samples, **counts, known=_known(request), threshold=self.threshold)
        return pb_utils.InferenceResponse([
            pb_utils.Tensor(contract.TURNS, np.array([contract.encode(turns_to_json(turns))], dtype=object)),
            pb_utils.Tensor(contract.EMBEDDING, embedding),
            pb_utils.Tensor(contract.EMBEDDING_MODEL,
                            np.array([self.diarizer.embedding_model.encode()], dtype=object)),
        ])


def _count(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    value = int(tensor.as_numpy().reshape(-1)[0])
    return value if value > 0 else None


def _known(request):
    names = pb_utils.get_input_tensor_by_name(request, contract.KNOWN_SPEAKER_NAMES)
    vectors = pb_utils.get_input_tensor_by_name(request, contract.KNOWN_SPEAKER_EMBEDDINGS)
    if names is None and vectors is None:
        return []
    names = [] if names is None else [n.decode("utf-8", errors="replace") if isinstance(n, bytes) else str(n)
                                      for n in names.as_numpy().reshape(-1)]
    rows = np.zeros((0, 0), dtype=np.float32) if vectors is None else vectors.as_numpy()
    rows = rows.reshape(len(rows), -1) if rows.size else rows.reshape(0, 0)
    if len(names) != len(rows):
        raise InvalidRequestError(f"{len(names)} known speaker names for {len(rows)} embeddings: give one name "
                                  "per embedding.", param="known_speaker_names")
    return [KnownSpeaker(name, row) for name, row in zip(names, rows, strict=True)]
