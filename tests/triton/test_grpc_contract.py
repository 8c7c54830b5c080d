"""The Triton models' documented gRPC contract, called directly as a gRPC client would."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.assets import JFK_TEXT, jfk_wav, long_recording
from tests.conftest import Served
from tests.text import wer
from whisper_triton import contract
from whisper_triton.audio import decode_audio
from whisper_triton.decoding import DecodeOptions
from whisper_triton.errors import InvalidAudioError, InvalidRequestError, from_wire
from whisper_triton.features import window_features
from whisper_triton.repository import engine_model_name

TINY_ENGINE = engine_model_name("tiny.en")


def _bytes(name: str, value: bytes) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [1], "BYTES")
    tensor.set_data_from_numpy(np.array([value], dtype=object))
    return tensor


def _bool(name: str, value: bool) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [1], "BOOL")
    tensor.set_data_from_numpy(np.array([value], dtype=bool))
    return tensor


def call_entry(url: str, inputs: list[grpcclient.InferInput]) -> list[dict[str, Any] | Exception]:
    """Streams one request to the decoupled entry model; returns its events (or the error)."""
    results: queue.Queue[dict[str, Any] | Exception] = queue.Queue()

    def callback(result: Any, error: Any) -> None:
        if error is not None:
            results.put(error)
        else:
            results.put(json.loads(result.as_numpy(contract.EVENT)[0]))

    client = grpcclient.InferenceServerClient(url)
    client.start_stream(callback=callback)
    try:
        client.async_stream_infer(contract.ENTRY_MODEL, inputs)
        events: list[dict[str, Any] | Exception] = []
        while True:
            item = results.get(timeout=600)
            events.append(item)
            if isinstance(item, Exception) or item["type"] == "done":
                return events
    finally:
        client.stop_stream()
        client.close()


@pytest.fixture(scope="module")
def url(served: Served) -> Iterator[str]:
    yield served.grpc_url


def test_one_final_response_without_stream(url: str) -> None:
    events = call_entry(url, [_bytes(contract.AUDIO, jfk_wav().read_bytes())])
    assert len(events) == 1
    done = events[0]
    assert isinstance(done, dict) and done["type"] == "done"
    assert done["language"] == "en" and done["task"] == "transcribe"
    assert done["duration"] == pytest.approx(11.0, abs=0.01)
    assert wer(JFK_TEXT, done["text"]) < 0.1
    assert {"id", "seek", "start", "end", "text", "tokens", "avg_logprob"} <= set(done["segments"][0])


def test_stream_sends_a_response_per_window_then_done(url: str) -> None:
    recording = long_recording(2.0)
    events = call_entry(url, [_bytes(contract.AUDIO, recording.path.read_bytes()), _bool(contract.STREAM, True),
                              _bool(contract.WORD_TIMESTAMPS, True)])
    assert all(isinstance(e, dict) for e in events)
    partial = [e for e in events[:-1] if isinstance(e, dict)]
    done = events[-1]
    assert isinstance(done, dict) and done["type"] == "done"
    assert len(partial) >= 4 and {e["type"] for e in partial} == {"segments"}
    streamed = [s for e in partial for s in e["segments"]]
    assert streamed == done["segments"]
    assert all(s["words"] for s in done["segments"])
    assert wer(recording.text, done["text"]) < 0.2


def test_invalid_audio_is_an_invalid_argument_with_a_parsable_message(url: str) -> None:
    events = call_entry(url, [_bytes(contract.AUDIO, b"definitely not audio")])
    assert len(events) == 1 and isinstance(events[0], Exception)
    error = from_wire(str(events[0]))
    assert isinstance(error, InvalidAudioError) and error.param == "file"


def test_invalid_language_is_rejected(url: str) -> None:
    events = call_entry(url, [_bytes(contract.AUDIO, jfk_wav().read_bytes()), _bytes(contract.LANGUAGE, b"klingon")])
    error = from_wire(str(events[0]))
    assert isinstance(error, InvalidRequestError) and error.param == "language"


def test_engine_model_contract(url: str) -> None:
    samples = decode_audio(jfk_wav().read_bytes()).samples
    features, frames = window_features(samples, 80)
    inputs = [grpcclient.InferInput(contract.FEATURES, [1, 80, 3000], "FP32"),
              grpcclient.InferInput(contract.NUM_FRAMES, [1, 1], "INT32"),
              grpcclient.InferInput(contract.OPTIONS, [1, 1], "BYTES")]
    inputs[0].set_data_from_numpy(features[np.newaxis])
    inputs[1].set_data_from_numpy(np.array([[frames]], dtype=np.int32))
    inputs[2].set_data_from_numpy(np.array([[contract.encode(DecodeOptions(word_timestamps=True))]], dtype=object))
    client = grpcclient.InferenceServerClient(url)
    raw = client.infer(TINY_ENGINE, inputs).as_numpy(contract.RESULT).reshape(-1)[0]
    result = contract.decode_result(raw)
    client.close()
    assert result.language == "en"
    assert wer(JFK_TEXT, "".join(s.text for s in result.segments)) < 0.1
    assert all(s.words for s in result.segments)


def test_windows_of_concurrent_requests_share_engine_batches(url: str) -> None:
    client = grpcclient.InferenceServerClient(url)

    def counts() -> tuple[int, int]:
        stats = client.get_inference_statistics(TINY_ENGINE).model_stats[0]
        return int(stats.inference_count), int(stats.execution_count)

    audio = long_recording(1.0).path.read_bytes()
    before = counts()
    threads = [threading.Thread(target=call_entry, args=(url, [_bytes(contract.AUDIO, audio)])) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = counts()
    client.close()
    windows, executions = after[0] - before[0], after[1] - before[1]
    assert windows >= 8
    # Batched: markedly fewer engine executions than windows.
    assert executions <= windows / 2, (windows, executions)


def test_text_only_requests_skip_timestamps(url: str) -> None:
    timed = call_entry(url, [_bytes(contract.AUDIO, jfk_wav().read_bytes())])[-1]
    plain = call_entry(url, [_bytes(contract.AUDIO, jfk_wav().read_bytes()), _bool(contract.TIMESTAMPS, False)])[-1]
    assert isinstance(timed, dict) and isinstance(plain, dict)
    assert wer(JFK_TEXT, plain["text"]) < 0.1
    # One segment over the window, its tokens free of timestamp tokens; with timestamps Whisper splits it.
    assert [(s["start"], s["end"]) for s in plain["segments"]] == [(0.0, 11.0)]
    assert len(timed["segments"]) > 1
