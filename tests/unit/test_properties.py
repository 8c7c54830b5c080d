"""Properties of the pure parsers and formatters, checked on generated input (hypothesis).

Few examples per property in `make test` (HYPOTHESIS_PROFILE=ci), thousands under `make fuzz`.
"""

from __future__ import annotations

import base64
import re
import string
from dataclasses import dataclass

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from frontend.errors import APIError
from frontend.formats import format_timestamp, to_srt, to_vtt
from frontend.openai.audio_form import parse_audio_form
from frontend.request_bodies import FormReader, UploadedFile, data_url_audio
from harness.profiles import load_profile
from whisper_triton.errors import (
    AudioTooShortError,
    EngineError,
    FetchFailedError,
    InvalidAudioError,
    InvalidRequestError,
    ServiceError,
    from_wire,
)
from whisper_triton.languages import LANGUAGES, normalize_language

load_profile()

SECONDS = st.floats(min_value=0, max_value=1e7, allow_nan=False, allow_infinity=False)
TIME = re.compile(r"(\d{2,}):([0-5]\d):([0-5]\d)([,.])(\d{3})")


@dataclass
class Cue:
    start: float
    end: float
    text: str


def milliseconds(stamp: str, marker: str) -> int:
    match = TIME.fullmatch(stamp)
    assert match is not None, stamp
    assert match[4] == marker
    hours, minutes, seconds, _, millis = match.groups()
    return ((int(hours) * 60 + int(minutes)) * 60 + int(seconds)) * 1000 + int(millis)


# --------------------------------------------------------------------------------------------------
# Timestamps, srt and vtt


@given(SECONDS, st.sampled_from([",", "."]))
def test_timestamps_round_trip_to_the_millisecond(seconds: float, marker: str) -> None:
    assert milliseconds(format_timestamp(seconds, marker), marker) == round(seconds * 1000)


@given(st.floats(max_value=0, allow_nan=False, allow_infinity=False))
def test_negative_times_clamp_to_zero(seconds: float) -> None:
    assert format_timestamp(seconds, ",") == "00:00:00,000"


@given(SECONDS, SECONDS)
def test_timestamps_keep_their_order(a: float, b: float) -> None:
    assume(a <= b)
    assert milliseconds(format_timestamp(a, "."), ".") <= milliseconds(format_timestamp(b, "."), ".")


CUES = st.lists(st.builds(Cue, SECONDS, SECONDS, st.text(max_size=80)), max_size=8)


def parse_blocks(body: str) -> list[list[str]]:
    if not body:
        return []
    assert body.endswith("\n")
    return [block.split("\n") for block in body.rstrip("\n").split("\n\n")]


def check_cue_text(lines: list[str]) -> None:
    assert lines, "a cue needs a text line"
    for line in lines:
        assert line.strip() or lines == [" "], "no blank line inside a cue"
        assert "-->" not in line


@given(CUES)
def test_srt_parses_back_into_the_same_cues(cues: list[Cue]) -> None:
    blocks = parse_blocks(to_srt(cues))
    assert len(blocks) == len(cues)
    for number, (block, cue) in enumerate(zip(blocks, cues, strict=True), start=1):
        assert block[0] == str(number)
        start, arrow, end = block[1].partition(" --> ")
        assert arrow and milliseconds(start, ",") == round(cue.start * 1000)
        assert milliseconds(end, ",") == round(cue.end * 1000)
        check_cue_text(block[2:])


@given(CUES)
def test_vtt_parses_back_into_the_same_cues(cues: list[Cue]) -> None:
    body = to_vtt(cues)
    assert body.startswith("WEBVTT\n\n")
    blocks = parse_blocks(body.removeprefix("WEBVTT\n\n"))
    assert len(blocks) == len(cues)
    for block, cue in zip(blocks, cues, strict=True):
        start, arrow, end = block[0].partition(" --> ")
        assert arrow and milliseconds(start, ".") == round(cue.start * 1000)
        assert milliseconds(end, ".") == round(cue.end * 1000)
        check_cue_text(block[1:])


@given(st.text(alphabet=string.ascii_letters + " ,.!?'", min_size=1, max_size=60))
def test_plain_cue_text_is_kept_verbatim(text: str) -> None:
    assume(text.strip())
    assert to_srt([Cue(0, 1, text)]).split("\n")[2] == text


# --------------------------------------------------------------------------------------------------
# Form fields

FIELD_TEXT = st.text(max_size=40) | st.sampled_from(
    ["", " ", "true", "FALSE", "nan", "inf", "-0", "1e999", "[", "{", '["word"]', '{"type": "server_vad"}',
     "[" * 3000, '{"a":' * 2000])
FIELDS = st.dictionaries(
    st.sampled_from(["model", "language", "prompt", "response_format", "temperature", "timestamp_granularities",
                     "timestamp_granularities[]", "stream", "chunking_strategy", "chunking_strategy[type]",
                     "include[]", "languages[]", "keywords[]", "diarize", "num_speakers", "min_speakers",
                     "known_speaker_names[]", "known_speaker_references[]"]),
    st.lists(FIELD_TEXT, min_size=1, max_size=3),
    max_size=8,
)
FILE = {"file": UploadedFile("a.wav", "audio/wav", b"RIFF")}


def client_fault(error: APIError) -> None:
    assert 400 <= error.status < 500 and error.message and error.type == "invalid_request_error"


