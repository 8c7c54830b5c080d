"""A whole transcription: audio bytes in, ordered events out. Engine and transport are injected.

The entry Triton model runs this with a `decode` that sends each window to the engine model (where
windows of all requests are batched); tests run it with a `decode` that calls an engine directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import Any

import msgspec
import numpy as np

from whisper_triton.audio import SAMPLE_RATE, decode_audio
from whisper_triton.contract import (
    DoneEvent,
    Event,
    Segment,
    SegmentsEvent,
    Span,
    TranscriptionRequest,
    Turn,
    VadParameters,
)
from whisper_triton.decoding import DecodeOptions, WindowResult
from whisper_triton.errors import AudioTooShortError, EngineError, InvalidRequestError
from whisper_triton.hallucinations import invented_in_silence, says_again, too_fast
from whisper_triton.languages import normalize_language
from whisper_triton.models import ModelInfo
from whisper_triton.speakers import KnownSpeaker, split_by_speaker
from whisper_triton.voices import EmbedFn, KnownVoices, check_voices, known_speakers, reference_samples, voice_samples
from whisper_triton.windows import (
    WINDOW_SAMPLES,
    WINDOW_SECONDS,
    Window,
    meets_speech,
    planned_windows,
    speech_regions,
)


@dataclass(frozen=True)
class WindowCall:
    """One window for the engine: its audio and how to decode it."""

    samples: np.ndarray  # float32, 16 kHz, at most 30 s
    options: DecodeOptions


# Several windows in one engine call: each window's (position in the list, result or failure), as they come.
DecodeFn = Callable[[list[WindowCall]], AsyncIterator[tuple[int, WindowResult | Exception]]]
CancelFn = Callable[[str], Awaitable[None]]  # drops a request's windows still queued at the engine
# Speaker turns of the whole audio: [{"start", "end", "speaker"}], from the diarization model; clusters
# matching a known speaker carry the name.
DiarizeFn = Callable[[np.ndarray, "SpeakerCount", list[KnownSpeaker]], Awaitable[list[dict[str, Any]]]]
MIN_SECONDS = 0.1
_BACKGROUND: set[asyncio.Future[None]] = set()  # cancellations in flight (asyncio keeps only weak references)
TASKS = ("transcribe", "translate")


@dataclass(frozen=True)
class SpeakerCount:
    num: int | None = None
    min: int | None = None
    max: int | None = None

    @classmethod
    def of(cls, request: TranscriptionRequest) -> SpeakerCount:
        return cls(request.num_speakers, request.min_speakers, request.max_speakers)


@dataclass(frozen=True)
class TranscriberSettings:
    beam_size: int = 1
    max_audio_seconds: float = 4 * 3600
    max_windows_in_flight: int = 64
    windows_per_call: int = 16  # windows sent to the engine in one call (a call costs ~10 ms of CPU each)
    loop_check: bool = True  # repetition loops fall back and are cut to one copy (`whisper_triton.loops`)
    # Seconds of VAD silence around an anomalous segment with words that drop it (0: never; see
    # `whisper_triton.hallucinations`).
    hallucination_silence_threshold: float = 2.0


def temperature_schedule(temperature: float) -> tuple[float, ...]:
    """0 means automatic: start greedy and raise by 0.2 while the output looks wrong."""
    if not 0.0 <= temperature <= 1.0 or math.isnan(temperature):
        raise InvalidRequestError("temperature must be between 0 and 1.", param="temperature")
    steps = [round(temperature + 0.2 * i, 2) for i in range(6)]
    return tuple(t for t in steps if t <= 1.0) or (temperature,)


def validate(request: TranscriptionRequest, model: ModelInfo) -> DecodeOptions:
    """Checks a request against the model and turns it into decoding options."""
    if request.task not in TASKS:
        raise InvalidRequestError(f"task must be one of {', '.join(TASKS)}.", param="task")
    language = normalize_language(request.language)
    if not model.multilingual:
        if request.task == "translate":
            raise InvalidRequestError(
                "This model is English-only and cannot translate; serve a multilingual model.",
                param="model",
            )
        if language not in (None, "en"):
            raise InvalidRequestError(
                f"This model is English-only and cannot transcribe language '{request.language}'.",
                param="language",
            )
        language = "en"
    elif language is not None:
        language = normalize_language(language, model.num_languages)
    return DecodeOptions(
        task=request.task,
        language=language,
        prompt=request.prompt or None,
        temperatures=temperature_schedule(request.temperature),
        word_timestamps=request.word_timestamps,
        logprobs=request.logprobs,
    )


class Transcriber:
    def __init__(
        self,
        model: ModelInfo,
        decode: DecodeFn,
        executor: Executor | None = None,
        settings: TranscriberSettings | None = None,
        diarize: DiarizeFn | None = None,
        embed: EmbedFn | None = None,
        cancel: CancelFn | None = None,
    ) -> None:
        self.model = model
        self._decode = decode
        self._cancel = cancel
        self._diarize = diarize
        self._embed = embed
        self._executor = executor
        self.settings = settings or TranscriberSettings()

    async def _run_blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def answer(self, audio: bytes, request: TranscriptionRequest) -> AsyncIterator[Event]:
        """The events of a request, whatever it asks: a transcription, an alignment or a voice's embedding."""
        if request.task == "embed":
            return self.voice(audio)
        if request.task == "vad":
            return self.speech(audio, request.vad_options or VadParameters())
        if request.transcript is not None:
            return self.align(audio, request.transcript, request.language)
        return self.events(audio, request)

    async def events(self, audio: bytes, request: TranscriptionRequest) -> AsyncIterator[Event]:
        """Yields `segments` events (one per window, in order) and finally one `done` event.

        With diarization, speaker turns are computed alongside decoding; segments then carry
        speakers (and are split where the speaker changes), so they are sent once turns are known.
        """
        diarize_only = request.task == "diarize"
        diarizing = request.needs_diarization
        known = known_voices(request)
        if diarizing and self._diarize is None:
            raise InvalidRequestError("Speaker diarization is not enabled on this server.", param="diarize")
        if known and not diarizing:
            raise InvalidRequestError("Known speakers need diarization (response_format=diarized_json).",
                                      param="known_speaker_names")
        check_voices(known)
        checked = msgspec.structs.replace(request, task="transcribe") if diarize_only else request
        options = replace(validate(checked, self.model), beam_size=self.settings.beam_size,
                          word_timestamps=request.word_timestamps or diarizing,
                          # Segments split at speaker changes could not keep their tokens' log-probabilities.
                          logprobs=request.logprobs and not diarizing,
                          request=request.request_id or uuid.uuid4().hex, loop_check=self.settings.loop_check,
                          live=request.live)
        profile = Profile()
        with profile.stage("decode"):
            decoded = await self._run_blocking(decode_audio, audio, self.settings.max_audio_seconds)
        samples: np.ndarray = decoded.samples
        duration = len(samples) / SAMPLE_RATE
        if duration < MIN_SECONDS:
            raise AudioTooShortError(
                f"Audio file is too short. Minimum audio length is {MIN_SECONDS} seconds."
            )
        turns_task = None
        if diarizing:
            references = await self._run_blocking(reference_samples, known)
            turns_task = asyncio.ensure_future(self._speaker_turns(samples, request, known, references))
        turns: list[dict[str, Any]] | None = None
        try:
            if diarize_only:
                turns = await turns_task  # type: ignore[misc]
                yield DoneEvent(task="diarize", language=None, duration=round(duration, 3), text="", segments=[],
                                speakers=_turns(turns))
                return
            segments: list[Segment] = []
            language, probability = options.language, None
            planned = self._planned_windows(samples, request.vad, profile)
            async for window, result, progress in self._decode_windows(samples, planned, options, profile):
                if not language:
                    language, probability = result.language, round(result.language_probability, 4)
                previous = (segments[-1].end, segments[-1].text) if segments else None
                heard = self._heard(result.segments, window, request.vad, previous, profile)
                new = [_placed(len(segments) + i, window, s) for i, s in enumerate(heard)]
                segments.extend(new)
                if not diarizing:
                    yield SegmentsEvent(language=language, progress=progress, segments=new)
            if turns_task is not None:
                with profile.stage("diarization_wait"):
                    turns = await turns_task
                segments = with_speakers(segments, turns, words=request.word_timestamps)
                yield SegmentsEvent(language=language, progress=1.0, segments=segments)
        finally:
            if turns_task is not None and not turns_task.done():
                turns_task.cancel()
        yield DoneEvent(task=options.task, language=language or "en", duration=round(duration, 3),
                        text="".join(s.text for s in segments).strip(), segments=segments,
                        speakers=None if turns is None else _turns(turns),
                        profile=profile.report(duration) if request.profile else None,
                        language_probability=probability)

    def _heard(self, decoded: list[Segment], window: Window, vad: bool, previous: tuple[float, str] | None,
               profile: Profile) -> list[Segment]:
        """The segments of a window that reach the user: none with more words than its time could hold; with
        VAD, none more than 0.5 s from all speech, nor
        an anomalous one in a long VAD silence; and never one that only says the previous window's last
        words again (see `whisper_triton.hallucinations`)."""
        heard = [s for s in decoded if not too_fast(s)]
        profile.count("dropped_too_fast", len(decoded) - len(heard))
        decoded = heard
        if vad:
            near = [s for s in decoded if meets_speech(s.start, s.end, window.speech)]
            threshold = self.settings.hallucination_silence_threshold
            heard = [s for s in near if not invented_in_silence(s, window.speech, threshold)]
            profile.count("dropped_away_from_speech", len(decoded) - len(near))
            profile.count("dropped_in_silence", len(near) - len(heard))
        if self.settings.loop_check and previous is not None and heard:
            first, offset = heard[0], window.offset
            speech = [(offset + s, offset + e) for s, e in window.speech] if vad else None
            if says_again(previous, offset + first.start, offset + first.end, first.text, speech):
                heard = heard[1:]
                profile.count("loops")
        return heard

    async def voice(self, audio: bytes) -> AsyncIterator[Event]:
        """The speaker embedding of a clip of one voice: one `done` event."""
        if self._embed is None:
            raise InvalidRequestError("Speaker diarization is not enabled on this server.", param="diarize")
        samples = await self._run_blocking(voice_samples, audio)
        vector, model = await self._embed(samples)
        yield DoneEvent(task="embed", language=None, duration=round(len(samples) / SAMPLE_RATE, 3), text="",
                        segments=[], embedding=[round(float(v), 6) for v in vector], embedding_model=model)

    async def speech(self, audio: bytes, parameters: VadParameters) -> AsyncIterator[Event]:
        """The speech regions of the audio: one `done` event."""
        samples = (await self._run_blocking(decode_audio, audio, self.settings.max_audio_seconds)).samples
        regions = await self._run_blocking(speech_regions, samples, parameters)
        yield DoneEvent(task="vad", language=None, duration=round(len(samples) / SAMPLE_RATE, 3), text="",
                        segments=[], speech=[Span(start, end) for start, end in regions])

    async def _speaker_turns(
        self, samples: np.ndarray, request: TranscriptionRequest, voices: KnownVoices, references: list[np.ndarray]
    ) -> list[dict[str, Any]]:
        assert self._diarize is not None
        known: list[KnownSpeaker] = []
        if voices:
            if self._embed is None:
                raise InvalidRequestError("Known speakers are not supported here.", param="known_speaker_names")
            known = await known_speakers(voices, references, self._embed)
        return await self._diarize(samples, SpeakerCount.of(request), known)

    async def align(
        self, audio: bytes, transcript: list[dict[str, Any]], language: str | None = None
    ) -> AsyncIterator[Event]:
        """Word timings for a given transcript (`[{start, end, text}]`): one `done` event."""
        given = _given_segments(transcript)
        options = replace(validate(TranscriptionRequest(language=language), self.model), word_timestamps=True)
        decoded = await self._run_blocking(decode_audio, audio, self.settings.max_audio_seconds)
        samples: np.ndarray = decoded.samples
        duration = len(samples) / SAMPLE_RATE
        if duration < MIN_SECONDS:
            raise AudioTooShortError(f"Audio file is too short. Minimum audio length is {MIN_SECONDS} seconds.")
        segments: list[Segment] = []
        languages: list[str] = []
        for window, pieces in _pack_given(given, len(samples)):
            relative = tuple((text, max(0.0, s - window.offset), min(window.duration, e - window.offset))
                             for text, s, e in pieces)
            call = WindowCall(samples[window.start : window.end], replace(options, given=relative))
            result = await _decode_one(self._decode, call)
            languages.append(result.language)
            segments.extend(_placed(len(segments) + i, window, s) for i, s in enumerate(result.segments))
        language = options.language or (max(set(languages), key=languages.count) if languages else "en")
        yield DoneEvent(task="align", language=language, duration=round(duration, 3),
                        text="".join(s.text for s in segments).strip(), segments=segments)

    async def _planned_windows(self, samples: np.ndarray, vad: bool, profile: Profile) -> AsyncIterator[list[Window]]:
        """The windows of the audio as VAD plans them (`planned_windows`, in a thread): the first ones are
        decoded while VAD runs on the rest. Stopping early stops VAD at its next step."""
        loop = asyncio.get_running_loop()
        arrived: asyncio.Queue[list[Window] | BaseException | None] = asyncio.Queue()
        stop = threading.Event()

        def send(item: list[Window] | BaseException | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed (the model is being unloaded)
                loop.call_soon_threadsafe(arrived.put_nowait, item)

        def plan() -> None:
            started = time.perf_counter()
            batches = planned_windows(samples, vad)
            try:
                for batch in batches:
                    if stop.is_set():
                        break
                    send(batch)
            except Exception as exc:
                send(exc)
            finally:
                batches.close()
                profile.seconds["vad"] += time.perf_counter() - started
                send(None)

        job = loop.run_in_executor(self._executor, plan)
        try:
            while (item := await arrived.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            if job.done():
                job.result()

    async def _decode_windows(
        self, samples: np.ndarray, planned: AsyncIterator[list[Window]], options: DecodeOptions, profile: Profile
    ) -> AsyncIterator[tuple[Window, WindowResult, float]]:
        """Results in audio order with the progress: the share of the audio up to the window's end.

        Every window is sent as soon as VAD has planned it (up to `max_windows_in_flight`, in engine calls
        of 1, 2, 4, ... windows, then `windows_per_call`): the engine decodes them in window order, detects
        the request's language on the first and uses it for all, and decodes a window on where Whisper
        stopped early. The small first calls reach the engine first (a large one takes longer to copy),
        so the first windows, which the stream, a task's progress and the language wait for, are decoded
        first. When the caller stops early, windows still queued at the engine are dropped there.
        """
        limit = max(self.settings.max_windows_in_flight, self.settings.windows_per_call, 1)
        in_flight = [0]
        gate = asyncio.Condition()
        loop = asyncio.get_running_loop()
        windows: list[Window] = []
        outcomes: list[asyncio.Future[WindowResult | Exception]] = []
        planned_all = asyncio.Event()
        more = asyncio.Event()  # set when windows were added or planning ended

        async def run(indices: range) -> None:
            failure: Exception = EngineError("The Whisper engine sent no result for a window.")
            async with gate:
                await gate.wait_for(lambda: in_flight[0] + len(indices) <= limit)
                in_flight[0] += len(indices)
            try:
                calls = [WindowCall(samples[windows[i].start : windows[i].end],
                                    replace(options, window=i, speech=windows[i].speech)) for i in indices]
                async for position, outcome in self._decode(calls):
                    if isinstance(outcome, WindowResult):
                        profile.add_window(outcome)
                    if not outcomes[indices[position]].done():
                        outcomes[indices[position]].set_result(outcome)
            except Exception as exc:  # the whole call failed: so did each of its windows
                failure = exc
            finally:
                async with gate:
                    in_flight[0] -= len(indices)
                    gate.notify_all()
            for i in indices:
                if not outcomes[i].done():
                    outcomes[i].set_result(failure)

        tasks: list[asyncio.Future[None]] = []
        planning_failed: list[BaseException] = []

        async def send_as_planned() -> None:
            sizes = call_sizes(self.settings.windows_per_call)
            try:
                async for batch in planned:
                    first = len(windows)
                    windows.extend(batch)
                    outcomes.extend(loop.create_future() for _ in batch)
                    while first < len(windows):
                        indices = range(first, min(first + next(sizes), len(windows)))
                        tasks.append(asyncio.ensure_future(run(indices)))
                        first = indices.stop
                    more.set()
            except Exception as exc:
                planning_failed.append(exc)
            finally:
                planned_all.set()
                more.set()

        sender = asyncio.ensure_future(send_as_planned())
        finished = False
        try:
            index = 0
            while True:
                while index >= len(windows) and not planned_all.is_set():
                    more.clear()
                    await more.wait()
                if index >= len(windows):
                    if planning_failed:
                        raise planning_failed[0]
                    break
                outcome = await outcomes[index]
                if isinstance(outcome, Exception):
                    raise outcome
                window = windows[index]
                last = planned_all.is_set() and index == len(windows) - 1
                yield window, outcome, 1.0 if last else round(min(window.end / len(samples), 0.9999), 4)
                index += 1
            finished = True
        finally:
            sender.cancel()
            for task in tasks:
                task.cancel()
            if not finished and self._cancel is not None and options.request is not None:
                # Not awaited here: the caller may be gone (cancelled), and the engine needs no answer.
                cancelling = asyncio.ensure_future(self._cancel(options.request))
                _BACKGROUND.add(cancelling)
                cancelling.add_done_callback(_BACKGROUND.discard)
            with contextlib.suppress(Exception):
                await asyncio.gather(sender, *tasks, return_exceptions=True)


def call_sizes(per_call: int) -> Iterator[int]:
    """Windows per engine call, call after call: 1, 2, 4, ... then `per_call` each."""
    size = 1
    while True:
        yield size
        size = min(2 * size, max(1, per_call))


async def _decode_one(decode: DecodeFn, call: WindowCall) -> WindowResult:
    async for _, outcome in decode([call]):
        if isinstance(outcome, Exception):
            raise outcome
        return outcome
    raise EngineError("The Whisper engine sent no result for a window.")


class Profile:
    """Seconds per stage of one request: the entry model's own, and the engine's shares per window."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.counts: dict[str, float] = defaultdict(float)
        self._started = time.perf_counter()

    @contextlib.contextmanager
    def stage(self, name: str) -> Any:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started

    def count(self, name: str, number: int = 1) -> None:
        self.counts[name] += number

    def add_window(self, result: WindowResult) -> None:
        timings = dict(result.timings)
        self.counts["windows"] += 1
        self.counts["resumes"] += result.resumes
        self.counts["loops"] += result.loops
        self.counts["looping_passes"] += result.looping_passes
        self.counts["batch_windows"] += timings.pop("batch", 0.0)
        timings.pop("batch_wall", None)
        # The entry model's share of building and reading its engine calls (transfers, serialisation).
        self.seconds["transfer"] += timings.pop("transfer", 0.0)
        for stage, seconds in timings.items():
            self.seconds[f"engine_{stage}"] += seconds

    def report(self, duration: float) -> dict[str, Any]:
        windows = self.counts["windows"] or 1.0
        return {
            "audio_seconds": round(duration, 3),
            "wall": round(time.perf_counter() - self._started, 4),
            "seconds": {stage: round(value, 4) for stage, value in sorted(self.seconds.items())},
            "windows": int(self.counts["windows"]),
            "resumes": int(self.counts["resumes"]),
            "mean_batch": round(self.counts["batch_windows"] / windows, 2),
            # Repetition loops cut to one copy (in a window, or a window saying the previous one's end again),
            # passes decoded again because they looped, segments dropped as invented (see `_heard`).
            **{name: int(self.counts[name]) for name in ("loops", "looping_passes", "dropped_away_from_speech",
                                                        "dropped_in_silence", "dropped_too_fast")},
        }


def _given_segments(transcript: list[dict[str, Any]]) -> list[tuple[str, float, float]]:
    try:
        given = [(str(s["text"]), float(s["start"]), float(s["end"])) for s in transcript]
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidRequestError(
            "The transcript must be a list of segments with 'text', 'start' and 'end'.", param="transcript"
        ) from exc
    if not given or any(end < start or start < 0 for _, start, end in given):
        raise InvalidRequestError("The transcript needs segments with 0 <= start <= end.", param="transcript")
    return sorted(given, key=lambda g: g[1])


def _pack_given(
    given: list[tuple[str, float, float]], num_samples: int, margin: float = 0.5
) -> list[tuple[Window, list[tuple[str, float, float]]]]:
    """Consecutive segments in windows of at most 30 s (with a little audio around them)."""
    packed: list[tuple[Window, list[tuple[str, float, float]]]] = []
    for text, start, end in given:
        if packed:
            window, pieces = packed[-1]
            first = window.start / SAMPLE_RATE
            if end + margin - first <= WINDOW_SECONDS:
                pieces.append((text, start, end))
                packed[-1] = (Window(window.start, min(num_samples, int((end + margin) * SAMPLE_RATE))), pieces)
                continue
        begin = max(0, int((start - margin) * SAMPLE_RATE))
        stop = min(num_samples, begin + WINDOW_SAMPLES, int((end + margin) * SAMPLE_RATE))
        packed.append((Window(begin, max(stop, begin + 1)), [(text, start, end)]))
    return packed


def _placed(index: int, window: Window, segment: Segment) -> Segment:
    """A window's segment as the request's `index`-th, its times (and its words') in seconds into the audio."""
    offset = window.offset
    words = [msgspec.structs.replace(w, start=round(offset + w.start, 3), end=round(offset + w.end, 3),
                                     probability=round(w.probability, 4)) for w in segment.words]
    return msgspec.structs.replace(segment, id=index, seek=window.start // 160, start=round(offset + segment.start, 3),
                                   end=round(offset + segment.end, 3), words=words)


def with_speakers(segments: list[Segment], turns: list[dict[str, Any]], words: bool) -> list[Segment]:
    """Speakers on segments and words, segments split where the speaker changes (`split_by_speaker`); without
    `words`, the words (needed to place speakers) are left out."""
    split = msgspec.convert(split_by_speaker(msgspec.to_builtins(segments), turns), list[Segment])
    return split if words else [msgspec.structs.replace(s, words=[]) for s in split]


def known_voices(request: TranscriptionRequest) -> KnownVoices:
    return KnownVoices(request.known_speaker_names, request.known_speaker_references,
                       tuple(np.asarray(row, dtype=np.float32) for row in request.known_speaker_embeddings))


def _turns(turns: list[dict[str, Any]]) -> list[Turn]:
    return msgspec.convert(turns, list[Turn])
