"""Batched window decoding: timestamps, languages, prompts, temperature fallback, words."""

from __future__ import annotations

import itertools
import re
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from whisper_triton.audio import decode_audio
from whisper_triton.ctranslate2_engine import CTranslate2Engine
from whisper_triton.decoding import (
    MAX_LENGTH,
    MAX_PROMPT_TOKENS,
    DecodeOptions,
    WindowJob,
    compression_ratio,
    decode_windows,
    split_timestamps,
    warm_up,
)
from whisper_triton.engine import Alignment, Generation
from whisper_triton.features import window_features
from whisper_triton.models import read_model_info, resolve_model
from whisper_triton.text import WhisperTokenizer

JFK_TEXT = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)
FRAMES_PER_TOKEN = 10  # of the fake alignment: 0.2 s per token


def load_tokenizer(name: str) -> WhisperTokenizer:
    path = resolve_model(name).path
    info = read_model_info(path)
    return WhisperTokenizer(path / "tokenizer.json", info.multilingual, info.num_languages)


@pytest.fixture(scope="module")
def english() -> WhisperTokenizer:
    return load_tokenizer("tiny.en")


@pytest.fixture(scope="module")
def multilingual() -> WhisperTokenizer:
    return load_tokenizer("base")


def ts(tokenizer: WhisperTokenizer, seconds: float) -> int:
    return tokenizer.timestamp_begin + round(seconds / 0.02)


def speech(
    tokenizer: WhisperTokenizer,
    text: str,
    avg_logprob: float = -0.2,
    no_speech_prob: float = 0.01,
    start: float = 0.0,
    end: float = 2.0,
) -> Generation:
    return Generation([ts(tokenizer, start), *tokenizer.encode(text), ts(tokenizer, end)], avg_logprob,
                      no_speech_prob)


def repetitive(tokenizer: WhisperTokenizer, avg_logprob: float = -0.1) -> Generation:
    return speech(tokenizer, " the" * 60, avg_logprob)


@dataclass
class Call:
    method: str
    items: list[int]
    prompts: list[list[int]] = field(default_factory=list)
    temperature: float | None = None
    beam_size: int | None = None
    text_tokens: list[list[int]] = field(default_factory=list)
    start_sequence: list[int] = field(default_factory=list)
    num_frames: list[int] = field(default_factory=list)
    max_length: int = 0


class FakeEngine:
    """A `WhisperEngine` whose encoded state is the list of item ids (taken from the features).

    `replies[item][temperature]` is what `generate` returns; an unexpected call raises KeyError.
    """

    n_mels = 80

    def __init__(
        self,
        replies: dict[int, dict[float, Generation]],
        multilingual: bool = False,
        detected: dict[int, list[tuple[str, float]]] | None = None,
        resumed: dict[tuple[int, int], Generation] | None = None,
    ) -> None:
        self.replies = replies
        # What a pass forced to start at a timestamp token returns: resumed[(item, that token)].
        self.resumed = resumed or {}
        self.is_multilingual = multilingual
        self.num_languages = 99 if multilingual else 1
        self.detected = detected or {}
        self.calls: list[Call] = []

    def encode(self, features: np.ndarray) -> Any:
        items = [int(f[0, 0]) for f in features]
        self.calls.append(Call("encode", items))
        return items

    def take(self, encoded: Any, indices: list[int]) -> Any:
        return [encoded[i] for i in indices]

    def join(self, parts: list[Any]) -> Any:
        return [item for part in parts for item in part]

    def detect_language(self, encoded: Any) -> list[list[tuple[str, float]]]:
        self.calls.append(Call("detect_language", list(encoded)))
        return [self.detected[item] for item in encoded]

    def generate(
        self, encoded: Any, prompts: list[list[int]], temperature: float, beam_size: int, max_length: int
    ) -> list[Generation]:
        assert len(prompts) == len(encoded)
        assert 0 < max_length <= MAX_LENGTH
        self.calls.append(Call("generate", list(encoded), prompts, temperature, beam_size, max_length=max_length))
        return [self.resumed[(item, prompt[-1])] if (item, prompt[-1]) in self.resumed else
                self.replies[item][temperature] for item, prompt in zip(encoded, prompts, strict=True)]

    def align(
        self, encoded: Any, start_sequence: list[int], text_tokens: list[list[int]], num_frames: list[int]
    ) -> list[Alignment]:
        self.calls.append(
            Call("align", list(encoded), text_tokens=text_tokens, start_sequence=start_sequence,
                 num_frames=num_frames)
        )
        # Token k (end of text included) holds frames [10k, 10k + 10): it starts at 0.2 k seconds.
        return [
            Alignment(
                pairs=[
                    (k, k * FRAMES_PER_TOKEN + f) for k in range(len(t) + 1) for f in range(FRAMES_PER_TOKEN)
                ],
                token_probs=[0.9] * (len(t) + 1),
            )
            for t in text_tokens
        ]

    def called(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]


