"""Errors sent through Triton as `[code(param)] message` text and parsed back."""

from __future__ import annotations

import pytest

from whisper_triton.errors import (
    AudioTooShortError,
    EngineError,
    InvalidAudioError,
    InvalidRequestError,
    ServiceError,
    from_wire,
)

CLASSES = [ServiceError, InvalidRequestError, InvalidAudioError, AudioTooShortError, EngineError]


def assert_same(back: ServiceError, error: ServiceError) -> None:
    assert type(back) is type(error)
    assert (back.code, back.message, back.param, back.client_fault) == (
        error.code,
        error.message,
        error.param,
        error.client_fault,
    )
    assert str(back) == error.message


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("param", [None, "temperature"])
def test_round_trip(cls: type[ServiceError], param: str | None) -> None:
    error = cls("Something [odd] happened:\nsecond line (really).", param=param)
    assert_same(from_wire(error.to_wire()), error)


def test_wire_format() -> None:
    error = InvalidRequestError("Bad value.", param="language")
    assert error.to_wire() == "[invalid_value(language)] Bad value."
    assert EngineError("Boom.").to_wire() == "[engine_error] Boom."
    assert ServiceError("Oops.").to_wire() == "[internal_error] Oops."


def test_audio_errors_blame_the_file_by_default() -> None:
    error = InvalidAudioError("Not audio.")
    assert error.param == "file"
    assert error.to_wire() == "[invalid_audio(file)] Not audio."
    assert_same(from_wire(error.to_wire()), error)
    short = AudioTooShortError("Too short.")
    assert (short.code, short.param, short.client_fault) == ("audio_too_short", "file", True)
    assert isinstance(short, InvalidAudioError)


def test_client_faults() -> None:
    assert [cls.client_fault for cls in CLASSES] == [False, True, True, True, False]


@pytest.mark.parametrize(
    "prefix",
    [
        "in ensemble 'whisper', ",
        "Failed to process the request(s) for model 'whisper_0_0', message: TritonModelException: ",
        "in ensemble 'whisper', Failed to process the request(s) for model instance 'x': ",
    ],
)
def test_prefixes_added_by_triton_are_tolerated(prefix: str) -> None:
    back = from_wire(prefix + "[invalid_audio(file)] The file has no audio track.")
    assert type(back) is InvalidAudioError
    assert (back.message, back.param) == ("The file has no audio track.", "file")


@pytest.mark.parametrize(
    "text",
    [
        "Stub process is not healthy.",
        "",
        "[unknown] something",
        "[Invalid_Value] upper case is not a code",
        "[invalid_value]no space",
    ],
)
def test_other_text_is_a_plain_service_error(text: str) -> None:
    back = from_wire(text)
    assert type(back) is ServiceError
    assert back.code == "internal_error"
    assert not back.client_fault
    assert back.param is None


def test_unknown_text_keeps_the_whole_message() -> None:
    assert from_wire("Stub process is not healthy.").message == "Stub process is not healthy."


def test_client_fault_codes_come_from_the_registry() -> None:
    from whisper_triton.errors import is_client_fault

    for code in ("invalid_value", "invalid_audio", "audio_too_short", "fetch_failed"):
        assert is_client_fault(code), code
    for code in ("engine_error", "internal_error", "server_overloaded", None, "no_such_code"):
        assert not is_client_fault(code), code
