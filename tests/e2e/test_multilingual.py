"""The multilingual `base` model (the `make serve` default): detection, translation, BCP-47."""

from __future__ import annotations

import unicodedata

import openai
import pytest

from harness.assets import JFK_TEXT, MULTILINGUAL, jfk_wav, multilingual_clip
from harness.stack import Served
from harness.text import normalize, wer
from whisper_triton.languages import language_name


@pytest.fixture(scope="module")
def sdk(served_base: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served_base.base_url}/v1", api_key="unused", max_retries=0, timeout=300)


def test_base_transcribes_jfk(sdk: openai.OpenAI) -> None:
    result = sdk.audio.transcriptions.create(model="base", file=jfk_wav().open("rb"))
    assert wer(JFK_TEXT, result.text) < 0.05


@pytest.mark.parametrize("lang", sorted(MULTILINGUAL))
def test_language_is_detected(sdk: openai.OpenAI, lang: str) -> None:
    path, _ = multilingual_clip(lang)
    result = sdk.audio.transcriptions.create(model="whisper-1", file=path.open("rb"),
                                             response_format="verbose_json")
    assert result.language == language_name(lang)


@pytest.mark.parametrize("lang", sorted(MULTILINGUAL))
def test_translation_to_english(sdk: openai.OpenAI, lang: str) -> None:
    path, _ = multilingual_clip(lang)
    _, keywords = MULTILINGUAL[lang]
    result = sdk.audio.translations.create(model="whisper-1", file=path.open("rb"))
    text = normalize(unicodedata.normalize("NFKD", result.text).encode("ascii", "ignore").decode())  # café: cafe
    assert all(any(word in text.split() for word in keyword.split("|")) for keyword in keywords), (lang, result.text)
    verbose = sdk.audio.translations.create(model="whisper-1", file=path.open("rb"), response_format="verbose_json")
    assert verbose.language == "english"
    assert verbose.segments


def test_bcp47_language_forces_the_language(sdk: openai.OpenAI) -> None:
    path, sentence = multilingual_clip("es")
    result = sdk.audio.transcriptions.create(model="whisper-1", file=path.open("rb"), language="es-ES",
                                             response_format="verbose_json")
    assert result.language == "spanish"
    # Transcribed in Spanish, not translated: shares words with the source sentence.
    assert set(normalize(result.text).split()) & set(normalize(sentence).split())