def job(item: int, num_frames: int = 3000, **options: Any) -> WindowJob:
    features = np.zeros((FakeEngine.n_mels, 3000), dtype=np.float32)
    features[0, 0] = item
    return WindowJob(features, num_frames, DecodeOptions(**options))


def texts(result_segments: list[Any]) -> str:
    return "".join(s.text for s in result_segments)


# split_timestamps


def test_split_pairs_of_timestamps(english: WhisperTokenizer) -> None:
    hello, world = english.encode(" Hello"), english.encode(" world.")
    t = [ts(english, s) for s in (0.0, 1.0, 2.5)]
    tokens = [t[0], *hello, t[1], t[1], *world, t[2], english.eot]

    assert split_timestamps(english, tokens, 30.0) == [
        (0.0, 1.0, [t[0], *hello, t[1]]),
        (1.0, 2.5, [t[1], *world, t[2]]),
    ]


def test_split_single_timestamp_between_segments(english: WhisperTokenizer) -> None:
    hello, world = english.encode(" Hello"), english.encode(" world.")
    t = [ts(english, s) for s in (0.4, 1.0, 2.5)]
    pieces = split_timestamps(english, [t[0], *hello, t[1], *world, t[2]], 30.0)
    assert [(start, end) for start, end, _ in pieces] == [(0.4, 1.0), (1.0, 2.5)]


def test_split_trailing_text_runs_to_the_window_end(english: WhisperTokenizer) -> None:
    hello, world = english.encode(" Hello"), english.encode(" world")
    t = [ts(english, s) for s in (0.0, 1.0)]
    pieces = split_timestamps(english, [t[0], *hello, t[1], t[1], *world], 7.5)
    assert pieces[-1] == (1.0, 7.5, [t[1], *world])
    assert len(pieces) == 2


def test_split_without_timestamps_is_one_segment_over_the_window(english: WhisperTokenizer) -> None:
    hello = english.encode(" Hello world.")
    assert split_timestamps(english, [*hello, english.eot], 3.2) == [(0.0, 3.2, hello)]


def test_split_clamps_times_to_the_audio(english: WhisperTokenizer) -> None:
    hello, world = english.encode(" Hello"), english.encode(" world")
    tokens = [ts(english, 8.0), *hello, ts(english, 12.0), ts(english, 12.0), *world, ts(english, 14.0)]
    pieces = split_timestamps(english, tokens, 10.0)
    assert [(start, end) for start, end, _ in pieces] == [(8.0, 10.0), (10.0, 10.0)]


def test_split_drops_segments_of_timestamps_only(english: WhisperTokenizer) -> None:
    hello = english.encode(" Hello")
    t = [ts(english, s) for s in (0.0, 1.0, 2.0, 3.0)]
    assert split_timestamps(english, [t[0], t[1], t[1], t[2]], 30.0) == []
    assert split_timestamps(english, [t[0], t[1], t[1], *hello, t[2], t[3]], 30.0) == [
        (1.0, 2.0, [t[1], *hello, t[2]])
    ]
    assert split_timestamps(english, [english.eot], 30.0) == []


# compression_ratio


def test_compression_ratio() -> None:
    sentence = "And so my fellow Americans, ask not what your country can do for you."
    assert compression_ratio("") == 0.0
    data = sentence.encode()
    assert compression_ratio(sentence) == len(data) / len(zlib.compress(data))
    assert compression_ratio(sentence) < 2.4
    assert compression_ratio(" the" * 60) > 2.4


# decode_windows with a fake engine


def test_no_jobs_touch_no_engine(english: WhisperTokenizer) -> None:
    engine = FakeEngine({})
    assert decode_windows(engine, english, []) == []
    assert engine.calls == []


