"""Normalisation of the `language` request parameter."""

from __future__ import annotations

import pytest

from whisper_triton.errors import InvalidRequestError
from whisper_triton.languages import LANGUAGES, language_name, normalize_language, supported_languages


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("en", "en"),
        (" en ", "en"),
        ("en-US", "en"),
        ("EN_us", "en"),
        ("english", "en"),
        ("English", "en"),
        ("zh-Hant", "zh"),
        ("zh_Hans_CN", "zh"),
        ("pt-BR", "pt"),
        ("haitian creole", "ht"),
        ("mandarin", "zh"),
        ("nb", "no"),
        ("jv", "jw"),
        ("haw", "haw"),
    ],
)
def test_codes_tags_and_names_are_normalised(value: str, code: str) -> None:
    assert normalize_language(value) == code


@pytest.mark.parametrize("value", [None, "", "   "])
def test_an_empty_language_means_detect(value: str | None) -> None:
    assert normalize_language(value) is None


@pytest.mark.parametrize("value", ["xx", "klingon", "e", "-en", "en us"])
def test_unknown_languages_are_rejected(value: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        normalize_language(value)
    assert info.value.param == "language"
    assert value in info.value.message
    assert info.value.client_fault


def test_languages_beyond_the_models_are_rejected() -> None:
    with pytest.raises(InvalidRequestError) as info:
        normalize_language("yue", num_languages=99)
    assert info.value.param == "language"
    with pytest.raises(InvalidRequestError):
        normalize_language("cantonese", num_languages=99)
    assert normalize_language("yue", num_languages=100) == "yue"
    assert normalize_language("cantonese", num_languages=100) == "yue"


def test_an_english_only_model_accepts_only_english() -> None:
    assert normalize_language("en-GB", num_languages=1) == "en"
    with pytest.raises(InvalidRequestError):
        normalize_language("fr", num_languages=1)


def test_supported_languages_follow_the_vocabulary_order() -> None:
    assert len(LANGUAGES) == 100
    assert supported_languages(99)[:3] == ["en", "zh", "de"]
    assert "yue" not in supported_languages(99)
    assert supported_languages(100)[-1] == "yue"
    assert language_name("fr") == "french"
    assert language_name("xx") == "xx"
