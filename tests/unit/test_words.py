"""Word timestamps from hand-made token-to-frame alignments."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from whisper_triton.engine import Alignment
from whisper_triton.models import read_model_info, resolve_model
from whisper_triton.text import WhisperTokenizer
from whisper_triton.words import ENCODER_FRAMES_PER_SECOND, Word, align_words, assign_words


@pytest.fixture(scope="module")
def tokenizer() -> WhisperTokenizer:
    path = resolve_model("tiny.en").path
    info = read_model_info(path)
    return WhisperTokenizer(path / "tokenizer.json", info.multilingual, info.num_languages)


def alignment(starts: list[float], probs: list[float] | None = None) -> Alignment:
    """A DTW path on which token k (the end of text last) starts at `starts[k]` seconds."""
    frames = [round(s * ENCODER_FRAMES_PER_SECOND) for s in starts]
    frames.append(frames[-1] + 5)
    pairs = [(k, f) for k in range(len(starts)) for f in range(frames[k], max(frames[k] + 1, frames[k + 1]))]
    return Alignment(pairs=pairs, token_probs=probs if probs is not None else [0.5] * len(starts))


def timed(words: list[Word]) -> list[tuple[str, float, float]]:
    return [(w.word, round(w.start, 3), round(w.end, 3)) for w in words]


def test_words_start_where_their_first_token_starts(tokenizer: WhisperTokenizer) -> None:
    tokens = tokenizer.encode(" Hello big world")
    assert len(tokens) == 3
    words = align_words(tokenizer, "en", tokens, alignment([0.0, 0.5, 0.8, 1.4], [0.9, 0.6, 0.3, 0.1]))

    assert timed(words) == [(" Hello", 0.0, 0.5), (" big", 0.5, 0.8), (" world", 0.8, 1.4)]
    assert [w.probability for w in words] == pytest.approx([0.9, 0.6, 0.3])
    assert [w.tokens for w in words] == [[t] for t in tokens]


def test_a_word_of_several_tokens_spans_them_all(tokenizer: WhisperTokenizer) -> None:
    tokens = tokenizer.encode(" Kubernetes is")
    kubernetes = tokenizer.encode(" Kubernetes")
    assert len(kubernetes) > 1
    starts = [0.1 * k for k in range(len(tokens) + 1)]
    probs = [0.2 * (k % 4) for k in range(len(tokens) + 1)]
    words = align_words(tokenizer, "en", tokens, alignment(starts, probs))

    n = len(kubernetes)
    boundary = round(0.1 * n, 3)
    assert timed(words) == [(" Kubernetes", 0.0, boundary), (" is", boundary, round(boundary + 0.1, 3))]
    assert words[0].tokens == kubernetes
    assert words[0].probability == pytest.approx(sum(probs[:n]) / n)


def test_closing_punctuation_joins_the_previous_word(tokenizer: WhisperTokenizer) -> None:
    tokens = tokenizer.encode(" Hello, world.")
    assert len(tokens) == 4
    words = align_words(tokenizer, "en", tokens, alignment([0.0, 0.4, 0.6, 1.0, 1.2]))

    # The punctuation's own (DTW) time is dropped: the word keeps its times.
    assert timed(words) == [(" Hello,", 0.0, 0.4), (" world.", 0.6, 1.0)]
    assert [w.tokens for w in words] == [tokens[:2], tokens[2:]]


def test_opening_punctuation_joins_the_next_word(tokenizer: WhisperTokenizer) -> None:
    tokens = tokenizer.encode(" ( yes")
    assert tokenizer.split_to_word_tokens("en", tokens)[0] == [" (", " yes"]
    words = align_words(tokenizer, "en", tokens, alignment([0.0, 0.2, 0.6]))
    assert timed(words) == [(" ( yes", 0.2, 0.6)]
    assert words[0].tokens == tokens


def test_opening_punctuation_at_the_end_stays_a_word(tokenizer: WhisperTokenizer) -> None:
    tokens = tokenizer.encode(" Hello (")
    words = align_words(tokenizer, "en", tokens, alignment([0.0, 0.4, 0.6]))
    assert [w.word for w in words] == [" Hello", " ("]


def test_a_word_stretched_over_the_pause_after_a_sentence_is_clipped(tokenizer: WhisperTokenizer) -> None:
    tokens = tokenizer.encode(" Hi. There is")
    assert len(tokens) == 4
    # " There" starts at 0.4 on the DTW path but is said just before 3.0.
    words = align_words(tokenizer, "en", tokens, alignment([0.0, 0.2, 0.4, 3.0, 3.2]))
    # Median word duration 0.2 s: at most 0.4 s per word.
    assert timed(words) == [(" Hi.", 0.0, 0.2), (" There", 2.6, 3.0), (" is", 3.0, 3.2)]


def test_a_long_word_inside_a_sentence_is_kept(tokenizer: WhisperTokenizer) -> None:
    tokens = tokenizer.encode(" Hi there is")
    words = align_words(tokenizer, "en", tokens, alignment([0.0, 0.2, 3.0, 3.2]))
    assert timed(words) == [(" Hi", 0.0, 0.2), (" there", 0.2, 3.0), (" is", 3.0, 3.2)]


def test_median_is_capped_for_slow_speech(tokenizer: WhisperTokenizer) -> None:
    tokens = tokenizer.encode(" Hi. There is")
    # Every word lasts 1 s; the cap of 0.7 s makes 1.4 s the longest word after a sentence end.
    words = align_words(tokenizer, "en", tokens, alignment([0.0, 1.0, 2.0, 6.0, 7.0]))
    assert timed(words) == [(" Hi.", 0.0, 1.0), (" There", 4.6, 6.0), (" is", 6.0, 7.0)]


def test_no_words_without_tokens_or_alignment(tokenizer: WhisperTokenizer) -> None:
    tokens = tokenizer.encode(" Hello world")
    assert align_words(tokenizer, "en", [], alignment([0.0])) == []
    assert align_words(tokenizer, "en", tokens, Alignment(pairs=[], token_probs=[])) == []
    # A path that does not reach every token cannot time the words.
    assert align_words(tokenizer, "en", tokens, alignment([0.0, 0.5])) == []


@dataclass
class FakeSegment:
    tokens: list[int]
    start: float
    end: float
    words: list[Word] = field(default_factory=list)


def word(text: str, start: float, end: float, tokens: int) -> Word:
    return Word(text, start, end, 0.5, list(range(tokens)))


def test_assign_words_by_token_count(tokenizer: WhisperTokenizer) -> None:
    ts = tokenizer.timestamp_begin
    first = FakeSegment([ts, *tokenizer.encode(" Hello, world."), ts + 50], 0.0, 1.0)
    second = FakeSegment([ts + 50, *tokenizer.encode(" How are you?"), ts + 150], 1.0, 3.0)
    words = [
        word(" Hello,", 0.1, 0.4, 2),
        word(" world.", 0.5, 0.9, 2),
        word(" How", 1.2, 1.4, 1),
        word(" are", 1.4, 1.6, 1),
        word(" you?", 1.6, 2.5, 2),
    ]
    assign_words(tokenizer, [first, second], words)

    assert [w.word for w in first.words] == [" Hello,", " world."]
    assert [w.word for w in second.words] == [" How", " are", " you?"]
    # Segment bounds are fitted to their words.
    assert (first.start, first.end) == (0.1, 0.9)
    assert (second.start, second.end) == (1.2, 2.5)


def test_assign_words_leaves_a_segment_without_words_alone(tokenizer: WhisperTokenizer) -> None:
    ts = tokenizer.timestamp_begin
    first = FakeSegment(tokenizer.encode(" Hello"), 0.0, 1.0)
    second = FakeSegment([ts, *tokenizer.encode(" there"), ts + 10], 1.0, 2.0)
    assign_words(tokenizer, [first, second], [word(" Hello", 0.2, 0.8, 1)])
    assert [w.word for w in first.words] == [" Hello"]
    assert (second.words, second.start, second.end) == ([], 1.0, 2.0)


def test_assign_words_drops_blank_words_and_keeps_end_after_start(tokenizer: WhisperTokenizer) -> None:
    segment = FakeSegment(tokenizer.encode(" a b"), 0.0, 5.0)
    assign_words(tokenizer, [segment], [word(" a", 2.0, 2.5, 1), word(" ", 3.0, 3.0, 1)])
    assert [w.word for w in segment.words] == [" a"]
    assert (segment.start, segment.end) == (2.0, 2.5)