def test_languages_are_detected_only_where_none_was_given(multilingual: WhisperTokenizer) -> None:
    replies = {i: {0.0: speech(multilingual, f" Text {i}.")} for i in range(3)}
    detected = {0: [("de", 0.8), ("en", 0.1)], 2: [("es", 0.7), ("pt", 0.2)]}
    engine = FakeEngine(replies, multilingual=True, detected=detected)

    results = decode_windows(engine, multilingual, [job(0), job(1, language="fr"), job(2)])

    assert [c.items for c in engine.called("detect_language")] == [[0, 2]]
    assert [(r.language, r.language_probability) for r in results] == [("de", 0.8), ("fr", 1.0), ("es", 0.7)]
    (generate,) = engine.called("generate")
    assert generate.prompts == [
        multilingual.sot_sequence("de", "transcribe"),
        multilingual.sot_sequence("fr", "transcribe"),
        multilingual.sot_sequence("es", "transcribe"),
    ]
    assert [texts(r.segments) for r in results] == [" Text 0.", " Text 1.", " Text 2."]


def test_language_detection_of_a_whole_batch(multilingual: WhisperTokenizer) -> None:
    replies = {i: {0.0: speech(multilingual, " Hallo.")} for i in range(2)}
    engine = FakeEngine(replies, multilingual=True, detected={0: [("de", 0.9)], 1: [("nl", 0.6)]})
    results = decode_windows(engine, multilingual, [job(0, task="translate"), job(1)])

    assert [c.items for c in engine.called("detect_language")] == [[0, 1]]
    assert engine.called("generate")[0].prompts == [
        multilingual.sot_sequence("de", "translate"),
        multilingual.sot_sequence("nl", "transcribe"),
    ]
    assert [r.language for r in results] == ["de", "nl"]


def test_no_language_detection_when_every_job_names_its_language(multilingual: WhisperTokenizer) -> None:
    engine = FakeEngine({0: {0.0: speech(multilingual, " Bonjour.")}}, multilingual=True)
    (result,) = decode_windows(engine, multilingual, [job(0, language="fr")])
    assert engine.called("detect_language") == []
    assert result.language == "fr"


def test_english_only_engine_never_detects_languages(english: WhisperTokenizer) -> None:
    engine = FakeEngine({0: {0.0: speech(english, " Hello.")}, 1: {0.0: speech(english, " Hi.")}})
    results = decode_windows(engine, english, [job(0), job(1, language="en")])

    assert engine.called("detect_language") == []
    assert [(r.language, r.language_probability) for r in results] == [("en", 1.0), ("en", 1.0)]
    assert engine.called("generate")[0].prompts == [english.sot_sequence("en", "transcribe")] * 2


def test_prompt_goes_before_the_start_of_transcript(multilingual: WhisperTokenizer) -> None:
    replies = {i: {0.0: speech(multilingual, " Kubernetes.")} for i in range(3)}
    engine = FakeEngine(replies, multilingual=True)
    jobs = [
        job(0, language="en", prompt="  Kubernetes and gRPC. "),
        job(1, language="en", prompt="   "),
        job(2, language="en", prompt=" ".join(f"word{i}" for i in range(400))),
    ]
    decode_windows(engine, multilingual, jobs)

    sot = multilingual.sot_sequence("en", "transcribe")
    calls = engine.called("generate")
    # CTranslate2 refuses a batch whose items have <|startoftranscript|> at different positions.
    assert all(len({len(prompt) for prompt in call.prompts}) == 1 for call in calls)
    prompts = [prompt for call in calls for prompt in call.prompts]
    assert [multilingual.sot_prev, *multilingual.encode(" Kubernetes and gRPC."), *sot] in prompts
    assert sot in prompts
    long_prompt = multilingual.encode(" " + " ".join(f"word{i}" for i in range(400)))
    expected = [multilingual.sot_prev, *long_prompt[-MAX_PROMPT_TOKENS:], *sot]
    assert expected in prompts
    assert multilingual.decode(expected[1:-len(sot)]).endswith("word399")


def test_failed_generations_fall_back_to_the_next_temperature(english: WhisperTokenizer) -> None:
    replies = {
        0: {0.0: speech(english, " Good at once.")},
        1: {0.0: repetitive(english), 0.2: speech(english, " Good at 0.2.")},
        2: {
            0.0: speech(english, " Unsure.", avg_logprob=-1.5),
            0.2: speech(english, " Still unsure.", avg_logprob=-1.2),
            0.4: speech(english, " Good at 0.4.", avg_logprob=-0.5),
        },
    }
    engine = FakeEngine(replies)
    results = decode_windows(engine, english, [job(0), job(1), job(2)])

    generate = engine.called("generate")
    assert [(c.temperature, c.items) for c in generate] == [(0.0, [0, 1, 2]), (0.2, [1, 2]), (0.4, [2])]
    assert [texts(r.segments) for r in results] == [" Good at once.", " Good at 0.2.", " Good at 0.4."]
    assert [r.segments[0].temperature for r in results] == [0.0, 0.2, 0.4]
    assert results[2].segments[0].avg_logprob == -0.5


