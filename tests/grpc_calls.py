"""Calls to the Triton models over gRPC, as a gRPC client would make them (both models are decoupled)."""

from __future__ import annotations

import json
import queue
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient

from whisper_triton import contract
from whisper_triton.decoding import DecodeOptions, WindowResult


def bytes_input(name: str, value: bytes) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [1], "BYTES")
    tensor.set_data_from_numpy(np.array([value], dtype=object))
    return tensor


def bool_input(name: str, value: bool) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [1], "BOOL")
    tensor.set_data_from_numpy(np.array([value], dtype=bool))
    return tensor


def _stream(url: str, model: str, inputs: list[grpcclient.InferInput], output: str,
            last: Any, timeout: float = 600) -> list[Any]:
    """Streams one request; returns its responses' `output` decoded by `last` (True ends) or the error."""
    results: queue.Queue[Any] = queue.Queue()

    def callback(result: Any, error: Any) -> None:
        results.put(error if error is not None else result.as_numpy(output).reshape(-1)[0])

    client = grpcclient.InferenceServerClient(url)
    client.start_stream(callback=callback)
    try:
        client.async_stream_infer(model, inputs)
        items: list[Any] = []
        while True:
            item = results.get(timeout=timeout)
            items.append(item)
            if isinstance(item, Exception) or last(item):
                return items
    finally:
        client.stop_stream()
        client.close()


def call_entry(url: str, inputs: list[grpcclient.InferInput],
               timeout: float = 600) -> list[dict[str, Any] | Exception]:
    """One request to the entry model; its events (the last is `done`) or the error."""
    raw = _stream(url, contract.ENTRY_MODEL, inputs, contract.EVENT,
                  lambda item: json.loads(item)["type"] == "done", timeout)
    return [item if isinstance(item, Exception) else json.loads(item) for item in raw]


def call_engine(url: str, model: str, samples: np.ndarray | None, options: DecodeOptions | bytes | None = None,
                cancel: str | None = None, timeout: float = 600) -> WindowResult | dict[str, Any] | Exception:
    """One window to an engine model (or a CANCEL): its result, or the error."""
    inputs = []
    if samples is not None:
        tensor = grpcclient.InferInput(contract.SAMPLES, [len(samples)], "FP32")
        tensor.set_data_from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
        inputs.append(tensor)
    if options is not None:
        raw = options if isinstance(options, bytes) else contract.encode(options)
        inputs.append(bytes_input(contract.OPTIONS, raw))
    if cancel is not None:
        inputs.append(bytes_input(contract.CANCEL, cancel.encode()))
    (item,) = _stream(url, model, inputs, contract.RESULT, lambda item: True, timeout)
    if isinstance(item, Exception):
        return item
    return json.loads(item) if cancel is not None else contract.decode_result(item)
