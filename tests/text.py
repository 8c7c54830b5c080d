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


def english_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words) after english_normalize."""
    ref, hyp = english_normalize(reference), english_normalize(hypothesis)
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