def test_when_every_temperature_fails_the_best_readable_attempt_is_kept(english: WhisperTokenizer) -> None:
    replies = {
        0: {
            0.0: repetitive(english, avg_logprob=-0.1),  # most probable, but a loop
            0.5: speech(english, " Worse.", avg_logprob=-1.5),
            1.0: speech(english, " Best readable.", avg_logprob=-1.2),
        },
        1: {0.0: repetitive(english, -0.9), 0.5: repetitive(english, -0.3), 1.0: repetitive(english, -0.6)},
    }
    engine = FakeEngine(replies)
    temperatures = (0.0, 0.5, 1.0)
    results = decode_windows(engine, english, [job(i, temperatures=temperatures) for i in (0, 1)])

    assert [c.temperature for c in engine.called("generate")] == [0.0, 0.5, 1.0]
    assert texts(results[0].segments) == " Best readable."
    assert results[0].segments[0].temperature == 1.0
    # Nothing readable: the most probable attempt.
    assert results[1].segments[0].temperature == 0.5
    assert results[1].segments[0].compression_ratio > 2.4


def test_a_job_with_a_single_temperature_never_falls_back(english: WhisperTokenizer) -> None:
    engine = FakeEngine({0: {0.7: repetitive(english)}})
    (result,) = decode_windows(engine, english, [job(0, temperatures=(0.7,))])
    assert len(engine.called("generate")) == 1
    assert result.segments[0].temperature == 0.7


def test_silent_window_gives_no_segments_and_no_fallback(english: WhisperTokenizer) -> None:
    replies = {
        0: {0.0: speech(english, " Thank you.", avg_logprob=-1.3, no_speech_prob=0.9)},
        # Probably silent but decoded with confidence: Whisper keeps the text.
        1: {0.0: speech(english, " Quiet words.", avg_logprob=-0.3, no_speech_prob=0.9)},
    }
    engine = FakeEngine(replies)
    results = decode_windows(engine, english, [job(i, word_timestamps=True) for i in (0, 1)])

    assert [(c.temperature, c.items) for c in engine.called("generate")] == [(0.0, [0, 1])]
    assert results[0].segments == []
    assert texts(results[1].segments) == " Quiet words."
    assert [c.items for c in engine.called("align")] == [[1]]


def test_low_confidence_speech_is_not_silence(english: WhisperTokenizer) -> None:
    # no_speech_prob under the threshold: a low log-probability means fallback, not silence.
    replies = {0: {0.0: speech(english, " Mumble.", -1.4, 0.5), 0.2: speech(english, " Clear.", -0.4, 0.5)}}
    engine = FakeEngine(replies)
    (result,) = decode_windows(engine, english, [job(0)])
    assert texts(result.segments) == " Clear."


def test_segments_carry_scores_and_times_clamped_to_the_audio(english: WhisperTokenizer) -> None:
    generation = Generation(
        [ts(english, 0.0), *english.encode(" One."), ts(english, 1.0), ts(english, 1.0),
         *english.encode(" Two."), ts(english, 2.0)],
        avg_logprob=-0.25,
        no_speech_prob=0.05,
    )
    engine = FakeEngine({0: {0.0: generation}})
    (result,) = decode_windows(engine, english, [job(0, num_frames=150)])  # 1.5 s of audio

    assert [(s.start, s.end, s.text) for s in result.segments] == [(0.0, 1.0, " One."), (1.0, 1.5, " Two.")]
    first = result.segments[0]
    assert (first.temperature, first.avg_logprob, first.no_speech_prob) == (0.0, -0.25, 0.05)
    assert first.compression_ratio == compression_ratio(" One. Two.")
    assert first.words == []


def test_beam_size_of_a_batch_is_the_largest_asked(english: WhisperTokenizer) -> None:
    engine = FakeEngine({i: {0.0: speech(english, " Hi.")} for i in range(2)})
    decode_windows(engine, english, [job(0, beam_size=5), job(1)])
    assert [c.beam_size for c in engine.called("generate")] == [5]


