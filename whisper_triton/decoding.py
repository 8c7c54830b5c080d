"""Batched decoding of 30 s windows on any `WhisperEngine`.

One call takes the windows of many requests at once (a batch formed by the engine model's scheduler):
it encodes them once, detects languages where none was given (once per request when windows carry a
request id), decodes with temperature fallback, splits the tokens into timestamped segments, decodes on
from where Whisper stopped early while the window's audio still holds speech (on the same encoder output,
no second encoding), and, when asked, aligns words. Times are relative to each window; the caller adds
the window offset.

Every window is decoded with timestamp tokens, whatever the answer's format: they are how a window
where Whisper stopped early is found (text-only decoding silently drops the end of such windows).

A pass whose text loops (a phrase repeated back to back, `whisper_triton.loops`) falls back to a higher
temperature like one that compresses too well; when every temperature loops, the pass that loops least is
kept, and what still repeats in the window's text is cut to one copy.
"""

from __future__ import annotations

import bisect
import itertools
import math
import operator
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import msgspec
import numpy as np

from whisper_triton.contract import Segment, TokenLogprob
from whisper_triton.engine import Generation, WhisperEngine
from whisper_triton.loops import collapse, find_loops, keys, units
from whisper_triton.text import WhisperTokenizer
from whisper_triton.words import align_words, assign_words

_T = TypeVar("_T")

MAX_LENGTH = 448
MAX_PROMPT_TOKENS = MAX_LENGTH // 2 - 1
FRAMES_PER_SECOND = 100  # log-mel frames (hop of 10 ms)
TIME_PRECISION = 0.02  # seconds per timestamp token
MIN_RESUME_SECONDS = 1.0  # audio left after the last timestamp before a window is decoded on
MIN_RESUME_SPEECH = 0.5  # seconds of VAD speech that audio must hold
MAX_RESUMES = 4  # each resume starts later in the window, so this only bounds pathological output
RESUME_TOKENS_PER_SECOND = 10


@dataclass(frozen=True)
class DecodeOptions:
    task: str = "transcribe"
    language: str | None = None
    prompt: str | None = None
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    word_timestamps: bool = False
    beam_size: int = 1
    compression_ratio_threshold: float = 2.4
    log_prob_threshold: float = -1.0
    no_speech_threshold: float = 0.6
    # Forced alignment: the window's known segments (text, start, end in window seconds) get word
    # timings instead of being transcribed.
    given: tuple[tuple[str, float, float], ...] | None = None
    # Where Silero VAD found speech in the window (window seconds). With it, a window where Whisper stopped
    # early while speech is left is decoded on from its last timestamp; without it, never.
    speech: tuple[tuple[float, float], ...] | None = None
    # The request the window belongs to: its windows share one language, detected once, on the first of
    # them the engine decodes (OpenAI's Whisper detects on the first 30 s); and a request can be cancelled.
    request: str | None = None
    window: int = 0  # index of the window in its request (windows are decoded in this order)
    loop_check: bool = True  # a pass that loops falls back, and what still loops is cut to one copy
    live: bool = False  # a live turn's window: queued before file windows, batched with live windows only
    # Each segment gets the log-probability of each text token (`Segment.logprobs`), from the same alignment
    # pass as word timestamps: nothing when no window of the batch asks.
    logprobs: bool = False
    # Several live turns packed into the window (`whisper_triton.packing`): the window seconds where each turn
    # after the first begins (the middle of the silence laid before it). Text is only judged within one turn
    # (loops, compression, a resume saying the text so far again): two speakers saying the same thing is not
    # Whisper looping.
    parts: tuple[float, ...] = ()


@dataclass(frozen=True)
class WindowJob:
    features: np.ndarray  # (n_mels, 3000) float32
    num_frames: int  # frames holding audio, the rest is padding
    options: DecodeOptions


@dataclass
class WindowResult:
    language: str
    language_probability: float
    segments: list[Segment]
    resumes: int = 0  # times the window was decoded on from where Whisper stopped early
    window: int = 0  # the window's index in its request (DecodeOptions.window)
    loops: int = 0  # repetition loops cut to one copy in its text
    looping_passes: int = 0  # passes whose text looped (each decoded again at a higher temperature, but the last)
    # Seconds of engine work spent on this window, by stage (its share of each batch-wide step).
    timings: dict[str, float] = field(default_factory=dict)


