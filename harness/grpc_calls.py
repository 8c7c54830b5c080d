"""Calls to the Triton models over gRPC, as a gRPC client would make them (both models are decoupled)."""

from __future__ import annotations

import json
import queue
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient

from whisper_triton import contract
from whisper_triton.decoding import DecodeOptions


def bytes_input(name: str, value: bytes) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [1], "BYTES")
    tensor.set_data_from_numpy(np.array([value], dtype=object))
    return tensor


def bool_input(name: str, value: bool) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [1], "BOOL")
    tensor.set_data_from_numpy(np.array([value], dtype=bool))
    return tensor


def _stream(url: str, model: str, inputs: list[grpcclient.InferInput], output: str,
            last: Any, timeout: float = 600, client: grpcclient.InferenceServerClient | None = None) -> list[Any]:
    """Streams one request; returns its responses' `output` decoded by `last` (True ends) or the error. A given
    client (one per thread, kept by a load generator) stays open; otherwise one is made for the call."""
    results: queue.Queue[Any] = queue.Queue()

    def callback(result: Any, error: Any) -> None:
        results.put(error if error is not None else result.as_numpy(output).reshape(-1)[0])

    own = client is None
    stream = grpcclient.InferenceServerClient(url) if client is None else client
    stream.start_stream(callback=callback)
    try:
        stream.async_stream_infer(model, inputs)
        items: list[Any] = []
        while True:
            item = results.get(timeout=timeout)
            items.append(item)
            if isinstance(item, Exception) or last(item):
                return items
    finally:
        stream.stop_stream()
        if own:
            stream.close()


def call_entry(url: str, inputs: list[grpcclient.InferInput], timeout: float = 600,
               client: grpcclient.InferenceServerClient | None = None) -> list[dict[str, Any] | Exception]:
    """One request to the entry model; its events (the last is `done`) or the error."""
    raw = _stream(url, contract.ENTRY_MODEL, inputs, contract.EVENT,
                  lambda item: json.loads(item)["type"] == "done", timeout, client)
    return [item if isinstance(item, Exception) else json.loads(item) for item in raw]


def call_engine(url: str, model: str, samples: np.ndarray | list[np.ndarray] | None,
                options: DecodeOptions | bytes | list[DecodeOptions] | None = None, cancel: str | None = None,
                timeout: float = 600) -> Any:
    """Windows to an engine model (or a CANCEL). One window: its WindowResult, or an Exception (a refused
    request, or the window's failure message). Several (a list of arrays): {window index: outcome}."""
    windows = samples if isinstance(samples, list) else None if samples is None else [samples]
    inputs = []
    if windows is not None:
        joined = np.concatenate(windows).astype(np.float32) if windows else np.zeros(0, np.float32)
        tensor = grpcclient.InferInput(contract.SAMPLES, [len(joined)], "FP32")
        tensor.set_data_from_numpy(joined)
        inputs.append(tensor)
        if isinstance(samples, list):
            lengths = grpcclient.InferInput(contract.LENGTHS, [len(windows)], "INT32")
            lengths.set_data_from_numpy(np.array([len(w) for w in windows], dtype=np.int32))
            inputs.append(lengths)
    if options is not None:
        encoded = [o if isinstance(o, bytes) else contract.encode(o) for o in
                   (options if isinstance(options, list) else [options])]
        tensor = grpcclient.InferInput(contract.OPTIONS, [len(encoded)], "BYTES")
        tensor.set_data_from_numpy(np.array(encoded, dtype=object))
        inputs.append(tensor)
    if cancel is not None:
        inputs.append(bytes_input(contract.CANCEL, cancel.encode()))
    expected = len(windows) if windows else 1
    seen: list[Any] = []

    def last(item: Any) -> bool:
        seen.append(item)
        return len(seen) >= expected

    items = _stream(url, model, inputs, contract.RESULT, last, timeout)
    if isinstance(items[-1], Exception):
        return items[-1]
    if cancel is not None:
        return json.loads(items[0])
    outcomes = {}
    for item in items:
        window, outcome = contract.decode_outcome(item)
        outcomes[window] = RuntimeError(outcome) if isinstance(outcome, str) else outcome
    return outcomes if isinstance(samples, list) else next(iter(outcomes.values()))


def engine_calls(url: str, model: str) -> int:
    """Requests the engine model has executed (Triton's statistics): a BLS call of windows counts once."""
    client = grpcclient.InferenceServerClient(url)
    try:
        return int(client.get_inference_statistics(model).model_stats[0].inference_count)
    finally:
        client.close()


class LiveStream:
    """One gRPC stream to the live model, as a gRPC client drives it: requests numbered per session, the
    events of each request collected until its final flag."""

    def __init__(self, url: str) -> None:
        self._client = grpcclient.InferenceServerClient(url)
        self._events: dict[str, list[Any]] = {}
        self._done: dict[str, bool] = {}
        self._arrived: queue.Queue[str] = queue.Queue()
        self._seq: dict[str, int] = {}
        self._count = 0
        self._client.start_stream(callback=self._callback)

    def _callback(self, result: Any, error: Any) -> None:
        if error is not None:
            self._events.setdefault("?", []).append(error)
            self._arrived.put("?")
            return
        response = result.get_response()
        key = response.id
        if response.outputs:
            event = json.loads(result.as_numpy(contract.EVENT).reshape(-1)[0])
            if event["type"] == "ack":  # every request's last response
                assert response.parameters["triton_final_response"].bool_param
            else:
                self._events.setdefault(key, []).append(event)
        if response.parameters["triton_final_response"].bool_param:
            self._done[key] = True
        self._arrived.put(key)

    def send(self, session: str, audio: bytes | None = None, control: dict[str, Any] | None = None,
             seq: int | None = None) -> str:
        """Sends the session's next request (or number `seq`); its request id."""
        number = self._seq.get(session, 0) if seq is None else seq
        self._seq[session] = number + 1
        seq_input = grpcclient.InferInput("SEQ", [1], "INT64")
        seq_input.set_data_from_numpy(np.array([number], dtype=np.int64))
        inputs = [bytes_input("SESSION", session.encode()), seq_input]
        if audio is not None:
            inputs.append(bytes_input("AUDIO", audio))
        if control is not None:
            inputs.append(bytes_input("CONTROL", json.dumps(control).encode()))
        self._count += 1
        request_id = f"{session}-{self._count}"
        self._client.async_stream_infer(contract.LIVE_MODEL, inputs, request_id=request_id,
                                        enable_empty_final_response=True)
        return request_id

    def events(self, request_id: str, timeout: float = 120) -> list[dict[str, Any]]:
        """The request's events, once its final response came."""
        while not self._done.get(request_id):
            self._arrived.get(timeout=timeout)
        return self._events.get(request_id, [])

    def close(self) -> None:
        self._client.stop_stream()
        self._client.close()