def test_words_are_aligned_only_for_jobs_that_ask(english: WhisperTokenizer) -> None:
    replies = {i: {0.0: speech(english, " Hello big world.", end=3.0)} for i in range(3)}
    engine = FakeEngine(replies)
    jobs = [job(0, word_timestamps=True), job(1), job(2, word_timestamps=True, num_frames=2000)]
    results = decode_windows(engine, english, jobs)

    (align,) = engine.called("align")
    assert align.items == [0, 2]
    assert align.text_tokens == [english.encode(" Hello big world.")] * 2
    assert align.start_sequence == english.sot_sequence("en", "transcribe")
    assert align.num_frames == [3000, 2000]
    assert results[1].segments[0].words == []
    for result in (results[0], results[2]):
        (segment,) = result.segments
        assert [w.word for w in segment.words] == [" Hello", " big", " world."]
        assert [(w.start, w.end) for w in segment.words] == [(0.0, 0.2), (0.2, 0.4), (0.4, 0.6)]
        # The segment is fitted to its words.
        assert (segment.start, segment.end) == (0.0, 0.6)


def test_words_are_aligned_per_language(multilingual: WhisperTokenizer) -> None:
    replies = {0: {0.0: speech(multilingual, " Hello.")}, 1: {0.0: speech(multilingual, " Bonjour.")}}
    engine = FakeEngine(replies, multilingual=True, detected={1: [("fr", 0.9)]})
    jobs = [job(0, language="en", word_timestamps=True), job(1, word_timestamps=True)]
    results = decode_windows(engine, multilingual, jobs)

    aligns = engine.called("align")
    assert sorted((c.items[0], c.start_sequence) for c in aligns) == [
        (0, multilingual.sot_sequence("en", "transcribe")),
        (1, multilingual.sot_sequence("fr", "transcribe")),
    ]
    assert [[w.word for w in r.segments[0].words] for r in results] == [[" Hello."], [" Bonjour."]]


def test_fallback_keeps_prompts_with_their_windows_whatever_the_order(english: WhisperTokenizer) -> None:
    replies = {
        0: {0.5: repetitive(english), 0.2: speech(english, " Zero.")},
        1: {0.0: repetitive(english), 0.2: speech(english, " One.")},
    }
    engine = FakeEngine(replies)
    jobs = [job(0, temperatures=(0.5, 0.2)), job(1, temperatures=(0.0, 0.2))]
    results = decode_windows(engine, english, jobs)
    assert [texts(r.segments) for r in results] == [" Zero.", " One."]


# decode_windows with the real CTranslate2 engine


def jfk_samples() -> np.ndarray:
    from harness.assets import jfk_wav

    return decode_audio(jfk_wav().read_bytes()).samples


def normalized(text: str) -> str:
    return " ".join(re.sub(r"[^a-z ]", " ", text.lower()).split())


@pytest.fixture(scope="module")
def tiny_en() -> CTranslate2Engine:
    return CTranslate2Engine(resolve_model("tiny.en").path, intra_threads=4)


def test_real_engine_transcribes_jfk_with_words(
    english: WhisperTokenizer, tiny_en: CTranslate2Engine
) -> None:
    samples = jfk_samples()
    features, num_frames = window_features(samples, tiny_en.n_mels)
    jobs = [
        WindowJob(features, num_frames, DecodeOptions()),
        WindowJob(features, num_frames, DecodeOptions(word_timestamps=True)),
    ]
    plain, timed = decode_windows(tiny_en, english, jobs)

    for result in (plain, timed):
        assert result.language == "en"
        assert normalized(texts(result.segments)) == normalized(JFK_TEXT)
        assert all(0.0 <= s.start <= s.end <= num_frames / 100 for s in result.segments)
    assert all(s.words == [] for s in plain.segments)

    words = [w for s in timed.segments for w in s.words]
    assert normalized("".join(w.word for w in words)) == normalized(JFK_TEXT)
    for segment in timed.segments:
        assert segment.words
        assert all(segment.start <= w.start <= w.end <= segment.end for w in segment.words)
    starts = [w.start for w in words]
    assert starts == sorted(starts)
    assert all(a.end <= b.start + 1e-6 for a, b in itertools.pairwise(words))
    country = [w for w in words if normalized(w.word) == "country"]
    assert len(country) == 2
    assert country[-1].end > 9.0