class LanguageTicket(Protocol):
    """A window's part in its request's one language (see `whisper_triton.scheduler.RequestLanguages`)."""

    @property
    def detector(self) -> bool:
        """Whether this window detects the request's language for all its windows."""

    def publish(self, language: tuple[str, float] | None) -> None:
        """The detector's result (None: it failed; the others then detect their own)."""

    def wait(self) -> tuple[str, float] | None:
        """The request's language once its detector published it (None: detect your own)."""


@dataclass
class _Attempt:
    generation: Generation
    temperature: float
    compression_ratio: float
    start: float = 0.0  # the window second this pass was forced to start at (resumes)
    looped: int = 0  # units (words) in the repeated copies of its loops
    looping_passes: int = 0  # of the window's passes up to this one kept, those that looped


class _Clock:
    """Seconds per stage, shared evenly by the windows of the batch."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - started

    def share(self, count: int) -> dict[str, float]:
        return {stage: round(seconds / count, 6) for stage, seconds in self.seconds.items()}


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def decode_each(
    engine: WhisperEngine,
    tokenizer: WhisperTokenizer,
    jobs: list[WindowJob],
    tickets: Sequence[LanguageTicket | None] | None = None,
    cancelled: Callable[[WindowJob], bool] | None = None,
) -> list[WindowResult | Exception]:
    """`decode_windows`, with a failure kept to the window that causes it.

    The windows of a batch come from many requests; when the batch fails, its windows are decoded
    again one at a time, so one bad window (or one the engine cannot handle) fails alone.
    """
    tickets = list(tickets) if tickets is not None else [None] * len(jobs)
    try:
        return list(decode_windows(engine, tokenizer, jobs, tickets, cancelled))
    except Exception as exc:
        if len(jobs) == 1:
            _abandon(tickets)
            return [exc]
    outcomes: list[WindowResult | Exception] = []
    for job, ticket in zip(jobs, tickets, strict=True):
        try:
            outcomes.extend(decode_windows(engine, tokenizer, [job], [ticket], cancelled))
        except Exception as exc:
            _abandon([ticket])
            outcomes.append(exc)
    return outcomes


def _abandon(tickets: Sequence[LanguageTicket | None]) -> None:
    """A detector that failed lets the request's other windows detect their own language."""
    for ticket in tickets:
        if ticket is not None and ticket.detector:
            ticket.publish(None)


def decode_windows(
    engine: WhisperEngine,
    tokenizer: WhisperTokenizer,
    jobs: list[WindowJob],
    tickets: Sequence[LanguageTicket | None] | None = None,
    cancelled: Callable[[WindowJob], bool] | None = None,
    detectors_first: int = 0,
) -> list[WindowResult]:
    if not jobs:
        return []
    tickets = list(tickets) if tickets is not None else [None] * len(jobs)
    # Windows that detect their request's language go first, encoded and detected before the others are
    # encoded: windows of the same request in other batches wait for it, and should not wait long.
    first = [i for i, job in enumerate(jobs) if job.options.language is None and (t := tickets[i]) and t.detector]
    if first and len(first) < len(jobs) and not detectors_first:
        order = first + [i for i in range(len(jobs)) if i not in first]
        sorted_results = decode_windows(engine, tokenizer, [jobs[i] for i in order], [tickets[i] for i in order],
                                        cancelled, detectors_first=len(first))
        results: list[WindowResult] = [sorted_results[0]] * len(jobs)
        for position, i in enumerate(order):
            results[i] = sorted_results[position]
        return results
    clock = _Clock()
    with clock("encode"):
        encoded = engine.encode(np.stack([job.features for job in jobs[:detectors_first or len(jobs)]]))
    known: list[tuple[str, float]] = []
    if detectors_first:
        with clock("language"):
            known = _languages(engine, encoded, jobs[:detectors_first], tickets[:detectors_first])
        with clock("encode"):
            encoded = engine.join([encoded, engine.encode(np.stack([job.features for job in jobs[detectors_first:]]))])
    with clock("language"):
        languages = known + _languages(engine, encoded, jobs, tickets, start=len(known))
    run = _Run(engine, tokenizer, clock, cancelled or (lambda job: False))
    aligning = [i for i, job in enumerate(jobs) if job.options.given is not None]
    if not aligning:
        results = run.transcribe(encoded, jobs, languages)
    else:
        placed: list[WindowResult | None] = [None] * len(jobs)
        decoding = [i for i in range(len(jobs)) if i not in aligning]
        for indices, step in ((decoding, run.transcribe), (aligning, run.align_given)):
            if indices:
                sub = step(_subset(engine, encoded, indices, len(jobs)), [jobs[i] for i in indices],
                           [languages[i] for i in indices])
                for i, result in zip(indices, sub, strict=True):
                    placed[i] = result
        results = [result for result in placed if result is not None]
    timings = clock.share(len(jobs))
    for job, result in zip(jobs, results, strict=True):
        result.timings = {**timings, "batch": float(len(jobs))}
        result.window = job.options.window
    return results


