"""Live turns packed into one window: which turns share one, and how the result goes back to each turn."""

from __future__ import annotations

import math
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.assets import FLITE_VOICES, multilingual_clip
from harness.speech import speech_clips
from harness.text import wer
from whisper_triton.audio import decode_audio
from whisper_triton.contract import Segment, Word
from whisper_triton.ctranslate2_engine import CTranslate2Engine
from whisper_triton.decoding import DecodeOptions, WindowResult
from whisper_triton.models import read_model_info, resolve_model
from whisper_triton.packing import GAP_S, GUESS_MIN_PROBABILITY, guess_languages, plan_packs, unpack
from whisper_triton.scheduler import QueuedWindow, decode_queued
from whisper_triton.text import WhisperTokenizer

LIVE = DecodeOptions(language="en", live=True)


def audio(seconds: float) -> np.ndarray:
    return np.full(round(seconds * 16_000), 0.01, dtype=np.float32)


def test_live_turns_that_decode_alike_share_a_window_of_at_most_30_s() -> None:
    options = [replace(LIVE, request="a", speech=((0.2, 3.0),)), replace(LIVE, request="b"),
               replace(LIVE, request="c", window=3, speech=((1.0, 2.0),)),
               replace(LIVE, request="d"), replace(LIVE, request="e")]
    payloads = [audio(4.0), audio(5.0), audio(2.5), audio(20.0), audio(9.0)]
    (first,) = plan_packs(payloads, options)  # the 20 s turn fits with none of them: it decodes alone
    assert first.members == (0, 1, 2, 4) and first.offsets == (0.0, 5.0, 11.0, 14.5)
    assert first.durations == (4.0, 5.0, 2.5, 9.0)
    assert len(first.samples) == round((4 + 5 + 2.5 + 9 + 3 * GAP_S) * 16_000)
    assert first.samples[4 * 16_000: 5 * 16_000].max() == 0.0  # digital silence between two turns
    # VAD's speech of each turn (a turn without any: all of it), in the packed window's seconds
    assert first.options.speech == ((0.2, 3.0), (5.0, 10.0), (12.0, 13.0), (14.5, 23.5))
    assert first.options.word_timestamps and first.options.language == "en" and first.options.live


def test_a_pack_of_one_is_not_made_and_turns_that_decode_differently_stay_apart() -> None:
    assert plan_packs([audio(2), audio(2)], [LIVE, replace(LIVE, language="de")]) == []
    refused = [replace(LIVE, language=None), replace(LIVE, prompt="Names: Ada."), replace(LIVE, logprobs=True),
               replace(LIVE, given=(("x", 0.0, 1.0),)), replace(LIVE, live=False), replace(LIVE, beam_size=5)]
    for other in refused:
        assert plan_packs([audio(2), audio(2)], [LIVE, other]) == [], other
    (pack,) = plan_packs([audio(2), audio(2), audio(2)], [LIVE, replace(LIVE, word_timestamps=True), LIVE])
    assert pack.members == (0, 1, 2)  # words asked by one turn only: decoded with words anyway
    # 12 + 1 + 12 + 1 + 12 > 30: the third turn starts a pack of its own, alone
    (pack,) = plan_packs([audio(12), audio(12), audio(12)], [LIVE, LIVE, LIVE])
    assert pack.members == (0, 1)


def word(text: str, start: float, end: float) -> Word:
    return Word(text, start, end, 0.9, [len(text)])


def segment(words: list[Word]) -> Segment:
    return Segment(words[0].start, words[-1].end, "".join(w.word for w in words), [w.tokens[0] for w in words],
                   0.0, -0.3, 1.1, 0.02, words)


def test_each_word_goes_back_to_the_turn_it_was_said_in_timed_in_that_turns_seconds() -> None:
    options = [replace(LIVE, request="a", window=0), replace(LIVE, request="b", window=2, word_timestamps=True),
               replace(LIVE, request="c", window=0)]
    (pack,) = plan_packs([audio(4.0), audio(3.0), audio(5.0)], options)  # at 0, 5 and 9 s
    inside = segment([word(" Press", 0.5, 0.9), word(" one.", 0.9, 1.6)])
    # A segment across the gap: the alignment starts the second turn's first word where the pause starts.
    across = segment([word(" Goodbye.", 2.0, 3.8), word(" Hold", 4.0, 5.6), word(" on.", 5.6, 6.4)])
    result = WindowResult("en", 0.97, [inside, across], resumes=1, timings={"encode": 0.5})
    first, second, third = unpack(pack, result, options)
    assert [(s.start, s.end, s.text) for s in first.segments] == [(0.5, 1.6, " Press one."), (2.0, 3.8, " Goodbye.")]
    assert [(s.start, s.end, s.text) for s in second.segments] == [(0.0, 1.4, " Hold on.")]
    assert [(w.word, w.start, w.end) for w in second.segments[0].words] == [(" Hold", 0.0, 0.6), (" on.", 0.6, 1.4)]
    assert first.segments[0].words == []  # words only where asked
    assert third.segments == [] and third.window == 0  # a turn nobody spoke in
    assert (second.window, second.language, second.language_probability, second.resumes) == (2, "en", 0.97, 1)
    assert second.segments[0].tokens == [5, 4] and second.segments[0].avg_logprob == -0.3
    assert first.timings == {"encode": 0.5} and first.timings is not result.timings


