"""The Triton models' documented gRPC contract, called directly as a gRPC client would."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from harness.assets import JFK_TEXT, jfk_wav, long_recording
from harness.grpc_calls import bool_input as _bool
from harness.grpc_calls import bytes_input as _bytes
from harness.grpc_calls import call_engine, call_entry
from harness.stack import Served
from harness.text import wer
from whisper_triton import contract
from whisper_triton.audio import decode_audio
from whisper_triton.decoding import DecodeOptions, WindowResult
from whisper_triton.errors import InvalidAudioError, InvalidRequestError, from_wire
from whisper_triton.repository import engine_model_name

TINY_ENGINE = engine_model_name("tiny.en")


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
    result = call_engine(url, TINY_ENGINE, samples, DecodeOptions(word_timestamps=True))
    assert isinstance(result, WindowResult)
    assert result.language == "en"
    assert wer(JFK_TEXT, "".join(s.text for s in result.segments)) < 0.1
    assert all(s.words for s in result.segments)
    assert {"queue", "features", "encode", "decode", "batch"} <= set(result.timings)
    # Bad requests fail alone, with a message that says why.
    for bad in (call_engine(url, TINY_ENGINE, np.zeros(16000 * 31, np.float32)),
                call_engine(url, TINY_ENGINE, samples, b'{"temperatures": []}'),
                call_engine(url, TINY_ENGINE, None, DecodeOptions()),
                call_engine(url, TINY_ENGINE, [samples, samples], [DecodeOptions()] * 3)):
        assert isinstance(bad, Exception) and "bad window request" in str(bad), bad


def test_several_windows_in_one_engine_call_come_back_one_by_one(url: str) -> None:
    samples = decode_audio(jfk_wav().read_bytes()).samples
    outcomes = call_engine(url, TINY_ENGINE, [samples[: 16000 * 5], samples], [DecodeOptions(window=7),
                                                                              DecodeOptions(window=3)])
    assert sorted(outcomes) == [3, 7]
    assert wer(JFK_TEXT, "".join(s.text for s in outcomes[3].segments)) < 0.1
    assert outcomes[7].segments[-1].end <= 5.0
    # One set of options for all: each window still gets its own index.
    assert sorted(call_engine(url, TINY_ENGINE, [samples, samples], DecodeOptions())) == [0, 1]


def test_a_cancelled_requests_queued_windows_are_dropped_at_the_engine(url: str) -> None:
    samples = decode_audio(long_recording(1.0).path.read_bytes()).samples[: 16000 * 30]
    outcomes: dict[int, object] = {}
    options = [DecodeOptions(request="doomed", window=index) for index in range(40)]
    sender = threading.Thread(target=lambda: outcomes.update(call_engine(url, TINY_ENGINE, [samples] * 40, options)))
    sender.start()
    time.sleep(0.5)
    # Windows already queued are dropped now; the request's windows that arrive later (a busy machine takes a
    # while to send 40) are answered as cancelled on arrival. Either way most are never decoded.
    answer = call_engine(url, TINY_ENGINE, None, cancel="doomed")
    assert isinstance(answer, dict)
    sender.join(300)
    cancelled = [o for o in outcomes.values() if isinstance(o, Exception)]
    assert len(outcomes) == 40 and len(cancelled) >= max(1, int(answer["cancelled"])) and len(cancelled) >= 10
    assert all("[cancelled]" in str(o) for o in cancelled)
    # The engine goes on serving other requests.
    assert isinstance(call_engine(url, TINY_ENGINE, samples, DecodeOptions(request="alive")), WindowResult)


def test_windows_of_concurrent_requests_share_engine_batches(url: str) -> None:
    audio = long_recording(1.0).path.read_bytes()
    profiles: list[dict[str, object]] = []

    def transcribe() -> None:
        done = call_entry(url, [_bytes(contract.AUDIO, audio), _bool(contract.PROFILE, True)])[-1]
        assert isinstance(done, dict)
        profiles.append(done["profile"])

    threads = [threading.Thread(target=transcribe) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(profiles) == 4
    assert all(p["windows"] >= 2 for p in profiles)
    # Batched: a window shares its engine batch with others (of its own request and of the others).
    assert sum(float(p["mean_batch"]) for p in profiles) / 4 >= 2, profiles  # type: ignore[arg-type]


def test_the_profile_tells_where_the_time_went(url: str) -> None:
    done = call_entry(url, [_bytes(contract.AUDIO, jfk_wav().read_bytes()), _bool(contract.PROFILE, True)])[-1]
    assert isinstance(done, dict)
    seconds = done["profile"]["seconds"]
    assert {"decode", "vad", "engine_features", "engine_encode", "engine_decode", "transfer"} <= set(seconds)
    assert done["profile"]["windows"] == 1 and 0 < seconds["engine_encode"] < done["profile"]["wall"]
    # JFK neither loops nor holds an invention (the counts cross the engine's RESULT and the entry model).
    assert {done["profile"][k] for k in ("loops", "looping_passes", "dropped_away_from_speech",
                                         "dropped_in_silence")} == {0}


def test_timestamps_false_is_accepted_and_changes_nothing(url: str) -> None:
    timed = call_entry(url, [_bytes(contract.AUDIO, jfk_wav().read_bytes())])[-1]
    plain = call_entry(url, [_bytes(contract.AUDIO, jfk_wav().read_bytes()), _bool(contract.TIMESTAMPS, False)])[-1]
    assert isinstance(timed, dict) and isinstance(plain, dict)
    assert plain["text"] == timed["text"] and plain["segments"] == timed["segments"]