def test_warm_up_runs_every_engine_path(english: WhisperTokenizer, tiny_en: CTranslate2Engine) -> None:
    called: list[str] = []

    class Recording:
        def __getattr__(self, name: str) -> Any:
            value = getattr(tiny_en, name)
            if callable(value):
                def record(*args: Any, **kwargs: Any) -> Any:
                    called.append(name)
                    return value(*args, **kwargs)
                return record
            return value

    warm_up(Recording(), english)  # type: ignore[arg-type]
    assert {"encode", "generate", "align"} <= set(called)


# Decoding on where Whisper stopped early (same encoder output)


def test_a_window_that_stops_early_is_decoded_on_from_its_last_timestamp(english: WhisperTokenizer) -> None:
    first = speech(english, " First part.", start=0.0, end=10.0)
    second = Generation([*english.encode(" Second part."), ts(english, 20.0), english.eot], -0.2, 0.01)
    nothing = Generation([english.eot], -0.5, 0.01)
    engine = FakeEngine({0: {0.0: first}}, resumed={(0, ts(english, 10.0)): second, (0, ts(english, 20.0)): nothing})
    (result,) = decode_windows(engine, english, [job(0, num_frames=2800, speech=((0.5, 27.0),), prompt="Hi.")])
    assert [(s.start, s.end, s.text) for s in result.segments] == [(0.0, 10.0, " First part."),
                                                                  (10.0, 20.0, " Second part.")]
    assert result.resumes == 2  # the second resume found nothing more: done
    assert len(engine.called("encode")) == 1  # no second encoding
    # A first pass may use the whole length; a resume only what the rest of the window can hold, so that
    # a pass caught in a repetition loop stops early (18 s left: 180 tokens and 8 more, after the prompt).
    budgets = [call.max_length for call in engine.called("generate")]
    resume_prompt = len(engine.called("generate")[1].prompts[0])
    assert budgets[:2] == [MAX_LENGTH, resume_prompt + 188]
    prompts = [call.prompts[0] for call in engine.called("generate")]
    assert prompts[0] == [english.sot_prev, *english.encode(" Hi."), *english.sot_sequence("en", "transcribe")]
    text_so_far = [t for t in first.tokens if t < english.eot]
    assert prompts[1] == [english.sot_prev, *english.encode(" Hi."), *text_so_far,
                          *english.sot_sequence("en", "transcribe"), ts(english, 10.0)]
    assert prompts[2][-1] == ts(english, 20.0)


def test_no_resume_without_speech_after_the_last_timestamp(english: WhisperTokenizer) -> None:
    engine = FakeEngine({0: {0.0: speech(english, " All of it.", start=0.0, end=10.0)}})
    # VAD found speech only before 10.2 s (0.2 s after the last timestamp is under the minimum).
    (result,) = decode_windows(engine, english, [job(0, num_frames=2800, speech=((0.5, 10.2),))])
    assert result.resumes == 0 and len(engine.called("generate")) == 1


def test_no_resume_near_the_end_of_the_audio_or_without_vad(english: WhisperTokenizer) -> None:
    engine = FakeEngine({0: {0.0: speech(english, " All of it.", start=0.0, end=10.0)}})
    decode_windows(engine, english, [job(0, num_frames=1050, speech=((0.5, 10.5),))])  # 0.5 s of audio left
    decode_windows(engine, english, [job(0, num_frames=2800)])  # no VAD spans: never
    assert len(engine.called("generate")) == 2


def test_a_cancelled_window_is_not_decoded_on(english: WhisperTokenizer) -> None:
    engine = FakeEngine({0: {0.0: speech(english, " First part.", start=0.0, end=10.0)}})
    (result,) = decode_windows(engine, english, [job(0, num_frames=2800, speech=((0.5, 27.0),))],
                               cancelled=lambda job: True)
    assert result.resumes == 0 and len(engine.called("generate")) == 1


def test_a_resumed_pass_never_goes_back_before_its_start(english: WhisperTokenizer) -> None:
    first = speech(english, " First.", start=0.0, end=10.0)
    backwards = Generation([*english.encode(" Again."), ts(english, 4.0), english.eot], -0.2, 0.01)
    engine = FakeEngine({0: {0.0: first}}, resumed={(0, ts(english, 10.0)): backwards})
    (result,) = decode_windows(engine, english, [job(0, num_frames=2800, speech=((0.5, 27.0),))])
    assert all(s.start >= 10.0 and s.end >= s.start for s in result.segments[1:])


