"""The entry model's request contract: one table from request fields to tensors, and typed events."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import numpy as np
import pytest

from whisper_triton import contract
from whisper_triton.contract import DoneEvent, Segment, SegmentsEvent, TranscriptionRequest, Turn, Word
from whisper_triton.errors import InvalidRequestError

CONFIG = Path(__file__).resolve().parents[2] / "model_repository" / "whisper" / "config.pbtxt"
DATATYPES = {"TYPE_STRING": "BYTES", "TYPE_BOOL": "BOOL", "TYPE_FP32": "FP32", "TYPE_INT32": "INT32"}


def config_inputs() -> dict[str, tuple[str, tuple[int, ...], bool]]:
    """name -> (data type, dims, optional) of the entry model's config.pbtxt."""
    inputs = CONFIG.read_text().split("output [")[0]
    found = {}
    for name, datatype, dims, rest in re.findall(r'\{ name: "(\w+)" data_type: (\w+) dims: \[ ([-\d, ]+) \](.*?)\}',
                                                 inputs):
        found[name] = (DATATYPES[datatype], tuple(int(d) for d in dims.split(",")), "optional: true" in rest)
    return found


def test_every_request_field_has_one_tensor_and_config_pbtxt_agrees() -> None:
    assert [item.field for item in contract.INPUTS] == list(TranscriptionRequest.__struct_fields__)
    declared = config_inputs()
    assert declared.pop(contract.AUDIO) == ("BYTES", (1,), False)
    assert declared.pop(contract.TIMESTAMPS) == ("BOOL", (1,), True)  # accepted and ignored (older clients)
    assert declared == {item.tensor: (item.kind.datatype, item.kind.dims, True) for item in contract.INPUTS}


def test_a_request_survives_the_tensors_both_ways() -> None:
    request = TranscriptionRequest(
        model="tiny.en", task="translate", language="de", prompt="Ölkännchen", temperature=0.5, word_timestamps=True,
        vad=False, stream=True, profile=True, transcript=[{"start": 0.0, "end": 1.0, "text": "hi"}], diarize=True,
        num_speakers=2, min_speakers=1, max_speakers=3, known_speaker_names=("Ann", "Bob"),
        known_speaker_references=(b"RIFF\x00\x00",), known_speaker_embeddings=((0.5, -0.25),), live=True,
        request_id="live-s-1", logprobs=True,
        vad_options=contract.VadParameters(threshold=0.3, min_silence_duration_ms=200, max_speech_duration_s=12.5),
    )
    arrays = contract.request_arrays(b"audio\x00\x00", request)
    assert set(arrays) == {contract.AUDIO} | {item.tensor for item in contract.INPUTS}
    for item in contract.INPUTS:
        assert len(arrays[item.tensor].shape) == len(item.kind.dims)
    audio, back = contract.read_request(arrays.get)
    assert audio == b"audio\x00\x00" and back == request  # trailing zero bytes kept


def test_defaults_are_not_sent_and_absent_tensors_mean_defaults() -> None:
    assert set(contract.request_arrays(b"a", TranscriptionRequest())) == {contract.AUDIO}
    assert contract.read_request({contract.AUDIO: np.array([b"a"], dtype=object)}.get) == (b"a", TranscriptionRequest())
    # Empty text and counts of 0 are absent too, as older clients send them.
    empty = {contract.TASK: np.array([b""], dtype=object), contract.NUM_SPEAKERS: np.array([0], dtype=np.int32)}
    assert contract.read_request(empty.get) == (b"", TranscriptionRequest())


def test_a_bad_transcript_names_its_parameter() -> None:
    with pytest.raises(InvalidRequestError) as raised:
        contract.read_request({contract.TRANSCRIPT: np.array([b'{"segments": 3}'], dtype=object)}.get)
    assert raised.value.param == "transcript"


def test_diarization_is_needed_for_speakers_and_voices() -> None:
    assert not TranscriptionRequest().needs_diarization
    for request in (TranscriptionRequest(diarize=True), TranscriptionRequest(task="diarize"),
                    TranscriptionRequest(task="embed")):
        assert request.needs_diarization


def test_events_keep_their_json_shape() -> None:
    word = Word(" hi", 0.5, 0.9, 0.91, [123])
    segment = Segment(0.5, 0.9, " hi", [1, 123, 2], 0.0, -0.2, 1.1, 0.01, [word], id=0, seek=0)
    assert msgspec.to_builtins(SegmentsEvent("en", 0.5, [segment])) == {
        "type": "segments", "language": "en", "progress": 0.5, "segments": [{
            "start": 0.5, "end": 0.9, "text": " hi", "tokens": [1, 123, 2], "temperature": 0.0, "avg_logprob": -0.2,
            "compression_ratio": 1.1, "no_speech_prob": 0.01, "id": 0, "seek": 0,
            "words": [{"word": " hi", "start": 0.5, "end": 0.9, "probability": 0.91, "tokens": [123]}]}]}
    bare = msgspec.structs.replace(segment, words=[])
    done = DoneEvent(task="diarize", language=None, duration=1.0, text="", segments=[bare],
                     speakers=[Turn(0.0, 1.0, "SPEAKER_00")])
    encoded = msgspec.to_builtins(done)
    assert encoded["language"] is None and "words" not in encoded["segments"][0] and "profile" not in encoded
    assert encoded["speakers"] == [{"start": 0.0, "end": 1.0, "speaker": "SPEAKER_00"}]
    assert contract.decode_event(contract.encode(done)) == done


@pytest.mark.parametrize("options", [b'{"threshold": 1.5}', b'{"speech_pad_ms": -1}', b'{"min_silence_ms": 3}', b"[1"])
def test_bad_vad_options_name_their_parameter(options: bytes) -> None:
    arrays = {contract.AUDIO: np.array([b"a"], dtype=object), contract.VAD_OPTIONS: np.array([options], dtype=object)}
    with pytest.raises(InvalidRequestError) as raised:
        contract.read_request(arrays.get)
    assert raised.value.param == "vad_options"