@pytest.fixture(scope="module")
def base() -> tuple[CTranslate2Engine, WhisperTokenizer]:
    path = resolve_model("base").path
    info = read_model_info(path)
    return (CTranslate2Engine(path, intra_threads=2),
            WhisperTokenizer(path / "tokenizer.json", info.multilingual, info.num_languages))


class Counting:
    """The engine, counting encoder passes (windows encoded)."""

    def __init__(self, engine: CTranslate2Engine) -> None:
        self.engine, self.encoded = engine, 0

    def encode(self, features: np.ndarray) -> Any:
        self.encoded += len(features)
        return self.engine.encode(features)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


def test_real_turns_packed_in_one_window_each_get_their_own_text(
        base: tuple[CTranslate2Engine, WhisperTokenizer]) -> None:
    engine, tokenizer = Counting(base[0]), base[1]
    clips = [c for c in speech_clips("report") if 2.0 <= c.duration <= 5.0][:4]
    assert sum(c.duration + 0.8 + GAP_S for c in clips) <= 30
    replies: list[Any] = []
    windows = []
    for n, clip in enumerate(clips):  # as live turns come: 0.3 s before the speech, 0.5 s of pause after it
        samples = np.concatenate([np.zeros(4_800, np.float32), clip.samples, np.zeros(8_000, np.float32)])
        options = replace(LIVE, request=f"turn-{n}", speech=((0.3, 0.3 + clip.duration),))
        windows.append(QueuedWindow(samples, options, replies.append))
    outcomes = decode_queued(engine, tokenizer, windows, [None] * len(windows),
                             lambda request: False)
    assert engine.encoded == 1  # one encoder pass for the four turns
    for clip, outcome in zip(clips, outcomes, strict=True):
        assert isinstance(outcome, WindowResult)
        text = "".join(s.text for s in outcome.segments)
        assert wer(clip.text, text) <= 0.2, (clip.text, text)
        assert all(0.0 <= s.start <= s.end <= 0.8 + clip.duration for s in outcome.segments)
        assert outcome.timings["batch_wall"] > 0
    # WHISPER_ENGINE_PACK_TURNS off (and any GPU engine): one encoder pass per turn
    engine.encoded = 0
    decode_queued(engine, tokenizer, windows, [None] * len(windows), lambda request: False, pack=False)
    assert engine.encoded == len(windows)


class Shapes(Counting):
    """The engine, recording the shape of each batch it encodes."""

    def __init__(self, engine: CTranslate2Engine) -> None:
        super().__init__(engine)
        self.shapes: list[tuple[int, ...]] = []

    def encode(self, features: np.ndarray) -> Any:
        self.shapes.append(features.shape)
        return super().encode(features)


def as_live_turn(samples: np.ndarray) -> np.ndarray:
    return np.concatenate([np.zeros(4_800, np.float32), samples, np.zeros(8_000, np.float32)])


def test_turns_without_a_language_pack_by_the_language_their_own_audio_says(
        base: tuple[CTranslate2Engine, WhisperTokenizer]) -> None:
    engine, tokenizer = Shapes(base[0]), base[1]
    english = [c for c in speech_clips("report") if 2.0 <= c.duration <= 5.0][:2]
    german, spanish = (multilingual_clip(language) for language in ("de", "es"))
    turns = [(as_live_turn(english[0].samples), english[0].text),
             (as_live_turn(decode_audio(german[0].read_bytes()).samples), german[1]),
             (as_live_turn(english[1].samples), english[1].text),
             (as_live_turn(decode_audio(spanish[0].read_bytes()).samples), spanish[1])]
    windows = [QueuedWindow(samples, replace(LIVE, language=None, request=f"turn-{n}"), lambda outcome: None)
               for n, (samples, _) in enumerate(turns)]
    outcomes = decode_queued(engine, tokenizer, windows, [None] * len(windows), lambda request: False)
    # One pass over the four turns' own audio (not 30 s) guesses their languages; then the two English turns
    # share a window, and the German and the Spanish one have one each (one encoder call for the three).
    longest = max(len(samples) for samples, _ in turns) / 16_000 + 1.0
    assert engine.shapes[0] == (4, engine.n_mels, 2 * math.ceil(longest * 50))
    assert engine.shapes[1:] == [(3, engine.n_mels, 3000)]
    for (_, said), outcome, language in zip(turns, outcomes, ("en", "de", "en", "es"), strict=True):
        assert isinstance(outcome, WindowResult)
        assert outcome.language == language and GUESS_MIN_PROBABILITY <= outcome.language_probability < 1.0
        text = "".join(s.text for s in outcome.segments)
        assert wer(said, text) <= 0.3, (said, text)
        assert outcome.timings["language_guess"] > 0
    # A turn alone has nothing to pack with: its language is detected in its own window, with no extra pass.
    engine.shapes.clear()
    alone = decode_queued(engine, tokenizer, windows[1:2], [None], lambda request: False)
    assert engine.shapes == [(1, engine.n_mels, 3000)]
    assert isinstance(alone[0], WindowResult) and alone[0].language == "de" and "language_guess" not in alone[0].timings


