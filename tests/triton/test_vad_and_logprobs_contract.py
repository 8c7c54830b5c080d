"""The entry model's TASK=vad and LOGPROBS, called directly over gRPC as the contract documents them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.assets import JFK_TEXT, jfk_wav, wav_bytes
from harness.grpc_calls import bool_input, bytes_input, call_entry
from harness.nonspeech import nonspeech
from harness.stack import Served
from harness.text import wer
from whisper_triton import contract
from whisper_triton.audio import decode_audio
from whisper_triton.errors import InvalidRequestError, from_wire


@pytest.fixture(scope="module")
def url(served: Served) -> str:
    return served.grpc_url


def test_vad_task_returns_speech_regions_in_seconds(url: str) -> None:
    jfk = decode_audio(jfk_wav().read_bytes()).samples
    audio = wav_bytes(np.concatenate([nonspeech("room_tone", 5.0, seed=3), jfk]))
    options = json.dumps({"threshold": 0.5, "min_silence_duration_ms": 300, "speech_pad_ms": 100}).encode()
    (done,) = call_entry(url, [bytes_input(contract.AUDIO, audio), bytes_input(contract.TASK, b"vad"),
                               bytes_input(contract.VAD_OPTIONS, options)])
    assert isinstance(done, dict) and done["type"] == "done" and done["task"] == "vad"
    assert done["segments"] == [] and done["text"] == ""
    assert done["duration"] == pytest.approx(16.0, abs=0.01)
    regions = done["speech"]
    assert len(regions) >= 2 and all(5.0 - 0.3 <= r["start"] < r["end"] <= 16.0 for r in regions)
    assert regions[0]["start"] < 5.6 and regions[-1]["end"] > 15.0


def test_bad_vad_options_are_an_invalid_argument_naming_the_parameter(url: str) -> None:
    (error,) = call_entry(url, [bytes_input(contract.AUDIO, jfk_wav().read_bytes()), bytes_input(contract.TASK, b"vad"),
                                bytes_input(contract.VAD_OPTIONS, b'{"threshold": 2}')])
    assert isinstance(error, Exception)
    parsed = from_wire(str(error))
    assert isinstance(parsed, InvalidRequestError) and parsed.param == "vad_options"


def test_logprobs_come_with_each_segment_and_spell_its_text(url: str) -> None:
    (done,) = call_entry(url, [bytes_input(contract.AUDIO, jfk_wav().read_bytes()),
                               bool_input(contract.LOGPROBS, True)])
    assert isinstance(done, dict) and wer(JFK_TEXT, done["text"]) < 0.1
    for segment in done["segments"]:
        assert "".join(item["token"] for item in segment["logprobs"]) == segment["text"]
        assert all(item["logprob"] <= 0 and bytes(item["bytes"]).decode() == item["token"]
                   for item in segment["logprobs"])
    (plain,) = call_entry(url, [bytes_input(contract.AUDIO, jfk_wav().read_bytes())])
    assert isinstance(plain, dict) and all("logprobs" not in s for s in plain["segments"])