# One language per request


class Ticket:
    def __init__(self, detector: bool, board: dict[str, tuple[str, float] | None]) -> None:
        self.detector, self.board = detector, board

    def publish(self, language: tuple[str, float] | None) -> None:
        self.board["language"] = language

    def wait(self) -> tuple[str, float] | None:
        return self.board.get("language")


def test_a_request_detects_its_language_once_for_all_its_windows(multilingual: WhisperTokenizer) -> None:
    board: dict[str, tuple[str, float] | None] = {}
    engine = FakeEngine({i: {0.0: speech(multilingual, " Salut.")} for i in range(3)}, multilingual=True,
                        detected={0: [("fr", 0.8)], 1: [("de", 0.9)], 2: [("es", 0.9)]})
    tickets = [Ticket(False, board), Ticket(True, board), None]
    results = decode_windows(engine, multilingual, [job(1), job(0), job(2)], tickets)  # type: ignore[arg-type]
    assert [c.items for c in engine.called("detect_language")] == [[0], [2]]  # the detector, then the loner
    assert [r.language for r in results] == ["fr", "fr", "es"]
    assert board["language"] == ("fr", 0.8)


def test_when_the_detector_failed_a_waiter_detects_its_own(multilingual: WhisperTokenizer) -> None:
    board: dict[str, tuple[str, float] | None] = {"language": None}
    engine = FakeEngine({0: {0.0: speech(multilingual, " Hallo.")}}, multilingual=True, detected={0: [("de", 0.9)]})
    (result,) = decode_windows(engine, multilingual, [job(0)], [Ticket(False, board)])  # type: ignore[list-item]
    assert result.language == "de"


def test_timings_cover_the_stages_of_the_batch(english: WhisperTokenizer) -> None:
    engine = FakeEngine({0: {0.0: speech(english, " One.")}, 1: {0.0: speech(english, " Two.")}})
    results = decode_windows(engine, english, [job(0), job(1)])
    for result in results:
        assert {"encode", "language", "decode", "batch"} <= set(result.timings)
        assert result.timings["batch"] == 2


def test_a_resumed_pass_whose_text_runs_to_the_end_is_kept_and_ends_the_window(english: WhisperTokenizer) -> None:
    first = speech(english, " First part.", start=0.0, end=10.0)
    # What base does: it repeats the forced timestamp, then transcribes to the end without closing.
    tail = Generation([ts(english, 10.0), *english.encode(" The rest."), english.eot], -0.2, 0.01)
    engine = FakeEngine({0: {0.0: first}}, resumed={(0, ts(english, 10.0)): tail})
    (result,) = decode_windows(engine, english, [job(0, num_frames=2800, speech=((0.5, 27.0),))])
    assert [(s.start, s.end, s.text) for s in result.segments] == [(0.0, 10.0, " First part."),
                                                                  (10.0, 28.0, " The rest.")]
    assert result.resumes == 1 and len(engine.called("generate")) == 2


def test_a_detector_is_encoded_and_detected_before_the_rest_of_its_batch(multilingual: WhisperTokenizer) -> None:
    """Windows of its request in other batches wait for its language: they should not wait for a whole batch."""
    board: dict[str, tuple[str, float] | None] = {}
    engine = FakeEngine({i: {0.0: speech(multilingual, " Hola.")} for i in range(4)}, multilingual=True,
                        detected={2: [("es", 0.9)]})
    tickets = [None, None, Ticket(True, board), None]
    jobs = [job(i, language="es" if i != 2 else None) for i in range(4)]
    results = decode_windows(engine, multilingual, jobs, tickets)  # type: ignore[arg-type]
    assert [(c.method, c.items) for c in engine.calls[:3]] == [("encode", [2]), ("detect_language", [2]),
                                                               ("encode", [0, 1, 3])]
    assert [r.language for r in results] == ["es"] * 4 and board["language"] == ("es", 0.9)
    assert [r.segments[0].text for r in results] == [" Hola."] * 4


