"""Token log-probabilities (`include[]=logprobs`): tokens to OpenAI's {token, logprob, bytes}, on segments."""

from __future__ import annotations

import math

import pytest

from tests.unit.test_decoding import (
    FakeEngine,
    english,
    jfk_samples,
    job,
    multilingual,
    normalized,
    speech,
    texts,
    tiny_en,
    ts,
)
from whisper_triton.contract import Segment
from whisper_triton.ctranslate2_engine import CTranslate2Engine
from whisper_triton.decoding import DecodeOptions, WindowJob, assign_logprobs, decode_windows, token_logprob
from whisper_triton.engine import Generation
from whisper_triton.features import window_features
from whisper_triton.text import WhisperTokenizer

__all__ = ["english", "multilingual", "tiny_en"]  # fixtures of test_decoding, shared


@pytest.mark.parametrize("text", [" And so, my fellow Americans", " Ölkännchen, 日本語の文章です。",
                                  " ¿Qué tal? — «ça va»"])
def test_token_bytes_spell_the_text(multilingual: WhisperTokenizer, text: str) -> None:
    tokens = multilingual.encode(text)
    assert b"".join(multilingual.token_bytes(t) for t in tokens).decode("utf-8") == text


def test_a_token_holding_part_of_a_character_keeps_its_exact_bytes(multilingual: WhisperTokenizer) -> None:
    tokens = multilingual.encode(" 日本語の文章です")
    items = [token_logprob(multilingual, t, 0.5) for t in tokens]
    partial = [item for item in items if bytes(item.bytes).decode("utf-8", errors="ignore") != item.token]
    assert partial, "the test needs a token that splits a character"
    assert all("\ufffd" in item.token for item in partial)
    assert b"".join(bytes(item.bytes) for item in items).decode("utf-8") == " 日本語の文章です"


def test_logprob_is_the_log_of_the_probability_and_never_above_zero(english: WhisperTokenizer) -> None:
    (token,) = english.encode(" the")
    assert token_logprob(english, token, 0.25).logprob == pytest.approx(math.log(0.25), abs=1e-6)
    assert token_logprob(english, token, 1.0000001).logprob == 0.0  # float rounding of a certain token
    assert token_logprob(english, token, 0.0).logprob == -100.0
    assert token_logprob(english, token, 0.5).token == " the" and token_logprob(english, token, 0.5).bytes == [
        32, 116, 104, 101]


def _segment(tokenizer: WhisperTokenizer, text: str, start: float, end: float) -> Segment:
    tokens = [ts(tokenizer, start), *tokenizer.encode(text), ts(tokenizer, end)]
    return Segment(start, end, text, tokens, 0.0, -0.1, 1.0, 0.0)


def test_each_segment_gets_its_own_tokens_probabilities_in_order(english: WhisperTokenizer) -> None:
    segments = [_segment(english, " Hello there.", 0.0, 1.0), _segment(english, " Bye.", 1.0, 2.0)]
    first, second = (len(english.encode(s.text)) for s in segments)
    probs = [0.5] * first + [0.25] * second + [0.9]  # the end of text comes last
    assign_logprobs(english, segments, probs)
    assert "".join(item.token for item in segments[0].logprobs) == " Hello there."
    assert [item.logprob for item in segments[1].logprobs] == [pytest.approx(math.log(0.25), abs=1e-6)] * second


def test_an_aligner_without_probabilities_leaves_segments_without(english: WhisperTokenizer) -> None:
    segments = [_segment(english, " Hello there.", 0.0, 1.0)]
    assign_logprobs(english, segments, [])
    assert segments[0].logprobs == []


def test_logprobs_cost_nothing_unless_asked_and_one_alignment_pass_when_asked(english: WhisperTokenizer) -> None:
    engine = FakeEngine({i: {0.0: speech(english, " Hello big world.")} for i in (0, 1, 2)})
    results = decode_windows(engine, english, [job(0), job(1, logprobs=True), job(2, logprobs=True,
                                                                               word_timestamps=True)])
    (align,) = engine.called("align")
    assert align.items == [1, 2]  # one pass for words and log-probabilities alike
    assert results[0].segments[0].logprobs == []
    for result in results[1:]:
        (segment,) = result.segments
        assert "".join(item.token for item in segment.logprobs) == " Hello big world."
        assert all(item.logprob == pytest.approx(math.log(0.9), abs=1e-6) for item in segment.logprobs)
    assert results[1].segments[0].words == [] and results[2].segments[0].words
    plain = FakeEngine({0: {0.0: speech(english, " Hello.")}})
    decode_windows(plain, english, [job(0)])
    assert plain.called("align") == []


def test_logprobs_belong_to_the_text_left_after_a_loop_is_cut(english: WhisperTokenizer) -> None:
    looping = Generation([ts(english, 0.0), *english.encode(" Go on." * 8), ts(english, 8.0), english.eot], -0.1,
                         0.01)
    engine = FakeEngine({0: {0.0: looping}})
    (result,) = decode_windows(engine, english, [job(0, logprobs=True, temperatures=(0.0,))])
    assert result.loops == 1
    assert "".join(item.token for s in result.segments for item in s.logprobs) == texts(result.segments)


def test_real_engine_gives_the_log_probabilities_of_the_transcript(english: WhisperTokenizer,
                                                                   tiny_en: CTranslate2Engine) -> None:
    features, num_frames = window_features(jfk_samples(), tiny_en.n_mels)
    plain, asked = decode_windows(tiny_en, english, [WindowJob(features, num_frames, DecodeOptions()),
                                                     WindowJob(features, num_frames, DecodeOptions(logprobs=True))])
    assert all(s.logprobs == [] for s in plain.segments)
    items = [item for s in asked.segments for item in s.logprobs]
    assert "".join(item.token for item in items) == texts(asked.segments)
    assert b"".join(bytes(item.bytes) for item in items).decode() == texts(asked.segments)
    assert normalized(texts(asked.segments)).startswith("and so my fellow americans")
    logprobs = [item.logprob for item in items]
    assert all(lp <= 0.0 for lp in logprobs) and any(lp < -1e-3 for lp in logprobs)
    assert sum(logprobs) / len(logprobs) > -1.0  # a clear recording: the model is sure of most tokens