def _subset(engine: WhisperEngine, encoded: Any, indices: list[int], total: int) -> Any:
    """The encoded state of `indices`, in that order (the whole batch only when it is in order)."""
    return encoded if indices == list(range(total)) else engine.take(encoded, indices)


def _languages(engine: WhisperEngine, encoded: Any, jobs: list[WindowJob], tickets: Sequence[LanguageTicket | None],
               start: int = 0) -> list[tuple[str, float]]:
    """The language of each window from `start` on: given, its request's (detected once), or its own.

    Detectors publish before anyone waits, so two batches waiting on each other's requests cannot deadlock.
    """
    count = len(jobs) - start
    if not engine.is_multilingual:
        return [("en", 1.0)] * count
    indices = range(start, len(jobs))
    languages: dict[int, tuple[str, float] | None] = {}
    for i in indices:
        given = jobs[i].options.language
        languages[i] = (given, 1.0) if given else None
    detectors = [i for i in indices if languages[i] is None and (t := tickets[i]) is not None and t.detector]
    for i, language in zip(detectors, _detect(engine, encoded, detectors, len(jobs)), strict=True):
        languages[i] = language
        tickets[i].publish(language)  # type: ignore[union-attr]
    for i in indices:
        if languages[i] is None and (ticket := tickets[i]) is not None:
            languages[i] = ticket.wait()
    unknown = [i for i in indices if languages[i] is None]
    for i, language in zip(unknown, _detect(engine, encoded, unknown, len(jobs)), strict=True):
        languages[i] = language
    return [languages[i] or ("en", 1.0) for i in indices]


def _detect(engine: WhisperEngine, encoded: Any, indices: list[int], total: int) -> list[tuple[str, float]]:
    if not indices:
        return []
    return [ranking[0] for ranking in engine.detect_language(_subset(engine, encoded, indices, total))]


def _prompt(tokenizer: WhisperTokenizer, options: DecodeOptions, language: str, previous: Sequence[int] = (),
            start: float | None = None) -> list[int]:
    """[<|startofprev|> prompt and text so far] <|startoftranscript|> language task [forced start time]."""
    context: list[int] = []
    if options.prompt and options.prompt.strip():
        context = tokenizer.encode(" " + options.prompt.strip())
    context = [*context, *previous][-MAX_PROMPT_TOKENS:]
    prompt = [tokenizer.sot_prev, *context] if context else []
    prompt += tokenizer.sot_sequence(language, options.task)
    if start is not None:
        prompt.append(timestamp_token(tokenizer, start))
    return prompt


def timestamp_token(tokenizer: WhisperTokenizer, seconds: float) -> int:
    return tokenizer.timestamp_begin + round(seconds / TIME_PRECISION)


