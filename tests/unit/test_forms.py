"""Form field parsing: the SDKs' encodings of lists, objects and booleans, and validation."""

from __future__ import annotations

import pytest

from frontend.errors import APIError
from frontend.openai.audio_form import parse_audio_form
from frontend.request_bodies import FormReader, UploadedFile, data_url_audio

FILE = {"file": UploadedFile("a.wav", "audio/wav", b"RIFF")}


def form(**fields: str | list[str]) -> dict[str, list[str]]:
    return {k: v if isinstance(v, list) else [v] for k, v in fields.items()}


def test_defaults() -> None:
    parsed = parse_audio_form(form(model="whisper-1"), FILE, "transcribe")
    assert (parsed.response_format, parsed.request.temperature, parsed.request.stream) == ("json", 0.0, False)
    assert parsed.timestamp_granularities == ("segment",)
    assert parsed.request.language is None and parsed.request.prompt is None and not parsed.request.word_timestamps


def test_bracketed_and_plain_arrays() -> None:
    fields = {"model": ["m"], "response_format": ["verbose_json"], "timestamp_granularities[]": ["word", "segment"]}
    assert parse_audio_form(fields, FILE, "transcribe").request.word_timestamps
    for value in ('["word"]', "word,segment", "word"):
        assert FormReader({"timestamp_granularities": [value]}).array("timestamp_granularities")[0] == "word"


def test_word_timestamps_need_verbose_json() -> None:
    parsed = parse_audio_form(form(model="m", **{"timestamp_granularities[]": "word"}), FILE, "transcribe")
    assert not parsed.request.word_timestamps


@pytest.mark.parametrize(("raw", "value"), [("true", True), ("False", False), ("1", True), ("", False)])
def test_booleans(raw: str, value: bool) -> None:
    assert FormReader({"stream": [raw]}).boolean("stream") is value


def test_chunking_strategy_forms() -> None:
    for fields in (form(model="m", chunking_strategy="auto"),
                   form(model="m", chunking_strategy='{"type": "server_vad", "threshold": 0.5}'),
                   form(model="m", **{"chunking_strategy[type]": "server_vad", "chunking_strategy[threshold]": "0.5"})):
        parse_audio_form(fields, FILE, "transcribe")
    with pytest.raises(APIError) as info:
        parse_audio_form(form(model="m", **{"chunking_strategy[type]": "fixed"}), FILE, "transcribe")
    assert info.value.param == "chunking_strategy"


def test_conflicting_duplicates_are_rejected_identical_ones_not() -> None:
    assert FormReader({"model": ["a", "a"]}).scalar("model") == "a"
    with pytest.raises(APIError):
        FormReader({"model": ["a", "b"]}).scalar("model")


def test_keywords_join_the_prompt_and_single_languages_entry_is_the_language() -> None:
    parsed = parse_audio_form(form(model="m", prompt="Meeting notes.", **{"keywords[]": ["Triton", "CTranslate2"],
                                                                          "languages[]": "de"}),
                              FILE, "transcribe")
    assert parsed.request.prompt == "Meeting notes. Triton, CTranslate2."
    assert parsed.request.language == "de"


def test_translation_ignores_language_and_refuses_diarized_json() -> None:
    assert parse_audio_form(form(model="m", language="fr"), FILE, "translate").request.language is None
    with pytest.raises(APIError) as info:
        parse_audio_form(form(model="m", response_format="diarized_json"), FILE, "translate")
    assert info.value.param == "response_format" and info.value.status == 400


@pytest.mark.parametrize(("fields", "param"), [
    (form(response_format="json"), "model"),
    (form(model="m", temperature="nan"), "temperature"),
    (form(model="m", temperature="-0.1"), "temperature"),
    (form(model="m", **{"known_speaker_names[]": "agent"}), "known_speaker_names"),  # without diarization
    (form(model="m", response_format="diarized_json", **{"known_speaker_references[]": "data:audio/wav;base64,UklG"}),
     "known_speaker_names"),
    (form(model="m", response_format="diarized_json", **{"known_speaker_names[]": "a",
                                                        "known_speaker_references[]": "http://x/a.wav"}),
     "known_speaker_references"),
    (form(model="m", response_format="diarized_json", **{"known_speaker_names[]": "a",
                                                        "known_speaker_references[]": "data:audio/wav;base64,%%%"}),
     "known_speaker_references"),
    (form(model="m", num_speakers="2.5"), "num_speakers"),
    (form(model="m", **{"include[]": "everything"}), "include"),
])
def test_invalid_fields(fields: dict[str, list[str]], param: str) -> None:
    with pytest.raises(APIError) as info:
        parse_audio_form(fields, FILE, "transcribe")
    assert info.value.param == param and info.value.status == 400


def test_missing_file() -> None:
    with pytest.raises(APIError) as info:
        parse_audio_form(form(model="m"), {}, "transcribe")
    assert info.value.param == "file"


def test_diarization_is_asked_by_format_flag_or_model() -> None:
    assert parse_audio_form(form(model="m", response_format="diarized_json"), FILE, "transcribe").request.diarize
    asked = parse_audio_form(form(model="m", diarize="true", max_speakers="3"), FILE, "transcribe").request
    assert asked.max_speakers == 3
    assert parse_audio_form(form(model="gpt-4o-transcribe-diarize"), FILE, "transcribe").request.diarize
    assert not parse_audio_form(form(model="m"), FILE, "transcribe").request.diarize


def test_known_speakers_pair_names_with_data_url_clips() -> None:
    fields = {"model": ["m"], "response_format": ["diarized_json"],
              "known_speaker_names[]": ["Smith, Jane", "agent", "stored one"],
              "known_speaker_references[]": ["data:audio/wav;base64,UklGRg==", "data:audio/x-wav;codecs=1;base64,AAE="]}
    parsed = parse_audio_form(fields, FILE, "transcribe")
    assert parsed.request.known_speaker_names == ("Smith, Jane", "agent", "stored one")  # commas stay in names
    assert parsed.request.known_speaker_references == (b"RIFF", b"\x00\x01")
    as_json = parse_audio_form(form(model="m", response_format="diarized_json",
                                    known_speaker_names='["a", "b"]'), FILE, "transcribe")
    assert as_json.request.known_speaker_names == ("a", "b") and as_json.request.known_speaker_references == ()


@pytest.mark.parametrize("url", ["data:audio/wav,UklGRg==", "data:audio/wav;base64,", "UklGRg==", "data:;base64,@@"])
def test_bad_data_urls(url: str) -> None:
    with pytest.raises(APIError) as info:
        data_url_audio(url, "known_speaker_references")
    assert info.value.param == "known_speaker_references" and info.value.status == 400

