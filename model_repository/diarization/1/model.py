"""Triton glue of the diarization model: one recording per request, pyannote.audio underneath."""

import sys
import traceback
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

# The stub runs Python in isolated mode (no PYTHONPATH): find the repository's packages from here.
_ROOT = str(Path(__file__).resolve().parents[3])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from whisper_triton import contract
from whisper_triton.diarization import Diarizer, turns_to_json
from whisper_triton.settings import model_settings


class TritonPythonModel:
    def initialize(self, args):
        settings = model_settings()
        self.diarizer = Diarizer(settings.diarization, device=settings.diarization_device,
                                 threads=settings.diarization_threads, hf_token=settings.hf_token or None)
        pb_utils.Logger.log_info(f"diarization: {settings.diarization} on {settings.diarization_device}")

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                samples = pb_utils.get_input_tensor_by_name(request, contract.WAVEFORM).as_numpy().reshape(-1)
                counts = {name: _count(request, tensor) for name, tensor in
                          (("num_speakers", contract.NUM_SPEAKERS), ("min_speakers", contract.MIN_SPEAKERS),
                           ("max_speakers", contract.MAX_SPEAKERS))}
                turns = self.diarizer(samples.astype(np.float32, copy=False), **counts)
                payload = np.array([contract.encode(turns_to_json(turns))], dtype=object)
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(contract.TURNS, payload)]))
            except Exception:
                pb_utils.Logger.log_error(f"diarization failed: {traceback.format_exc(limit=5)}")
                error = pb_utils.TritonError("[engine_error] speaker diarization failed", pb_utils.TritonError.INTERNAL)
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses


def _count(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    value = int(tensor.as_numpy().reshape(-1)[0])
    return value if value > 0 else None