class _Run:
    """The passes over one batch's encoder output: first decoding, fallbacks, resumes, words."""

    def __init__(self, engine: WhisperEngine, tokenizer: WhisperTokenizer, clock: _Clock,
                 cancelled: Callable[[WindowJob], bool]) -> None:
        self.engine, self.tokenizer, self.clock, self.cancelled = engine, tokenizer, clock, cancelled

    def transcribe(
        self, encoded: Any, jobs: list[WindowJob], languages: list[tuple[str, float]]
    ) -> list[WindowResult]:
        tokenizer = self.tokenizer
        prompts = [_prompt(tokenizer, job.options, language) for job, (language, _) in zip(jobs, languages,
                                                                                            strict=True)]
        attempts = self._decode_with_fallback(encoded, len(jobs), list(range(len(jobs))), jobs, prompts)
        results = [
            WindowResult(language, probability, _segments(tokenizer, job, attempt),
                         looping_passes=attempt.looping_passes)
            for job, (language, probability), attempt in zip(jobs, languages, attempts, strict=True)
        ]
        self._resume(encoded, jobs, languages, results, attempts)
        for job, result in zip(jobs, results, strict=True):
            if job.options.loop_check:
                collapsed = [collapse_loops(tokenizer, part) for part in _by_part(result.segments, job.options.parts)]
                result.segments = [segment for part, _ in collapsed for segment in part]
                result.loops = sum(loops for _, loops in collapsed)
        with self.clock("words"):
            self._add_words(encoded, jobs, results)
        return results

    def align_given(
        self, encoded: Any, jobs: list[WindowJob], languages: list[tuple[str, float]]
    ) -> list[WindowResult]:
        """Word timings for known text: each given segment is tokenized and aligned, nothing generated."""
        results = []
        for job, (language, probability) in zip(jobs, languages, strict=True):
            segments = []
            for text, start, end in job.options.given or ():
                clean = " " + text.strip()
                tokens = self.tokenizer.encode(clean)
                segments.append(Segment(start=start, end=end, text=clean, tokens=tokens, temperature=0.0,
                                        avg_logprob=0.0, compression_ratio=compression_ratio(clean),
                                        no_speech_prob=0.0))
            results.append(WindowResult(language, probability, segments))
        with self.clock("words"):
            self._add_words(encoded, jobs, results)
        return results

    def _resume(self, encoded: Any, jobs: list[WindowJob], languages: list[tuple[str, float]],
                results: list[WindowResult], attempts: list[_Attempt]) -> None:
        """Decodes on from the last timestamp of each window where Whisper stopped with speech left.

        The prompt carries the window's text so far (as OpenAI's Whisper conditions on previous text) and
        forces the first timestamp, so the model transcribes what follows on the encoder output it has.
        """
        tokenizer = self.tokenizer
        generated: list[list[int]] = [_timed_tokens(tokenizer, attempt) for attempt in attempts]
        reached = [0.0] * len(jobs)  # where the last resume started: the next one must start later
        for _ in range(MAX_RESUMES):
            todo, starts = [], []
            for i, job in enumerate(jobs):
                start = resume_point(tokenizer, generated[i], job) if results[i].segments else None
                if start is not None and start > reached[i] and not self.cancelled(job):
                    todo.append(i)
                    starts.append(start)
                    reached[i] = start
            if not todo:
                return
            text = [[t for t in generated[i] if t < tokenizer.eot] for i in todo]
            prompts = [_prompt(tokenizer, jobs[i].options, languages[i][0], previous, start)
                       for i, previous, start in zip(todo, text, starts, strict=True)]
            passes = self._decode_with_fallback(encoded, len(jobs), todo, jobs, prompts, starts, "resume")
            for i, previous, attempt in zip(todo, text, passes, strict=True):
                segments = _segments(tokenizer, jobs[i], attempt)
                tokens = _timed_tokens(tokenizer, attempt)
                results[i].resumes += 1
                results[i].looping_passes += attempt.looping_passes
                parts = jobs[i].options.parts
                if not parts:
                    if repeats(tokenizer.decode(previous), "".join(s.text for s in segments)):
                        segments = []  # the end of the text so far again: nothing new was heard
                else:  # packed turns: a turn's new text against that turn's text so far
                    said = _by_part(results[i].segments, parts)
                    segments = [s for turn, new in enumerate(_by_part(segments, parts))
                                if not repeats("".join(s.text for s in said[turn]), "".join(s.text for s in new))
                                for s in new]
                results[i].segments += segments
                generated[i] = [*generated[i], *tokens]
                if not segments or last_timestamp(tokenizer, tokens) is None:
                    generated[i] = []  # nothing more, or text up to the end of the audio: done

    def _decode_with_fallback(self, encoded: Any, total: int, indices: list[int], jobs: list[WindowJob],
                              prompts: list[list[int]], starts: Sequence[float] | None = None,
                              stage: str = "decode") -> list[_Attempt]:
        """Decodes windows `indices` (prompts in the same order), raising the temperature while the output
        looks wrong; returns the attempt kept for each. Time goes to `stage`, reruns to "fallback"."""
        order = {index: position for position, index in enumerate(indices)}
        tried: list[list[_Attempt]] = [[] for _ in indices]
        final: list[_Attempt | None] = [None] * len(indices)
        pending = list(indices)
        step = 0
        while pending:
            # One generate call per temperature and prompt length: CTranslate2 needs <|startoftranscript|> at
            # the same position in every item of a batch, so windows with prompts of different lengths (two
            # requests, or a resume beside a first pass) cannot share a call.
            groups: dict[tuple[float, int], list[int]] = defaultdict(list)
            for i in pending:
                groups[(jobs[i].options.temperatures[step], len(prompts[order[i]]))].append(i)
            pending = []
            for (temperature, _), members in sorted(groups.items()):
                budget = MAX_LENGTH
                if starts is not None:  # a resume transcribes what is left of the window, no more
                    budget = min(MAX_LENGTH, max(len(prompts[order[i]]) + _token_budget(
                        jobs[i].num_frames / FRAMES_PER_SECOND - starts[order[i]]) for i in members))
                with self.clock("fallback" if step else stage):
                    generations = self.engine.generate(
                        _subset(self.engine, encoded, members, total),
                        [prompts[order[i]] for i in members],
                        temperature=temperature,
                        beam_size=max(jobs[i].options.beam_size for i in members),
                        max_length=budget,
                    )
                for i, generation in zip(members, generations, strict=True):
                    position = order[i]
                    start = starts[position] if starts is not None else 0.0
                    text = self.tokenizer.decode([t for t in generation.tokens if t < self.tokenizer.eot])
                    options = jobs[i].options
                    pieces = _pieces_by_part(self.tokenizer, generation.tokens, options.parts) if (
                        options.loop_check or options.parts) else []
                    looped = sum(looped_units(texts) for texts in pieces) if options.loop_check else 0
                    ratio = compression_ratio(text) if not options.parts else max(
                        compression_ratio("".join(texts)) for texts in pieces)
                    attempt = _Attempt(generation, temperature, ratio, start, looped)
                    tried[position].append(attempt)
                    if not _needs_fallback(attempt, options) or self.cancelled(jobs[i]):
                        kept = attempt
                    elif step + 1 >= len(options.temperatures):
                        kept = _best(tried[position], options)
                    else:
                        pending.append(i)
                        continue
                    kept.looping_passes = sum(1 for a in tried[position] if a.looped)
                    final[position] = kept
            step += 1
        return [attempt for attempt in final if attempt is not None]

    def _add_words(self, encoded: Any, jobs: list[WindowJob], results: list[WindowResult]) -> None:
        tokenizer = self.tokenizer
        groups: dict[tuple[str, str], list[int]] = defaultdict(list)
        for i, (job, result) in enumerate(zip(jobs, results, strict=True)):
            if (job.options.word_timestamps or job.options.logprobs) and result.segments:
                groups[(result.language, job.options.task)].append(i)
        for (language, task), indices in groups.items():
            subset = _subset(self.engine, encoded, indices, len(jobs))
            text_tokens = [
                [t for s in results[i].segments for t in s.tokens if t < tokenizer.eot] for i in indices
            ]
            alignments = self.engine.align(
                subset,
                tokenizer.sot_sequence(language, task),
                text_tokens,
                [jobs[i].num_frames for i in indices],
            )
            for i, tokens, alignment in zip(indices, text_tokens, alignments, strict=True):
                if jobs[i].options.logprobs:
                    assign_logprobs(tokenizer, results[i].segments, alignment.token_probs)
                if jobs[i].options.word_timestamps:
                    words = align_words(tokenizer, language, tokens, alignment)
                    assign_words(tokenizer, results[i].segments, words)