@given(FIELDS, st.sampled_from(["transcribe", "translate"]))
def test_any_form_is_parsed_or_refused_with_a_400(fields: dict[str, list[str]], task: str) -> None:
    try:
        form = parse_audio_form(fields, FILE, task)
    except APIError as error:
        client_fault(error)
        return
    assert 0.0 <= form.request.temperature <= 1.0
    assert form.response_format in ("json", "text", "srt", "verbose_json", "vtt", "diarized_json")
    assert set(form.timestamp_granularities) <= {"word", "segment"}
    assert form.model and form.model == form.model.strip()
    assert task == "transcribe" or (form.request.language is None and not form.request.diarize)


@given(st.text(max_size=30), st.floats(-10, 10), st.floats(-10, 10))
def test_numbers_are_in_range_or_refused(raw: str, a: float, b: float) -> None:
    low, high = min(a, b), max(a, b)
    try:
        value = FormReader({"x": [raw]}).number("x", low, low, high)
    except APIError as error:
        client_fault(error)
        assert error.param == "x"
        return
    assert low <= value <= high


@given(st.text(max_size=20))
def test_booleans_are_parsed_or_refused(raw: str) -> None:
    try:
        value = FormReader({"stream": [raw]}).boolean("stream")
    except APIError as error:
        client_fault(error)
        return
    assert value is (raw.strip().lower() in {"true", "1", "yes", "on"})


@given(st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=3))
def test_scalars_refuse_conflicting_repeats_only(values: list[str]) -> None:
    reader = FormReader({"model": values})
    if len(set(values)) > 1:
        with pytest.raises(APIError):
            reader.scalar("model")
    else:
        assert reader.scalar("model") == values[0]


WORDS = st.lists(st.text(alphabet=string.ascii_lowercase + "_-", min_size=1, max_size=10), min_size=1, max_size=5)


@given(WORDS)
def test_array_encodings_agree(words: list[str]) -> None:
    """Repeated `name[]`, repeated `name`, a JSON array and a comma-separated string mean the same."""
    import json

    encodings = [{"x[]": words}, {"x": words}, {"x": [json.dumps(words)]}, {"x": [",".join(words)]}]
    assert all(FormReader(fields).array("x") == words for fields in encodings)


@given(st.lists(st.text(max_size=20), min_size=1, max_size=4), st.sampled_from(["array", "items", "object"]))
def test_list_and_object_fields_never_fail_with_anything_but_a_400(raw: list[str], method: str) -> None:
    reader = FormReader({"x": raw, "x[]": raw[:1], "x[type]": raw[-1:]})
    try:
        getattr(reader, method)("x")
    except APIError as error:
        client_fault(error)


# --------------------------------------------------------------------------------------------------
# Data URLs (known speaker references)


@given(st.binary(min_size=1, max_size=300),
       st.sampled_from(["audio/wav", "audio/mpeg", "", "application/octet-stream"]), st.integers(0, 20))
def test_data_urls_round_trip(data: bytes, mime: str, wrap: int) -> None:
    encoded = base64.b64encode(data).decode()
    if wrap:  # MIME-style line breaks inside the base64 are tolerated
        encoded = "\n".join(encoded[i : i + wrap * 4] for i in range(0, len(encoded), wrap * 4))
    assert data_url_audio(f"data:{mime};base64,{encoded}", "ref") == data


@given(st.text(max_size=80))
def test_any_reference_string_is_decoded_or_refused(url: str) -> None:
    try:
        data = data_url_audio(url, "ref")
    except APIError as error:
        client_fault(error)
        assert error.param == "ref"
        return
    assert data


# --------------------------------------------------------------------------------------------------
# Errors across the gRPC boundary

ERRORS = st.sampled_from([ServiceError, InvalidRequestError, InvalidAudioError, AudioTooShortError, FetchFailedError,
                          EngineError])
PARAMS = st.none() | st.from_regex(r"[a-z_]{1,20}(\[\])?", fullmatch=True)


@given(ERRORS, st.text(max_size=100), PARAMS, st.text(alphabet=st.characters(blacklist_characters="["), max_size=40))
def test_errors_survive_the_wire_with_any_prefix(cls: type[ServiceError], message: str, param: str | None,
                                                 prefix: str) -> None:
    sent = cls(message, param)
    received = from_wire(prefix + sent.to_wire())
    assert type(received) is cls
    assert (received.message, received.param, received.code) == (message, sent.param, cls.code)
    assert received.client_fault == cls.client_fault


@given(st.text(max_size=100))
def test_any_text_reads_as_some_service_error(text: str) -> None:
    error = from_wire(text)
    assert isinstance(error, ServiceError) and isinstance(error.message, str)


# --------------------------------------------------------------------------------------------------
# Languages

CODES = st.sampled_from(sorted(LANGUAGES))


@given(CODES, st.sampled_from(["", "-US", "_gb", "-Hant", "-419"]), st.booleans(), st.sampled_from(["", " ", "\t"]))
def test_codes_tags_and_case_normalise_to_the_code(code: str, region: str, upper: bool, pad: str) -> None:
    value = f"{pad}{code.upper() if upper else code}{region}{pad}"
    assert normalize_language(value) == code


@given(CODES)
def test_english_names_normalise_to_their_code(code: str) -> None:
    assert normalize_language(LANGUAGES[code].title()) == code


@given(st.text(max_size=30), st.integers(1, len(LANGUAGES)))
def test_any_value_is_a_supported_code_none_or_refused(value: str, num_languages: int) -> None:
    try:
        code = normalize_language(value, num_languages)
    except InvalidRequestError as error:
        assert error.param == "language" and len(error.message) < 300
        return
    assert code is None or code in list(LANGUAGES)[:num_languages]
    assert normalize_language(code, num_languages) == code  # idempotent
