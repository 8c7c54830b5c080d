"""Segments Whisper invented over silence, and windows that begin by saying the previous one's end again.

faster-whisper's `hallucination_silence_threshold` (after openai-whisper's) works on word timestamps: a word
is anomalous when improbable (probability < 0.15), very short (< 0.133 s) or very long (> 2 s); a segment
whose first 8 words score 3 or more, or about one per word, may be invented, and it is skipped when silence
longer than the threshold lies before and after it. Its silence is the time between Whisper's own word
timings, which stretch over pauses. Here silence is where Silero VAD found no speech in the window:

- a segment is dropped when it is anomalous, less than half of its words' time is VAD speech, and no VAD
  speech lies within the threshold before its first word nor after its last (the window's edges, cut in
  silence, count as silence): a "Thank you." over a cough that VAD took for speech goes, a quiet answer
  between pauses stays unless Whisper itself doubted its words;
- only where words are known (word timestamps or diarization asked): without them, a segment's times are
  Whisper's timestamp tokens, which often stretch over the pause before it, and its scores are the whole
  window's, so nothing tells a lone short answer in a long silence from an invention. Those segments get
  the coarser gate of `windows.meets_speech` (more than 0.5 s away from all speech) only.

Windows are decoded apart, so one cannot loop into the next, but the first segment of a window sometimes
says the last words of the previous window again (audio near the cut heard twice, or an invention in the
window's leading silence): it is dropped when it starts within REPEAT_GAP_S of them, or lies mostly
outside VAD speech.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from whisper_triton.decoding import Segment
from whisper_triton.loops import SENTENCE_WORDS, keys, repeats_end, units
from whisper_triton.words import Word

IMPROBABLE = 0.15  # a word this probable or less is anomalous (faster-whisper's values throughout)
SHORT_WORD_S = 0.133
LONG_WORD_S = 2.0
SCORED_WORDS = 8  # a segment's first words that are scored
ANOMALOUS_SCORE = 3.0
REPEAT_GAP_S = 0.5

Speech = Sequence[tuple[float, float]]


def word_anomaly(word: Word) -> float:
    """How unlike a spoken word `word` is: 1 when improbable, plus more the shorter or longer it is."""
    duration = word.end - word.start
    score = 1.0 if word.probability < IMPROBABLE else 0.0
    if duration < SHORT_WORD_S:
        score += (SHORT_WORD_S - duration) * 15
    if duration > LONG_WORD_S:
        score += duration - LONG_WORD_S
    return score


def is_anomalous(words: Sequence[Word]) -> bool:
    """Whether a segment's words look invented (punctuation alone is no word)."""
    scored = [w for w in words if units([w.word])][:SCORED_WORDS]
    if not scored:
        return False
    score = sum(word_anomaly(w) for w in scored)
    return score >= ANOMALOUS_SCORE or score + 0.01 >= len(scored)


def speech_seconds(start: float, end: float, speech: Speech) -> float:
    """Seconds of [start, end] that VAD found speech in."""
    return sum(max(0.0, min(end, e) - max(start, s)) for s, e in speech)


def silence_before(time: float, speech: Speech) -> float:
    """Seconds without VAD speech right before `time` (infinite when none comes before it in the window)."""
    ends = [min(e, time) for s, e in speech if s < time]
    return time - max(ends) if ends else math.inf


def silence_after(time: float, speech: Speech) -> float:
    """Seconds without VAD speech right after `time` (infinite when none follows it in the window)."""
    starts = [max(s, time) for s, e in speech if e > time]
    return min(starts) - time if starts else math.inf


def invented_in_silence(segment: Segment, speech: Speech, threshold: float) -> bool:
    """Whether a segment with words is an anomalous one, mostly outside VAD speech, with at least
    `threshold` seconds of VAD silence before and after it (window seconds throughout)."""
    words = [w for w in segment.words if w.end > w.start]
    if threshold <= 0 or not words or not is_anomalous(segment.words):
        return False
    spoken = sum(speech_seconds(w.start, w.end, speech) for w in words)
    if spoken >= 0.5 * sum(w.end - w.start for w in words):
        return False
    return silence_before(words[0].start, speech) >= threshold and silence_after(words[-1].end, speech) >= threshold


# Faster than anyone speaks: auctioneers and rap reach 6-7 words a second. A segment of at least
# FAST_MIN_UNITS words (CJK characters count as units) given less than 1 / FAST_UNITS_PER_SECOND seconds
# each was not heard but invented: Whisper writes such text between two equal or adjacent timestamps, in a
# pause at the end of a window or a resume (a 12-word sentence at 53.4-53.4 s of a benchmark clip).
FAST_UNITS_PER_SECOND = 10.0
FAST_MIN_UNITS = 3


def too_fast(segment: Segment) -> bool:
    """Whether a segment holds more words than its time could: invented, whatever VAD says."""
    count = len(units([segment.text]))
    return count >= FAST_MIN_UNITS and segment.end - segment.start < count / FAST_UNITS_PER_SECOND


def says_again(previous: tuple[float, str], start: float, end: float, text: str, speech: Speech | None) -> bool:
    """Whether a window's first segment ([start, end], absolute seconds) only says the end of the previous
    window's last segment (`previous`: its absolute end and text) again, where it cannot have been said
    twice: right after it, or (`speech`: VAD's, in the same seconds) mostly outside speech. The whole
    segment again, or at least its last SENTENCE_WORDS words: one word again ("... yes." "Yes.") is speech."""
    last_end, last_text = previous
    if not repeats_end(last_text, text) or len(keys(text)) < min(SENTENCE_WORDS, len(keys(last_text))):
        return False
    if start < last_end + REPEAT_GAP_S:
        return True
    return speech is not None and speech_seconds(start, end, speech) < 0.5 * (end - start)