def assign_logprobs(tokenizer: WhisperTokenizer, segments: Sequence[Segment], probs: Sequence[float]) -> None:
    """Each segment's `logprobs`: its text tokens in order, each with the log of its probability in `probs`
    (the window's text tokens, in order, as the alignment pass gives them). An aligner that gave no
    probabilities (TensorRT-LLM with WHISPER_TRTLLM_ALIGNER=off) leaves segments without."""
    at = 0
    for segment in segments:
        text = [t for t in segment.tokens if t < tokenizer.eot]
        if at + len(text) > len(probs):
            return
        segment.logprobs = [token_logprob(tokenizer, token, p) for token, p in zip(text, probs[at:], strict=False)]
        at += len(text)


def token_logprob(tokenizer: WhisperTokenizer, token: int, probability: float) -> TokenLogprob:
    data = tokenizer.token_bytes(token)
    logprob = math.log(probability) if probability > 0 else -100.0  # a float32 probability of 0: far below 1e-38
    return TokenLogprob(token=data.decode("utf-8", errors="replace"), logprob=round(min(0.0, logprob), 6),
                        bytes=list(data))


def _token_budget(seconds: float) -> int:
    """Tokens enough for `seconds` of the fastest speech with its timestamps (about 6 a second): a pass
    that runs into a repetition loop stops there instead of at 448 tokens."""
    return math.ceil(seconds * RESUME_TOKENS_PER_SECOND) + 8


