"""Repetition loops (whisper_triton.loops) and segments invented over silence (whisper_triton.hallucinations)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from whisper_triton.decoding import Segment
from whisper_triton.hallucinations import (
    invented_in_silence,
    is_anomalous,
    says_again,
    silence_after,
    silence_before,
    speech_seconds,
    word_anomaly,
)
from whisper_triton.loops import collapse, find_loops, keys, repeats_end, required_copies, units
from whisper_triton.words import Word

NEW_ONE = " We need to find a new one."


def loops_in(*texts: str) -> list[tuple[int, int]]:
    """(period, copies) of each loop found in `texts` searched together."""
    return [(loop.period, loop.copies) for loop in find_loops(units(texts))]


# Found


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        ((NEW_ONE * 3,), [(7, 3)]),  # tiny.en's: compression ratio 2.1, confident
        ((" So." + NEW_ONE * 3 + " And then we left.",), [(7, 3)]),
        ((NEW_ONE, NEW_ONE, NEW_ONE), [(7, 3)]),  # one segment each
        ((" Thank you very much.",) * 3, [(4, 3)]),  # whole sentences of 3+ words, three times
        ((" the" * 8,), [(1, 8)]),
        ((" and the the the the the the the cat",), [(1, 7)]),
        ((" I'm sorry," * 4,), [(2, 4)]),
        ((" This is a rather long sentence that someone said only once here." * 2,), [(12, 2)]),
        ((" 2.0-2.0-2.0-2.0-2.0-2.0-2.0-2.0",), [(1, 8)]),  # no spaces: hyphens part units
        (("我们需要找一个新的。" * 3,), [(9, 3)]),  # CJK: a unit per character
        ((" Whiff, whiff, whiff, whiff, whiff, whiff, whiff, whiffy Heart",), [(1, 7)]),
    ],
)
def test_loops_are_found(texts: tuple[str, ...], expected: list[tuple[int, int]]) -> None:
    assert loops_in(*texts) == expected


@pytest.mark.parametrize(
    "text",
    [
        " No, no, no, no.",
        " very very good",
        " Bye bye.",
        " ha ha ha ha ha",
        " la la la la la",
        " Thank you. Thank you. Thank you.",  # short sentences: people say them so
        " Yes. Yes. Yes.",
        " apples, oranges, apples, pears, apples, oranges",
        " He said it again and again and again.",
        " New York, New York.",
        " I think that that is right.",
        " here's some more words words words words um",  # from the tune corpus's unscripted talk
        " ask not what your country can do for you, ask what you can do for your country.",
        " 1, 2, 3, 4, 5, 6, 7, 8, 9, 10",
        " We need to find a new one. We need to find a new one.",  # a 7-word sentence twice: maybe said so
        "哈哈哈哈哈",
        "",
    ],
)
def test_speech_that_repeats_is_no_loop(text: str) -> None:
    assert loops_in(text) == []


def test_copies_needed_by_phrase_length() -> None:
    assert [required_copies(n, False) for n in (1, 2, 6, 7, 9, 10, 30)] == [6, 4, 4, 3, 3, 2, 2]
    assert [required_copies(n, True) for n in (1, 2, 3, 6)] == [6, 4, 3, 3]
    assert required_copies(4.5, True) == 3  # nine CJK characters: four and a half words


def test_units_compare_without_case_or_punctuation_and_know_sentence_ends() -> None:
    found = units([" Hello, World! How (are) you", " Fine"])
    assert [u.key for u in found] == ["hello", "world", "how", "are", "you", "fine"]
    assert [u.boundary for u in found] == [False, True, False, False, True, True]  # "!", the text's end
    assert [u.piece for u in found] == [0, 0, 0, 0, 0, 1]
    assert keys("Press 1 — now.") == ["press", "1", "now"]
    assert [u.boundary for u in units(["好的。谢谢"])] == [False, True, False, True]


def test_the_longest_loop_wins_where_loops_overlap() -> None:
    # "ha ha" four times is "ha" eight times: one loop of period 1.
    assert loops_in(" ha" * 8) == [(1, 8)]
    assert loops_in(" yes no" * 4 + " maybe" * 6) == [(2, 4), (1, 6)]


class _CountedKey(str):
    """A unit's key that counts how often it is compared."""

    compared = 0

    def __eq__(self, other: object) -> bool:
        _CountedKey.compared += 1
        return str.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        _CountedKey.compared += 1
        return str.__ne__(self, other)

    __hash__ = str.__hash__


