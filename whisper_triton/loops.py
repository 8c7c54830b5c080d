"""Repetition loops in Whisper's output: found, and collapsed to one copy.

Whisper's decoder can fall into a loop: once it has written a phrase, writing it again becomes the most
probable continuation, and it goes on until the window or the token budget ends. OpenAI's checks catch
long loops only: a gzip compression ratio of the whole window's text over 2.4, or an average log-probability
under -1. A sentence written three times among other text ("We need to find a new one." three times in a
row, from tiny.en) compresses below 2.4 and is decoded with confidence, so it passes both.

Here the text is cut into units (words; one each for CJK characters and kana, as those scripts write no
spaces), compared without case or punctuation. A phrase repeated back to back is a loop when its copies are
many for its length (`required_copies`): people say "no, no", "very very", "bye bye", "ha ha ha", but not a
sentence three times in a row, nor a long phrase twice.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

LONG_PHRASE_WORDS = 10  # a phrase this long, twice in a row, is a loop
SENTENCE_WORDS = 3  # a sentence (or a whole segment) of this many words, three times in a row, is a loop
PHRASE_WORDS = 7  # a phrase of this many words, three times in a row (sentence or not), is a loop
WORD_COPIES = 6  # one word this many times in a row ("the the the ..."); fewer is speech ("no, no, no, no")
PHRASE_COPIES = 4  # a phrase of 2-6 words this many times in a row ("I'm sorry, I'm sorry, ...")
CJK_WEIGHT = 0.5  # words per CJK character or kana: a phrase's length is counted in words
SENTENCE_END = ".!?。！？…"
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# Hyphens and slashes part units too: loops like "2.0-2.0-2.0-..." write no spaces.
_UNIT = re.compile(f"[{_CJK}]|[^\\s{_CJK}\\-–—/]+")
_IS_CJK = re.compile(f"[{_CJK}]")


@dataclass(frozen=True)
class Unit:
    """A word (or CJK character) of one of the texts searched together (a window's segments)."""

    key: str  # lower case, punctuation removed: what copies are compared on
    piece: int  # the text it is in
    start: int  # its characters in that text: [start, end)
    end: int
    weight: float  # in words
    boundary: bool  # ends a sentence, or its text


@dataclass(frozen=True)
class Loop:
    """Units [first, first + period) are the kept copy; [first + period, stop) repeat it."""

    first: int
    period: int
    copies: int  # whole copies back to back, the kept one included
    stop: int  # the end of the copies, or of all the units when the loop runs to the end (a cut-off copy)

    @property
    def extra(self) -> int:
        """Units dropped when the loop is collapsed."""
        return self.stop - self.first - self.period


def _key(word: str) -> str:
    return "".join(c for c in word.lower() if not unicodedata.category(c).startswith("P"))


def units(texts: Sequence[str]) -> list[Unit]:
    """The units of `texts`, in order; punctuation alone is no unit."""
    found: list[Unit] = []
    for piece, text in enumerate(texts):
        first = len(found)
        for match in _UNIT.finditer(text):
            key = _key(match.group())
            if not key:
                continue
            weight = CJK_WEIGHT if _IS_CJK.fullmatch(match.group()) else 1.0
            boundary = _ends_sentence(text, match.end())
            found.append(Unit(key, piece, match.start(), match.end(), weight, boundary))
        if len(found) > first:
            last = found[-1]
            found[-1] = Unit(last.key, last.piece, last.start, last.end, last.weight, True)
    return found


def _ends_sentence(text: str, end: int) -> bool:
    """Whether a sentence ends with the unit that ends at `end`: sentence punctuation in the punctuation
    at its end or right after it (CJK writes "。" apart from the character before it)."""
    start = end
    while start > 0 and unicodedata.category(text[start - 1]).startswith("P"):
        start -= 1
    while end < len(text) and unicodedata.category(text[end]).startswith("P"):
        end += 1
    return any(c in SENTENCE_END for c in text[start:end])


def keys(text: str) -> list[str]:
    """The units of one text as compared: "We need" -> ["we", "need"]."""
    return [unit.key for unit in units([text])]


def required_copies(words: float, sentences: bool) -> int:
    """How many copies back to back make a phrase of `words` words a loop (`sentences`: each copy is a
    whole sentence or segment)."""
    if words >= LONG_PHRASE_WORDS:
        return 2
    if words >= PHRASE_WORDS or (sentences and words >= SENTENCE_WORDS):
        return 3
    return PHRASE_COPIES if words > 1 else WORD_COPIES


def find_loops(found: Sequence[Unit]) -> list[Loop]:
    """The loops among `found`, without overlaps; where loops overlap, the one that repeats most units.

    For each period p, runs of units equal to the unit p further on are the stretches that repeat a phrase
    of p units: one pass per period, so a window's few hundred words take a few milliseconds.
    """
    names = [unit.key for unit in found]
    count = len(names)
    candidates: list[Loop] = []
    for period in range(1, count // 2 + 1):
        j = 0
        while j + period < count:
            if names[j] != names[j + period]:
                j += 1
                continue
            k = j
            while k + period < count and names[k] == names[k + period]:
                k += 1
            if (k - j) >= period:  # at least two whole copies
                loop = _judge(found, j, k + period, period)
                if loop is not None:
                    candidates.append(loop)
            j = k + 1
    chosen: list[Loop] = []
    for loop in sorted(candidates, key=lambda c: (-c.extra, c.period, c.first)):
        if all(loop.stop <= other.first or other.stop <= loop.first for other in chosen):
            chosen.append(loop)
    return sorted(chosen, key=lambda c: c.first)


def _judge(found: Sequence[Unit], start: int, stop: int, period: int) -> Loop | None:
    """The loop in units [start, stop), which repeat with `period`, if its copies are enough.

    The kept copy starts where the copies are whole sentences, when they are (so that collapsing keeps
    "We need to find a new one." rather than "need to find a new one. We").
    """
    words = sum(unit.weight for unit in found[start : start + period])
    first, sentences = start, 0
    for phase in range(start, start + period):
        whole = 0
        while phase + (whole + 1) * period <= stop and found[phase + (whole + 1) * period - 1].boundary:
            whole += 1
        if whole > sentences:
            first, sentences = phase, whole
    if sentences < 2:
        first = start
    copies = (stop - first) // period
    if copies < required_copies(words, False) and sentences < required_copies(words, True):
        return None
    end = stop if stop == len(found) else first + copies * period
    return Loop(first, period, copies, end)


def collapse(texts: Sequence[str]) -> tuple[list[str], list[Loop]]:
    """`texts` with every loop cut to one copy (a text may become empty), and the loops found.

    A cut copy's final punctuation moves onto the kept copy ("Sorry, sorry, ... sorry." -> "Sorry.").
    """
    found = units(texts)
    loops = find_loops(found)
    if not loops:
        return list(texts), []
    dropped = [False] * len(found)
    for loop in loops:
        for i in range(loop.first + loop.period, loop.stop):
            dropped[i] = True
    cuts: list[list[tuple[int, int]]] = [[] for _ in texts]
    i = 0
    while i < len(found):
        if not dropped[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(found) and dropped[j + 1] and found[j + 1].piece == found[i].piece:
            j += 1
        cuts[found[i].piece].append(_cut(texts[found[i].piece], found, i, j))
        i = j + 1
    result = []
    for text, spans in zip(texts, cuts, strict=True):
        for begin, end in reversed(spans):
            text = text[:begin] + text[end:]
        result.append(text)
    return result, loops


def _cut(text: str, found: Sequence[Unit], first: int, last: int) -> tuple[int, int]:
    """The characters to remove for units first..last of one text."""
    piece = found[first].piece
    before = found[first - 1] if first > 0 and found[first - 1].piece == piece else None
    after = found[last + 1] if last + 1 < len(found) and found[last + 1].piece == piece else None
    if before is None:  # the text starts with the copies: keep what follows them
        return found[first].start, after.start if after is not None else len(text)
    # Cut from the end of the kept word to the end of the last copy; the last copy's punctuation, if it
    # has any, takes the place of the kept word's.
    closing = _trailing_punctuation(text[found[last].start : found[last].end])
    if not closing:
        return before.end, found[last].end
    return before.end - _trailing_punctuation(text[before.start : before.end]), found[last].end - closing


def _trailing_punctuation(word: str) -> int:
    n = 0
    while n < len(word) and unicodedata.category(word[-1 - n]).startswith("P"):
        n += 1
    return n


def repeats_end(before: str, after: str) -> bool:
    """Whether `after` is the end of `before` again (all of it, or its last words)."""
    old, new = keys(before), keys(after)
    return bool(new) and len(new) <= len(old) and old[-len(new) :] == new