def _needs_fallback(attempt: _Attempt, options: DecodeOptions) -> bool:
    generation = attempt.generation
    if _is_silence(attempt, options):
        return False  # silence: low confidence is expected, sampling would only hallucinate
    return (
        attempt.compression_ratio > options.compression_ratio_threshold
        or generation.avg_logprob < options.log_prob_threshold
        or attempt.looped > 0
    )


def _is_silence(attempt: _Attempt, options: DecodeOptions) -> bool:
    return (
        attempt.generation.no_speech_prob > options.no_speech_threshold
        and attempt.generation.avg_logprob < options.log_prob_threshold
    )


def _best(attempts: list[_Attempt], options: DecodeOptions) -> _Attempt:
    """When every temperature failed: of the attempts that are not repetitive (compression ratio within the
    threshold), the one that loops least, then the most probable (a loop is probable: every copy after the
    first is predicted with confidence)."""
    return min(attempts, key=lambda a: (a.compression_ratio > options.compression_ratio_threshold, a.looped,
                                        -a.generation.avg_logprob))


def looped_units(texts: Sequence[str]) -> int:
    """Units (words) in the repeated copies of the loops of a pass's text, its segments' `texts` searched
    together (a loop is often one sentence per segment)."""
    return sum(loop.extra for loop in find_loops(units(texts)))


def _pieces_by_part(tokenizer: WhisperTokenizer, tokens: Sequence[int], parts: Sequence[float]) -> list[list[str]]:
    """The text of each segment of a pass (split at its timestamps), grouped by the packed turn it belongs to."""
    pieces = _by_part(split_timestamps(tokenizer, list(tokens), 30.0), parts, end=operator.itemgetter(1))
    return [[tokenizer.decode(piece) for _, _, piece in group] for group in pieces]


def _by_part(items: Iterable[_T], parts: Sequence[float],
             end: Callable[[_T], float] = operator.attrgetter("end")) -> list[list[_T]]:
    """Segments (`end`: where one ends, in window seconds) grouped by the packed turn each belongs to (one
    group when the window holds one turn). By its end: Whisper often starts a turn's first segment in the
    silence before it, where the turn before ended."""
    groups: list[list[_T]] = [[] for _ in range(len(parts) + 1)]
    for item in items:
        groups[bisect.bisect_left(parts, end(item))].append(item)
    return groups


