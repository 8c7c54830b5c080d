"""Text comparison for assertions on transcripts."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

import jiwer

_WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("’", "'"))


def normalize(text: str) -> str:
    return " ".join(words(text))


def wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(normalize(reference), normalize(hypothesis) or "<empty>"))


# --------------------------------------------------------------------------------------------------
# English WER as Whisper's papers compute it


@functools.cache
def _english_normalizer() -> Callable[[str], str]:
    # Imported on first use: transformers takes seconds to import and the fast tests never need it.
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    normalizer: Callable[[str], str] = EnglishTextNormalizer({})
    return normalizer


def english_normalize(text: str) -> str:
    """Whisper's English normaliser (transformers' EnglishTextNormalizer, no British-American spelling map).

    Lower case, no punctuation, numbers written and spelled alike ("Press 1." and "press one"), "Mr." and
    "mister" alike, contractions expanded, fillers (um, uh, hmm) dropped. Two fixes around it: typographic
    apostrophes become straight ones first (it would turn "feed’st" into "feed saint"), and what is left of
    punctuation alone is dropped (it turns "currently..." into "currently .", a word for jiwer).
    """
    normalized = _english_normalizer()(text.replace("’", "'").replace("‘", "'"))
    return " ".join(word for word in normalized.split() if any(c.isalnum() for c in word))


_DIGIT_WORDS = {"zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
                "seven": "7", "eight": "8", "nine": "9"}


def join_digits(normalized: str) -> str:
    """Runs of single digits as one number ("1 2 3 4" and "one 2 3 4" as "1234"): how a read-out number is
    written is a matter of style (Whisper writes an extension spoken digit by digit either way)."""
    words = normalized.split()
    digits = [_DIGIT_WORDS.get(w, w) if w in _DIGIT_WORDS else w for w in words]
    single = [len(d) == 1 and d.isdigit() for d in digits]
    out: list[str] = []
    for i, word in enumerate(words):
        run = single[i] and ((i > 0 and single[i - 1]) or (i + 1 < len(words) and single[i + 1]))
        if run and i > 0 and single[i - 1] and out:
            out[-1] += digits[i]
        else:
            out.append(digits[i] if run else word)
    return " ".join(out)


def english_errors(reference: str, hypothesis: str, digits_joined: bool = False) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words) after english_normalize (and join_digits)."""
    ref, hyp = english_normalize(reference), english_normalize(hypothesis)
    if digits_joined:
        ref, hyp = join_digits(ref), join_digits(hyp)
    if not ref:
        return len(hyp.split()), 0
    if not hyp:
        words = len(ref.split())
        return words, words
    out = jiwer.process_words(ref, hyp)
    return out.substitutions + out.deletions + out.insertions, len(ref.split())


def english_wer(reference: str, hypothesis: str) -> float:
    """Word error rate after english_normalize: 1.0 for an empty hypothesis; with a reference that normalises
    to nothing, the number of hypothesis words (0.0 when both are empty)."""
    errors, words = english_errors(reference, hypothesis)
    return errors / words if words else float(errors)