def test_turns_of_several_speakers_saying_the_same_thing_in_one_window_each_keep_it(
        base: tuple[CTranslate2Engine, WhisperTokenizer], tmp_path: Path) -> None:
    # Four people answer "Yes, I agree." at once: in one window that is the same sentence four times, which
    # in one speaker's audio is Whisper looping (cut to one copy). Across packed turns it is what was said.
    engine, tokenizer = Counting(base[0]), base[1]
    said = "Yes, I agree."
    windows = []
    for n, voice in enumerate(FLITE_VOICES):
        subprocess.run(["flite", "-voice", voice, "-t", said, "-o", tmp_path / f"{voice}.wav"], check=True)
        samples = decode_audio((tmp_path / f"{voice}.wav").read_bytes()).samples
        windows.append(QueuedWindow(as_live_turn(samples), replace(LIVE, request=f"turn-{n}"), lambda outcome: None))
    outcomes = decode_queued(engine, tokenizer, windows, [None] * len(windows), lambda request: False)
    assert engine.encoded == 1
    for outcome in outcomes:
        assert isinstance(outcome, WindowResult) and outcome.loops == 0
        assert wer(said, "".join(s.text for s in outcome.segments)) == 0.0


class Guessing:
    """A stand-in engine that only guesses languages: (language, probability) per turn, in order."""

    n_mels, is_multilingual = 80, True

    def __init__(self, guesses: list[tuple[str, float]]) -> None:
        self.guesses = guesses
        self.encoded: list[tuple[int, ...]] = []

    def encode(self, features: np.ndarray) -> Any:
        self.encoded.append(features.shape)
        return features

    def detect_language(self, encoded: Any) -> list[list[tuple[str, float]]]:
        return [[guess] for guess in self.guesses[: len(encoded)]]


def test_only_sure_guesses_of_turns_without_a_language_are_taken() -> None:
    unknown = replace(LIVE, language=None)
    options = [unknown, replace(LIVE, language="fr"), unknown, replace(unknown, prompt="Acme"), unknown]
    payloads = [audio(2.0), audio(3.0), audio(4.0), audio(2.0), audio(29.5)]
    engine = Guessing([("de", 0.93), ("es", 0.79)])
    chosen, guessed = guess_languages(engine, payloads, options)  # type: ignore[arg-type]
    # The two unknown turns that could pack are guessed together (the prompted one and the one of 29.5 s,
    # which no other turn fits beside, are not); only the sure guess is taken.
    assert engine.encoded == [(2, 80, 2 * math.ceil((4.0 + 1.0) * 50))]
    assert [o.language for o in chosen] == ["de", "fr", None, None, None] and guessed == {0: 0.93}
    assert chosen[1:] == options[1:]
    # Nothing to pack with, or an English-only model: no guess.
    assert guess_languages(engine, payloads[:1], options[:1]) == ([unknown], {})  # type: ignore[arg-type]
    engine.is_multilingual = False
    assert guess_languages(engine, payloads, options) == (options, {})  # type: ignore[arg-type]


class FailingGuess(Counting):
    """The engine, failing any encoder pass shorter than a window (the language guess)."""

    def encode(self, features: np.ndarray) -> Any:
        if features.shape[-1] < 3000:
            raise RuntimeError("no guess today")
        return super().encode(features)


def test_a_failed_guess_leaves_each_turn_to_be_detected_in_its_own_window(
        base: tuple[CTranslate2Engine, WhisperTokenizer]) -> None:
    engine, tokenizer = FailingGuess(base[0]), base[1]
    clips = [c for c in speech_clips("report") if 2.0 <= c.duration <= 5.0][:2]
    windows = [QueuedWindow(as_live_turn(clip.samples), replace(LIVE, language=None, request=f"turn-{n}"),
                            lambda outcome: None) for n, clip in enumerate(clips)]
    outcomes = decode_queued(engine, tokenizer, windows, [None] * len(windows), lambda request: False)
    assert engine.encoded == 2  # a window each
    for clip, outcome in zip(clips, outcomes, strict=True):
        assert isinstance(outcome, WindowResult) and outcome.language == "en"
        assert wer(clip.text, "".join(s.text for s in outcome.segments)) <= 0.2