def collapse_loops(tokenizer: WhisperTokenizer, segments: list[Segment]) -> tuple[list[Segment], int]:
    """The window's segments with each loop cut to one copy, and the number of loops.

    A segment left without words is dropped; one that lost words keeps its timestamp tokens and times
    (which copy was said, if any, is unknown) and gets the tokens of its new text.
    """
    texts, loops = collapse([segment.text for segment in segments])
    if not loops:
        return segments, 0
    kept = []
    for segment, text in zip(segments, texts, strict=True):
        if text == segment.text:
            kept.append(segment)
        elif units([text]):
            kept.append(_retext(tokenizer, segment, text))
    return kept, len(loops)


def _retext(tokenizer: WhisperTokenizer, segment: Segment, text: str) -> Segment:
    begin = tokenizer.timestamp_begin
    leading = list(itertools.takewhile(lambda t: t >= begin, segment.tokens))
    trailing = list(itertools.takewhile(lambda t: t >= begin, reversed(segment.tokens)))[::-1]
    return msgspec.structs.replace(segment, text=text, tokens=[*leading, *tokenizer.encode(text), *trailing])


def _timed_tokens(tokenizer: WhisperTokenizer, attempt: _Attempt) -> list[int]:
    """The attempt's tokens with the timestamp it was forced to start at (resumes) in front."""
    tokens = [t for t in attempt.generation.tokens if t != tokenizer.eot]
    return [timestamp_token(tokenizer, attempt.start), *tokens] if attempt.start > 0 else tokens


def _segments(tokenizer: WhisperTokenizer, job: WindowJob, attempt: _Attempt) -> list[Segment]:
    if _is_silence(attempt, job.options):
        return []
    generation = attempt.generation
    duration = job.num_frames / FRAMES_PER_SECOND
    segments = []
    for start, end, tokens in split_timestamps(tokenizer, _timed_tokens(tokenizer, attempt), duration):
        text = tokenizer.decode([t for t in tokens if t < tokenizer.eot])
        if not text.strip():
            continue
        start = max(start, attempt.start)  # a resumed pass never goes back before where it was started
        segments.append(
            Segment(
                start=start,
                end=max(start, end),
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
        return min(round((token - begin) * TIME_PRECISION, 3), duration)

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


def repeats(before: str, after: str) -> bool:
    """Whether `after` only repeats words from the end of `before`: a pass decoded on from where Whisper
    stopped, with the text so far as its prompt, sometimes says the last words again when nothing follows."""
    new, old = keys(after), keys(before)
    if not new:
        return False
    tail = old[-(3 * len(new) + 5):]
    return any(tail[k : k + len(new)] == new for k in range(len(tail) - len(new) + 1))


def last_timestamp(tokenizer: WhisperTokenizer, tokens: Sequence[int]) -> float | None:
    """Where the output's transcribed audio ends: its last timestamp when the output ends on one (a closed
    segment, or a closed segment and an opened one that got no text); None when text runs to the end."""
    tokens = [t for t in tokens if t != tokenizer.eot]
    begin = tokenizer.timestamp_begin
    if len(tokens) < 2 or tokens[-1] < begin:
        return None
    closed = tokens[-2] if tokens[-2] >= begin else tokens[-1]
    return round((closed - begin) * TIME_PRECISION, 3)


def resume_point(tokenizer: WhisperTokenizer, tokens: Sequence[int], job: WindowJob) -> float | None:
    """Where to decode the window on from, or None when Whisper's output covers its speech.

    Whisper ends a window early when it takes the last sentence for one the next window will hold
    (`base` often stops after a window's first sentences). The window is decoded on when at least
    MIN_RESUME_SECONDS of audio and MIN_RESUME_SPEECH of VAD speech follow the last timestamp.
    """
    speech = job.options.speech
    closed = last_timestamp(tokenizer, tokens)
    if speech is None or closed is None:
        return None
    if job.num_frames / FRAMES_PER_SECOND - closed < MIN_RESUME_SECONDS:
        return None
    left = sum(max(0.0, end - max(start, closed)) for start, end in speech)
    return closed if left >= MIN_RESUME_SPEECH else None


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
