"""Batched decoding of 30 s windows on any `WhisperEngine`.

One call takes the windows of many requests at once (the engine model's dynamic batch): it
encodes them once, detects languages where none was given, decodes with temperature fallback,
splits the tokens into timestamped segments and, when asked, aligns words. Times are relative to
each window; the caller adds the window offset.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from whisper_triton.engine import Generation, WhisperEngine
from whisper_triton.text import WhisperTokenizer
from whisper_triton.words import Word, align_words, assign_words

MAX_LENGTH = 448
MAX_PROMPT_TOKENS = MAX_LENGTH // 2 - 1
FRAMES_PER_SECOND = 100  # log-mel frames (hop of 10 ms)
MIN_RESUME_SECONDS = 1.0


@dataclass(frozen=True)
class DecodeOptions:
    task: str = "transcribe"
    language: str | None = None
    prompt: str | None = None
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    word_timestamps: bool = False
    # False: text only (<|notimestamps|>), one segment per window: less to decode, for answers that show
    # no times (OpenAI's json and text); the window cannot be resumed where Whisper stopped early.
    timestamps: bool = True
    beam_size: int = 1
    compression_ratio_threshold: float = 2.4
    log_prob_threshold: float = -1.0
    no_speech_threshold: float = 0.6
    # Forced alignment: the window's known segments (text, start, end in window seconds) get word
    # timings instead of being transcribed.
    given: tuple[tuple[str, float, float], ...] | None = None


@dataclass(frozen=True)
class WindowJob:
    features: np.ndarray  # (n_mels, 3000) float32
    num_frames: int  # frames holding audio, the rest is padding
    options: DecodeOptions


@dataclass
class Segment:
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    words: list[Word] = field(default_factory=list)


@dataclass
class WindowResult:
    language: str
    language_probability: float
    segments: list[Segment]
    # Seconds into the window where decoding stopped with speech left (Whisper opened a segment it
    # would continue in the next 30 s): the caller decodes the rest of the window from here.
    resume_at: float | None = None


@dataclass
class _Attempt:
    generation: Generation
    temperature: float
    compression_ratio: float


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def decode_each(
    engine: WhisperEngine, tokenizer: WhisperTokenizer, jobs: list[WindowJob]
) -> list[WindowResult | Exception]:
    """`decode_windows`, with a failure kept to the window that causes it.

    The windows of a batch come from many requests; when the batch fails, its windows are decoded
    again one at a time, so one bad window (or one the engine cannot handle) fails alone.
    """
    try:
        return list(decode_windows(engine, tokenizer, jobs))
    except Exception as exc:
        if len(jobs) == 1:
            return [exc]
    outcomes: list[WindowResult | Exception] = []
    for job in jobs:
        try:
            outcomes.extend(decode_windows(engine, tokenizer, [job]))
        except Exception as exc:
            outcomes.append(exc)
    return outcomes


def decode_windows(
    engine: WhisperEngine, tokenizer: WhisperTokenizer, jobs: list[WindowJob]
) -> list[WindowResult]:
    if not jobs:
        return []
    encoded = engine.encode(np.stack([job.features for job in jobs]))
    languages = _languages(engine, encoded, jobs)
    aligning = [i for i, job in enumerate(jobs) if job.options.given is not None]
    if not aligning:
        return _transcribe(engine, tokenizer, encoded, jobs, languages)
    results: list[WindowResult | None] = [None] * len(jobs)
    decoding = [i for i in range(len(jobs)) if i not in aligning]
    for indices, run in ((decoding, _transcribe), (aligning, _align_given)):
        if indices:
            sub = run(engine, tokenizer, _subset(engine, encoded, indices, len(jobs)), [jobs[i] for i in indices],
                      [languages[i] for i in indices])
            for i, result in zip(indices, sub, strict=True):
                results[i] = result
    return [result for result in results if result is not None]


def _transcribe(
    engine: WhisperEngine,
    tokenizer: WhisperTokenizer,
    encoded: Any,
    jobs: list[WindowJob],
    languages: list[tuple[str, float]],
) -> list[WindowResult]:
    prompts = [
        _prompt(tokenizer, job.options, language) for job, (language, _) in zip(jobs, languages, strict=True)
    ]
    attempts = _decode_with_fallback(engine, tokenizer, encoded, jobs, prompts)
    results = []
    for job, (language, probability), attempt in zip(jobs, languages, attempts, strict=True):
        segments = _segments(tokenizer, job, attempt)
        resume_at = None if not segments else unfinished_from(tokenizer, attempt.generation.tokens, job.num_frames)
        results.append(WindowResult(language, probability, segments, resume_at))
    _add_words(engine, tokenizer, encoded, jobs, results)
    return results


def _align_given(
    engine: WhisperEngine,
    tokenizer: WhisperTokenizer,
    encoded: Any,
    jobs: list[WindowJob],
    languages: list[tuple[str, float]],
) -> list[WindowResult]:
    """Word timings for known text: each given segment is tokenized and aligned, nothing generated."""
    results = []
    for job, (language, probability) in zip(jobs, languages, strict=True):
        segments = []
        for text, start, end in job.options.given or ():
            clean = " " + text.strip()
            tokens = tokenizer.encode(clean)
            segments.append(Segment(start=start, end=end, text=clean, tokens=tokens, temperature=0.0,
                                    avg_logprob=0.0, compression_ratio=compression_ratio(clean), no_speech_prob=0.0))
        results.append(WindowResult(language, probability, segments))
    _add_words(engine, tokenizer, encoded, jobs, results)
    return results


def _subset(engine: WhisperEngine, encoded: Any, indices: list[int], total: int) -> Any:
    """The encoded state of `indices`, in that order (the whole batch only when it is in order)."""
    return encoded if indices == list(range(total)) else engine.take(encoded, indices)


def _languages(engine: WhisperEngine, encoded: Any, jobs: list[WindowJob]) -> list[tuple[str, float]]:
    languages: list[tuple[str, float]] = [
        (job.options.language or "en", 1.0) for job in jobs
    ]
    if not engine.is_multilingual:
        return [("en", 1.0)] * len(jobs)
    unknown = [i for i, job in enumerate(jobs) if job.options.language is None]
    if unknown:
        subset = _subset(engine, encoded, unknown, len(jobs))
        for i, ranking in zip(unknown, engine.detect_language(subset), strict=True):
            languages[i] = ranking[0]
    return languages


def _prompt(tokenizer: WhisperTokenizer, options: DecodeOptions, language: str) -> list[int]:
    prompt: list[int] = []
    if options.prompt and options.prompt.strip():
        previous = tokenizer.encode(" " + options.prompt.strip())[-MAX_PROMPT_TOKENS:]
        prompt = [tokenizer.sot_prev, *previous]
    prompt += tokenizer.sot_sequence(language, options.task)
    return prompt if options.timestamps else [*prompt, tokenizer.no_timestamps]


def _decode_with_fallback(
    engine: WhisperEngine,
    tokenizer: WhisperTokenizer,
    encoded: Any,
    jobs: list[WindowJob],
    prompts: list[list[int]],
) -> list[_Attempt]:
    tried: list[list[_Attempt]] = [[] for _ in jobs]
    final: list[_Attempt | None] = [None] * len(jobs)
    pending = list(range(len(jobs)))
    step = 0
    while pending:
        # One generate call per temperature and prompt length: CTranslate2 needs <|startoftranscript|> at
        # the same position in every item of a batch, so a window with a prompt and one without (two
        # requests batched together) cannot share a call.
        groups: dict[tuple[float, int], list[int]] = defaultdict(list)
        for i in pending:
            groups[(jobs[i].options.temperatures[step], len(prompts[i]))].append(i)
        pending = []
        for (temperature, _), indices in sorted(groups.items()):
            subset = _subset(engine, encoded, indices, len(jobs))
            beam = max(jobs[i].options.beam_size for i in indices)
            generations = engine.generate(
                subset,
                [prompts[i] for i in indices],
                temperature=temperature,
                beam_size=beam,
                max_length=MAX_LENGTH,
            )
            for i, generation in zip(indices, generations, strict=True):
                text = tokenizer.decode(generation.tokens)
                attempt = _Attempt(generation, temperature, compression_ratio(text))
                tried[i].append(attempt)
                if not _needs_fallback(attempt, jobs[i].options):
                    final[i] = attempt
                elif step + 1 >= len(jobs[i].options.temperatures):
                    final[i] = _best(tried[i], jobs[i].options)
                else:
                    pending.append(i)
        step += 1
    return [attempt for attempt in final if attempt is not None]


def _needs_fallback(attempt: _Attempt, options: DecodeOptions) -> bool:
    generation = attempt.generation
    if _is_silence(attempt, options):
        return False  # silence: low confidence is expected, sampling would only hallucinate
    return (
        attempt.compression_ratio > options.compression_ratio_threshold
        or generation.avg_logprob < options.log_prob_threshold
    )


def _is_silence(attempt: _Attempt, options: DecodeOptions) -> bool:
    return (
        attempt.generation.no_speech_prob > options.no_speech_threshold
        and attempt.generation.avg_logprob < options.log_prob_threshold
    )


def _best(attempts: list[_Attempt], options: DecodeOptions) -> _Attempt:
    """When every temperature failed: the most probable attempt that is not repetitive."""
    readable = [a for a in attempts if a.compression_ratio <= options.compression_ratio_threshold]
    return max(readable or attempts, key=lambda a: a.generation.avg_logprob)


def _segments(tokenizer: WhisperTokenizer, job: WindowJob, attempt: _Attempt) -> list[Segment]:
    if _is_silence(attempt, job.options):
        return []
    generation = attempt.generation
    duration = job.num_frames / FRAMES_PER_SECOND
    segments = []
    for start, end, tokens in split_timestamps(tokenizer, generation.tokens, duration):
        text = tokenizer.decode(tokens)
        if not text.strip():
            continue
        segments.append(
            Segment(
                start=start,
                end=end,
                text=text,
                tokens=tokens,
                temperature=attempt.temperature,
                avg_logprob=generation.avg_logprob,
                compression_ratio=attempt.compression_ratio,
                no_speech_prob=generation.no_speech_prob,
            )
        )
    return segments


def split_timestamps(
    tokenizer: WhisperTokenizer, tokens: list[int], duration: float
) -> list[tuple[float, float, list[int]]]:
    """Splits generated tokens at timestamp tokens into (start, end, tokens) within the window.

    Consecutive timestamp tokens close one segment and open the next; trailing text without a
    closing timestamp runs to the end of the window's audio.
    """
    begin = tokenizer.timestamp_begin
    tokens = [t for t in tokens if t != tokenizer.eot]

    def time(token: int) -> float:
        return min(round((token - begin) * 0.02, 3), duration)

    pieces: list[tuple[float, float, list[int]]] = []
    current: list[int] = []
    start: float | None = None
    last_time = 0.0
    for token in tokens:
        if token >= begin:
            if start is None:
                start = time(token)
                current.append(token)
                continue
            current.append(token)
            if any(t < begin for t in current):
                pieces.append((start, max(start, time(token)), current))
            current, start = [], None
            last_time = time(token)
            continue
        if start is None:
            start = last_time
        current.append(token)
    if current and any(t < begin for t in current):
        first = start if start is not None else last_time
        pieces.append((first, max(first, duration), current))
    return pieces


def unfinished_from(tokenizer: WhisperTokenizer, tokens: list[int], num_frames: int) -> float | None:
    """Where the audio Whisper did not transcribe starts: the last timestamp, when it is well before the
    end of the window's audio; None when the output reaches the end.

    Output ending in two timestamps closes a segment and opens one that got no text (OpenAI's Whisper
    seeks there); output ending in one timestamp closed its last segment, and the model may still have
    stopped early (base often ends a window after its first sentence). The caller checks that the rest
    holds speech before decoding it (`Transcriber`), so silence after the last segment costs nothing.
    """
    begin = tokenizer.timestamp_begin
    tokens = [t for t in tokens if t != tokenizer.eot]
    if len(tokens) < 2 or tokens[-1] < begin:
        return None
    closed = tokens[-2] if tokens[-2] >= begin else tokens[-1]
    closed_at = (closed - begin) * 0.02
    if num_frames / FRAMES_PER_SECOND - closed_at < MIN_RESUME_SECONDS:
        return None
    return round(closed_at, 3)


def _add_words(
    engine: WhisperEngine,
    tokenizer: WhisperTokenizer,
    encoded: Any,
    jobs: list[WindowJob],
    results: list[WindowResult],
) -> None:
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, (job, result) in enumerate(zip(jobs, results, strict=True)):
        if job.options.word_timestamps and result.segments:
            groups[(result.language, job.options.task)].append(i)
    for (language, task), indices in groups.items():
        subset = _subset(engine, encoded, indices, len(jobs))
        text_tokens = [
            [t for s in results[i].segments for t in s.tokens if t < tokenizer.eot] for i in indices
        ]
        alignments = engine.align(
            subset,
            tokenizer.sot_sequence(language, task),
            text_tokens,
            [jobs[i].num_frames for i in indices],
        )
        for i, tokens, alignment in zip(indices, text_tokens, alignments, strict=True):
            words = align_words(tokenizer, language, tokens, alignment)
            assign_words(tokenizer, results[i].segments, words)


def warm_up(engine: WhisperEngine, tokenizer: WhisperTokenizer) -> None:
    """One window of quiet noise through every engine path (encode, language, generate, align), so that
    the first real request does not pay for lazy initialisation."""
    from whisper_triton.features import window_features

    noise = np.random.default_rng(0).normal(0.0, 1e-3, 16_000).astype(np.float32)
    features, frames = window_features(noise, engine.n_mels)
    transcribe = DecodeOptions(temperatures=(0.0,), word_timestamps=True)
    align = DecodeOptions(language="en", word_timestamps=True, given=((" Hello.", 0.0, 1.0),))
    decode_windows(engine, tokenizer, [WindowJob(features, frames, transcribe)])
    decode_windows(engine, tokenizer, [WindowJob(features, frames, align)])
