"""The benchmark's instant engine: each window's log-mel is computed (as the real engine model does, so
that it is measured), then one segment spanning the window comes back at once."""

import itertools
import time

import numpy as np
import triton_python_backend_utils as pb_utils

from whisper_triton import contract
from whisper_triton.decoding import Segment, WindowResult
from whisper_triton.features import window_features

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class TritonPythonModel:
    def initialize(self, args):
        self.n_mels = 80

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            if pb_utils.get_input_tensor_by_name(request, contract.CANCEL) is not None:
                payload = np.array([contract.encode({"cancelled": 0})], dtype=object)
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor(contract.RESULT, payload)]), flags=FINAL)
                continue
            samples = pb_utils.get_input_tensor_by_name(request, contract.SAMPLES).as_numpy().reshape(-1)
            lengths = pb_utils.get_input_tensor_by_name(request, contract.LENGTHS)
            sizes = [samples.size] if lengths is None else [int(n) for n in lengths.as_numpy().reshape(-1)]
            raw = pb_utils.get_input_tensor_by_name(request, contract.OPTIONS).as_numpy().reshape(-1)
            bounds = np.cumsum([0, *sizes])
            for position, (start, end) in enumerate(itertools.pairwise(bounds)):
                window = contract.decode_options(raw[position if len(raw) > 1 else 0]).window
                began = time.perf_counter()
                _, frames = window_features(samples[start:end].astype(np.float32, copy=False), self.n_mels)
                seconds = time.perf_counter() - began
                # Each window's own text: the entry model drops a window's first segment that only
                # repeats the words before it (a Whisper hallucination), which would hide windows here.
                segment = Segment(0.0, frames / 100, f" window {window}", [], 0.0, -0.1, 1.0, 0.0)
                result = WindowResult("en", 1.0, [segment], window=window, timings={"features": seconds, "batch": 1.0})
                payload = np.array([contract.encode(result)], dtype=object)
                flags = FINAL if position == len(sizes) - 1 else 0
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor(contract.RESULT, payload)]), flags=flags)
        return None