def test_a_resumed_pass_that_only_repeats_the_end_is_dropped(english: WhisperTokenizer) -> None:
    first = speech(english, " Then press the pound key.", start=0.0, end=25.0)
    again = Generation([ts(english, 25.0), *english.encode(" the pound key"), ts(english, 27.0), english.eot],
                       -0.3, 0.01)
    engine = FakeEngine({0: {0.0: first}}, resumed={(0, ts(english, 25.0)): again})
    (result,) = decode_windows(engine, english, [job(0, num_frames=3000, speech=((0.5, 28.0),))])
    assert [s.text for s in result.segments] == [" Then press the pound key."]
    assert result.resumes == 1  # and no further pass from 27 s


def test_repeats() -> None:
    from whisper_triton.decoding import repeats

    assert repeats("After the tone, press the pound key.", " the pound key")
    assert repeats("Press the pound key.", "Pound key!")
    assert not repeats("Press the pound key.", " Goodbye.")
    assert not repeats("Press the pound key.", " the pound key to continue")
    assert not repeats("Press the pound key.", "")


# Repetition loops (whisper_triton.loops)

NEW_ONE = " We need to find a new one."  # tiny.en wrote it three times in a row


def test_a_pass_that_loops_falls_back_though_it_compresses_well(english: WhisperTokenizer) -> None:
    looping = speech(english, NEW_ONE * 3 + " Then we left.")
    assert compression_ratio(NEW_ONE * 3 + " Then we left.") < 2.4  # OpenAI's checks let it through
    replies = {0: {0.0: looping, 0.2: speech(english, NEW_ONE + " Then we left.")}}
    engine = FakeEngine(replies)
    (result,) = decode_windows(engine, english, [job(0)])
    assert [c.temperature for c in engine.called("generate")] == [0.0, 0.2]
    assert texts(result.segments) == NEW_ONE + " Then we left."
    assert (result.looping_passes, result.loops) == (1, 0)

    engine = FakeEngine(replies)  # the check off: Whisper's text as it came
    (result,) = decode_windows(engine, english, [job(0, loop_check=False)])
    assert [c.temperature for c in engine.called("generate")] == [0.0]
    assert texts(result.segments) == NEW_ONE * 3 + " Then we left."
    assert (result.looping_passes, result.loops) == (0, 0)


def test_speech_that_repeats_does_not_fall_back(english: WhisperTokenizer) -> None:
    engine = FakeEngine({0: {0.0: speech(english, " No, no, no, no. Bye bye. Thank you. Thank you. Thank you.")}})
    (result,) = decode_windows(engine, english, [job(0)])
    assert len(engine.called("generate")) == 1 and result.looping_passes == 0 and result.loops == 0


def test_when_every_temperature_loops_the_least_looping_is_kept_with_one_copy(english: WhisperTokenizer) -> None:
    replies = {0: {
        0.0: speech(english, NEW_ONE * 4 + " Then.", avg_logprob=-0.1),  # most probable: loops most
        0.5: speech(english, NEW_ONE * 3 + " Then.", avg_logprob=-0.6),
        1.0: speech(english, " Then" + NEW_ONE * 4, avg_logprob=-0.3),
    }}
    engine = FakeEngine(replies)
    (result,) = decode_windows(engine, english, [job(0, temperatures=(0.0, 0.5, 1.0))])
    assert [c.temperature for c in engine.called("generate")] == [0.0, 0.5, 1.0]
    (segment,) = result.segments
    assert segment.temperature == 0.5 and segment.text == NEW_ONE + " Then."
    assert segment.tokens == [ts(english, 0.0), *english.encode(NEW_ONE + " Then."), ts(english, 2.0)]
    assert (result.looping_passes, result.loops) == (3, 1)


def test_segments_that_repeat_are_dropped_and_words_align_to_what_is_kept(english: WhisperTokenizer) -> None:
    pieces = [(0.0, 2.0, NEW_ONE), (2.0, 4.0, NEW_ONE), (4.0, 6.0, NEW_ONE), (6.0, 7.0, " Bye.")]
    tokens = [t for start, end, text in pieces for t in (ts(english, start), *english.encode(text), ts(english, end))]
    engine = FakeEngine({0: {0.0: Generation(tokens, -0.2, 0.01)}})
    (result,) = decode_windows(engine, english, [job(0, temperatures=(0.0,), word_timestamps=True)])
    assert [s.text for s in result.segments] == [NEW_ONE, " Bye."]
    assert result.loops == 1 and result.looping_passes == 1
    (align,) = engine.called("align")
    assert align.text_tokens == [english.encode(NEW_ONE) + english.encode(" Bye.")]
    assert "".join(w.word for s in result.segments for w in s.words) == NEW_ONE + " Bye."