def test_a_window_of_text_is_searched_in_one_pass_per_period() -> None:
    # Every period up to 200 has long runs in 400 words that repeat every 37: a search that rescans each
    # run from every start (cubic) would compare tens of millions of times; one pass per period is at most
    # two comparisons per unit and period. Counted, not timed: a shared CI machine's clock proves nothing.
    text = " ".join(f"w{i % 37}" for i in range(400))
    found = [dataclasses.replace(unit, key=_CountedKey(unit.key)) for unit in units([text])]
    _CountedKey.compared = 0
    assert [(loop.first, loop.period, loop.stop) for loop in find_loops(found)] == [(0, 37, 400)]
    assert 0 < _CountedKey.compared <= 2 * len(found) * (len(found) // 2)


# Collapsed


def test_a_repeated_sentence_is_cut_to_one_copy() -> None:
    assert collapse([NEW_ONE * 3])[0] == [NEW_ONE]
    assert collapse([" So." + NEW_ONE * 3 + " And then we left."])[0] == [" So." + NEW_ONE + " And then we left."]


def test_segments_that_only_repeat_are_emptied() -> None:
    texts, loops = collapse([NEW_ONE, NEW_ONE, NEW_ONE, " Bye."])
    assert texts == [NEW_ONE, " ", " ", " Bye."] and len(loops) == 1
    assert [u.key for u in units(texts)] == [*keys(NEW_ONE), "bye"]


def test_the_last_copys_punctuation_ends_the_kept_one() -> None:
    assert collapse([" I'm sorry, I'm sorry, I'm sorry, I'm sorry."])[0] == [" I'm sorry."]
    assert collapse([" Whiff, whiff, whiff, whiff, whiff, whiff, whiff, whiffy Heart"])[0] == [" Whiff, whiffy Heart"]
    assert collapse([" 2.0-2.0-2.0-2.0-2.0-2.0-2.0-2.0 ok"])[0] == [" 2.0 ok"]


def test_a_copy_cut_off_at_the_end_of_the_text_goes_too() -> None:
    # The decoder ran into its token budget in the middle of another copy.
    assert collapse([NEW_ONE * 3 + " We need to"])[0] == [NEW_ONE]
    # Inside the text, a partial copy may be the start of what was said next: it stays.
    assert collapse([NEW_ONE * 3 + " We need to go."])[0] == [NEW_ONE + " We need to go."]


def test_a_loop_across_segments_is_cut_in_each() -> None:
    texts, _ = collapse([" the the the", " the the the the", " cat"])
    assert texts == [" the", " ", " cat"]


def test_text_without_loops_is_returned_as_it_is() -> None:
    texts = [" No, no, no, no.", " very very good"]
    assert collapse(texts) == (texts, [])


def test_repeats_end() -> None:
    assert repeats_end(" I see. We need to find a new one.", NEW_ONE)
    assert repeats_end(NEW_ONE, " a new one!")
    assert not repeats_end(NEW_ONE, " We need to")
    assert not repeats_end(" one.", NEW_ONE)
    assert not repeats_end(NEW_ONE, " ")


# Invented over silence


def word(text: str, start: float, end: float, probability: float = 0.9) -> Word:
    return Word(text, start, end, probability, [1])


def with_words(*words: Word) -> Segment:
    return Segment(words[0].start, words[-1].end, "".join(w.word for w in words), [1], 0.0, -0.3, 1.2, 0.1,
                   list(words))


def test_word_anomaly_is_faster_whispers() -> None:
    assert word_anomaly(word(" hi", 0.0, 0.5)) == 0.0
    assert word_anomaly(word(" hi", 0.0, 0.5, 0.1)) == 1.0
    assert word_anomaly(word(" hi", 0.0, 0.033)) == pytest.approx(1.5)
    assert word_anomaly(word(" hi", 0.0, 3.0)) == pytest.approx(1.0)


def test_a_segment_is_anomalous_when_its_first_words_score_high() -> None:
    assert is_anomalous([word(" Thank", 0.0, 0.3, 0.05), word(" you.", 0.3, 0.6, 0.1)])
    assert not is_anomalous([word(" Thank", 0.0, 0.3, 0.05), word(" you.", 0.3, 0.6, 0.9)])
    improbable = [word(f" w{i}", i, i + 0.3, 0.05) for i in range(3)]
    assert is_anomalous(improbable + [word(" fine", 4, 4.3)] * 5)  # 3 of 8: enough
    assert not is_anomalous([word(" ,", 0.0, 0.01)])  # punctuation is no word
    assert not is_anomalous([])


SPEECH = ((0.0, 5.0), (12.0, 12.4), (20.0, 25.0))


def test_silence_around_a_time() -> None:
    assert silence_before(10.0, SPEECH) == 5.0 and silence_after(10.0, SPEECH) == 2.0
    assert silence_before(3.0, SPEECH) == 0.0 and silence_after(3.0, SPEECH) == 0.0
    assert silence_after(26.0, SPEECH) == math.inf and silence_before(-1.0, SPEECH) == math.inf
    assert speech_seconds(4.0, 13.0, SPEECH) == pytest.approx(1.4)


def test_an_anomalous_segment_over_a_blip_in_long_silence_is_invented() -> None:
    # VAD took a cough at 12.0-12.4 for speech; Whisper wrote a doubtful "Thank you." over it.
    thanks = with_words(word(" Thank", 11.8, 12.1, 0.05), word(" you.", 12.1, 13.0, 0.1))
    assert invented_in_silence(thanks, SPEECH, 2.0)
    assert not invented_in_silence(thanks, SPEECH, 0.0)  # off
    assert not invented_in_silence(thanks, SPEECH, 7.5)  # speech 7 s after it
    confident = with_words(word(" Thank", 11.8, 12.1, 0.9), word(" you.", 12.1, 13.0, 0.8))
    assert not invented_in_silence(confident, SPEECH, 2.0)
    # Its words mostly in speech: what VAD heard is what Whisper wrote, however doubtful.
    heard = with_words(word(" Thank", 12.0, 12.2, 0.05), word(" you.", 12.2, 12.4, 0.1))
    assert not invented_in_silence(heard, SPEECH, 2.0)
    # Right after speech: not surrounded by silence (faster-whisper keeps it too).
    trailing = with_words(word(" Thank", 5.2, 5.5, 0.05), word(" you.", 5.5, 6.0, 0.1))
    assert not invented_in_silence(trailing, SPEECH, 2.0)
    without_words = Segment(11.8, 13.0, " Thank you.", [1], 0.0, -0.3, 1.2, 0.1)
    assert not invented_in_silence(without_words, SPEECH, 2.0)


def test_a_window_that_starts_by_saying_the_previous_ones_end_again() -> None:
    previous = (30.0, " So we stopped. We need to find a new one.")
    assert says_again(previous, 30.2, 32.0, NEW_ONE, None)  # right after it
    assert says_again(previous, 30.2, 31.0, " to find a new one!", None)
    assert not says_again(previous, 35.0, 37.0, NEW_ONE, None)  # later, and no VAD to ask
    assert says_again(previous, 35.0, 37.0, NEW_ONE, [(36.5, 40.0)])  # later, mostly outside speech
    assert not says_again(previous, 35.0, 37.0, NEW_ONE, [(34.0, 40.0)])  # said again: speech
    assert not says_again(previous, 30.2, 31.0, " one.", None)  # one word again is speech ("... yes." "Yes.")
    assert not says_again(previous, 30.2, 32.0, " We need to go.", None)
    assert says_again((30.0, " Yes."), 30.2, 30.5, " Yes.", None)  # the whole of a short segment


def test_a_segment_with_more_words_than_its_time_could_hold_is_invented() -> None:
    from whisper_triton.decoding import Segment
    from whisper_triton.hallucinations import too_fast

    def segment(start: float, end: float, text: str) -> Segment:
        return Segment(start, end, text, [], 0.0, -0.3, 1.2, 0.1)

    # The benchmark's case: a 12-word sentence between two equal timestamps.
    assert too_fast(segment(53.4, 53.4, " The first thing you need to do is to press the button."))
    assert too_fast(segment(1.0, 1.5, " one two three four five six"))  # 12 words a second
    assert not too_fast(segment(1.0, 2.0, " one two three four five six"))  # 6 a second: a fast speaker
    assert not too_fast(segment(2.0, 2.0, " Yes."))  # too few words to tell
    assert not too_fast(segment(2.0, 2.1, " Okay, no."))
