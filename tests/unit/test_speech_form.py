"""The forms of speech timestamps and of include[]=logprobs: what reaches the entry model, and 400s."""

from __future__ import annotations

import pytest

from frontend.errors import APIError
from frontend.openai.audio_form import parse_audio_form
from frontend.openai.speech_timestamps import parse_speech_form, speech_timestamps
from frontend.request_bodies import UploadedFile
from whisper_triton.contract import DoneEvent, Span, VadParameters

FILE = {"file": UploadedFile("a.wav", "audio/wav", b"RIFF")}


def form(**fields: str | list[str]) -> dict[str, list[str]]:
    return {k: v if isinstance(v, list) else [v] for k, v in fields.items()}


def test_speaches_defaults_and_names() -> None:
    assert parse_speech_form({}, FILE).request.vad_options == VadParameters()
    parsed = parse_speech_form(form(threshold="0.3", neg_threshold="0.1", min_silence_duration_ms="250",
                                    speech_pad_ms="30", min_speech_duration_ms="100", max_speech_duration_s="12.5",
                                    model="silero_vad_v6"), FILE)
    assert parsed.request.task == "vad"
    assert parsed.request.vad_options == VadParameters(threshold=0.3, neg_threshold=0.1, min_silence_duration_ms=250,
                                                       speech_pad_ms=30, min_speech_duration_ms=100,
                                                       max_speech_duration_s=12.5)


@pytest.mark.parametrize(("fields", "param"), [
    (form(threshold="1.01"), "threshold"),
    (form(threshold="nan"), "threshold"),
    (form(neg_threshold="-0.2"), "neg_threshold"),
    (form(min_silence_duration_ms="-1"), "min_silence_duration_ms"),
    (form(min_silence_duration_ms="1e12"), "min_silence_duration_ms"),
    (form(speech_pad_ms="0.5"), "speech_pad_ms"),
    (form(min_speech_duration_ms="x"), "min_speech_duration_ms"),
    (form(max_speech_duration_s="0"), "max_speech_duration_s"),
    (form(max_speech_duration_s="-3"), "max_speech_duration_s"),
])
def test_out_of_range_parameters_are_400s_naming_them(fields: dict[str, list[str]], param: str) -> None:
    with pytest.raises(APIError) as raised:
        parse_speech_form(fields, FILE)
    assert raised.value.status == 400 and raised.value.param == param


def test_no_file_is_a_400() -> None:
    with pytest.raises(APIError) as raised:
        parse_speech_form(form(threshold="0.5"), {})
    assert raised.value.param == "file" and raised.value.code == "missing_required_parameter"


def test_regions_are_whole_milliseconds() -> None:
    done = DoneEvent(task="vad", language=None, duration=3.0, text="", segments=[],
                     speech=[Span(0.352, 2.1764), Span(2.5, 2.9995)])
    assert [(r.start, r.end) for r in speech_timestamps(done)] == [(352, 2176), (2500, 3000)]


@pytest.mark.parametrize(("fields", "asked"), [
    (form(model="whisper-1", **{"include[]": "logprobs"}), True),
    (form(model="whisper-1", include="logprobs", stream="true"), True),
    (form(model="whisper-1"), False),
    (form(model="whisper-1", response_format="verbose_json", **{"include[]": "logprobs"}), False),
    (form(model="whisper-1", response_format="text", **{"include[]": "logprobs"}), False),
    (form(model="whisper-1", diarize="true", **{"include[]": "logprobs"}), False),
])
def test_logprobs_are_asked_with_json_only(fields: dict[str, list[str]], asked: bool) -> None:
    assert parse_audio_form(fields, FILE, "transcribe").request.logprobs is asked
