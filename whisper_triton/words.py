"""Word timestamps from a token-to-frame alignment (cross-attention DTW), engine independent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from whisper_triton.contract import Word
from whisper_triton.engine import Alignment

if TYPE_CHECKING:
    from whisper_triton.text import WhisperTokenizer

ENCODER_FRAMES_PER_SECOND = 50  # encoder positions: 20 ms each
PREPEND_PUNCTUATION = "\"'“¿([{-"
APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"


class _HasTokens(Protocol):
    tokens: list[int]
    words: list[Word]
    start: float
    end: float


def align_words(
    tokenizer: WhisperTokenizer, language: str, text_tokens: list[int], alignment: Alignment
) -> list[Word]:
    """Words of `text_tokens` with start and end times (seconds into the window)."""
    if not text_tokens or not alignment.pairs:
        return []
    names, word_tokens = tokenizer.split_to_word_tokens(language, [*text_tokens, tokenizer.eot])
    if len(word_tokens) <= 1:
        return []
    boundaries = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    text_index = np.array([p[0] for p in alignment.pairs])
    time_index = np.array([p[1] for p in alignment.pairs])
    # The first frame of each new token on the DTW path is where that token starts.
    jumps = np.pad(np.diff(text_index), (1, 0), constant_values=1).astype(bool)
    jump_times = time_index[jumps] / ENCODER_FRAMES_PER_SECOND
    if len(jump_times) <= boundaries[-1]:
        return []
    probs = np.asarray(alignment.token_probs, dtype=np.float64)
    words = [
        Word(
            word=name,
            start=float(jump_times[a]),
            end=float(jump_times[b]),
            probability=float(np.mean(probs[a:b])) if b > a and len(probs) >= b else 0.0,
            tokens=tokens,
        )
        for name, tokens, a, b in zip(names, word_tokens, boundaries[:-1], boundaries[1:], strict=False)
    ]
    _limit_long_words(words)
    return _merge_punctuation(words)


def _limit_long_words(words: list[Word]) -> None:
    """DTW tends to stretch a word over a following pause at sentence ends: clip such words."""
    durations = np.array([w.end - w.start for w in words])
    durations = durations[durations.nonzero()]
    median = float(np.median(durations)) if len(durations) else 0.0
    median = min(0.7, median)
    max_duration = median * 2
    if not max_duration:
        return
    sentence_end = {".", "。", "!", "！", "?", "？"}
    for i, word in enumerate(words):
        if word.end - word.start <= max_duration:
            continue
        if word.word.strip() in sentence_end:
            word.end = word.start + max_duration
        elif i == 0 or words[i - 1].word.strip() in sentence_end:
            # The path reaches the first word across the pause before it (leading silence, a new
            # sentence): its sound is at the end.
            word.start = max(word.start, word.end - max_duration)


def _merge_punctuation(words: list[Word]) -> list[Word]:
    """Attaches opening punctuation to the next word and closing punctuation to the previous."""
    merged: list[Word] = []
    prefix: Word | None = None
    for word in words:
        if prefix is not None:
            word = Word(prefix.word + word.word, word.start, word.end, word.probability,
                        prefix.tokens + word.tokens)
            prefix = None
        stripped = word.word.strip()
        if stripped and word.word.startswith(" ") and stripped in PREPEND_PUNCTUATION:
            prefix = word
        elif merged and word.word and word.word in APPEND_PUNCTUATION and not merged[-1].word.endswith(" "):
            previous = merged[-1]
            merged[-1] = Word(previous.word + word.word, previous.start, previous.end,
                              previous.probability, previous.tokens + word.tokens)
        else:
            merged.append(word)
    if prefix is not None:
        merged.append(prefix)
    return merged


def assign_words(tokenizer: WhisperTokenizer, segments: Sequence[_HasTokens], words: list[Word]) -> None:
    """Hands the window's words to its segments by token count, and fits segment bounds to them."""
    queue = list(words)
    for segment in segments:
        remaining = sum(1 for t in segment.tokens if t < tokenizer.eot)
        taken: list[Word] = []
        while queue and remaining > 0:
            word = queue.pop(0)
            taken.append(word)
            remaining -= len(word.tokens)
        segment.words = [w for w in taken if w.word.strip()]
        if segment.words:
            segment.start = segment.words[0].start
            segment.end = max(segment.words[-1].end, segment.start)
