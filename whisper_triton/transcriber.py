"""A whole transcription: audio bytes in, ordered events out. Engine and transport are injected.

The entry Triton model runs this with a `decode` that sends each window to the engine model (where
windows of all requests are batched); tests run it with a `decode` that calls an engine directly.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from whisper_triton.audio import SAMPLE_RATE, decode_audio
from whisper_triton.decoding import DecodeOptions, Segment, WindowJob, WindowResult
from whisper_triton.errors import AudioTooShortError, InvalidRequestError
from whisper_triton.features import window_features
from whisper_triton.languages import normalize_language
from whisper_triton.models import ModelInfo
from whisper_triton.speakers import KnownSpeaker, split_by_speaker
from whisper_triton.voices import EmbedFn, KnownVoices, check_voices, known_speakers, reference_samples, voice_samples
from whisper_triton.windows import WINDOW_SAMPLES, WINDOW_SECONDS, Window, has_speech, plan_windows

DecodeFn = Callable[[WindowJob], Awaitable[WindowResult]]
# Speaker turns of the whole audio: [{"start", "end", "speaker"}], from the diarization model; clusters
# matching a known speaker carry the name.
DiarizeFn = Callable[[np.ndarray, "SpeakerCount", list[KnownSpeaker]], Awaitable[list[dict[str, Any]]]]
MIN_SECONDS = 0.1
MAX_RESUMES = 4  # each resume starts later in the window, so this only bounds pathological output
TASKS = ("transcribe", "translate")


@dataclass(frozen=True)
class SpeakerCount:
    num: int | None = None
    min: int | None = None
    max: int | None = None


@dataclass(frozen=True)
class TranscribeRequest:
    task: str = "transcribe"  # transcribe | translate | diarize (speaker turns only) | embed (see `voice`)
    language: str | None = None
    prompt: str | None = None
    temperature: float = 0.0
    word_timestamps: bool = False
    timestamps: bool = True  # False: text without segment times (see DecodeOptions.timestamps)
    vad: bool = True
    diarize: bool = False
    speakers: SpeakerCount = SpeakerCount()
    known: KnownVoices = field(default_factory=KnownVoices)


@dataclass(frozen=True)
class TranscriberSettings:
    beam_size: int = 1
    max_audio_seconds: float = 4 * 3600
    max_windows_in_flight: int = 16


def temperature_schedule(temperature: float) -> tuple[float, ...]:
    """0 means automatic: start greedy and raise by 0.2 while the output looks wrong."""
    if not 0.0 <= temperature <= 1.0 or math.isnan(temperature):
        raise InvalidRequestError("temperature must be between 0 and 1.", param="temperature")
    steps = [round(temperature + 0.2 * i, 2) for i in range(6)]
    return tuple(t for t in steps if t <= 1.0) or (temperature,)


def validate(request: TranscribeRequest, model: ModelInfo) -> DecodeOptions:
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
    ) -> None:
        self.model = model
        self._decode = decode
        self._diarize = diarize
        self._embed = embed
        self._executor = executor
        self.settings = settings or TranscriberSettings()

    async def _run_blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def events(self, audio: bytes, request: TranscribeRequest) -> AsyncIterator[dict[str, Any]]:
        """Yields `segments` events (one per window, in order) and finally one `done` event.

        With diarization, speaker turns are computed alongside decoding; segments then carry
        speakers (and are split where the speaker changes), so they are sent once turns are known.
        """
        diarize_only = request.task == "diarize"
        diarizing = request.diarize or diarize_only
        if diarizing and self._diarize is None:
            raise InvalidRequestError("Speaker diarization is not enabled on this server.", param="diarize")
        if request.known and not diarizing:
            raise InvalidRequestError("Known speakers need diarization (response_format=diarized_json).",
                                      param="known_speaker_names")
        check_voices(request.known)
        checked = replace(request, task="transcribe") if diarize_only else request
        options = replace(validate(checked, self.model), beam_size=self.settings.beam_size,
                          word_timestamps=request.word_timestamps or diarizing,
                          timestamps=request.timestamps or diarizing)
        decoded = await self._run_blocking(decode_audio, audio, self.settings.max_audio_seconds)
        samples: np.ndarray = decoded.samples
        duration = len(samples) / SAMPLE_RATE
        if duration < MIN_SECONDS:
            raise AudioTooShortError(
                f"Audio file is too short. Minimum audio length is {MIN_SECONDS} seconds."
            )
        turns_task = None
        if diarizing:
            references = await self._run_blocking(reference_samples, request.known)
            turns_task = asyncio.ensure_future(self._speaker_turns(samples, request, references))
        try:
            if diarize_only:
                turns = await turns_task  # type: ignore[misc]
                yield {"type": "done", "task": "diarize", "language": None, "duration": round(duration, 3),
                       "text": "", "segments": [], "speakers": turns}
                return
            windows: list[Window] = await self._run_blocking(plan_windows, samples, request.vad)
            segments: list[dict[str, Any]] = []
            language = options.language
            async for window, result, progress in self._decode_windows(samples, windows, options):
                if language is None:
                    language = result.language
                new = [_segment_dict(len(segments) + i, window, s) for i, s in enumerate(result.segments)]
                segments.extend(new)
                if not diarizing:
                    yield {"type": "segments", "language": language, "progress": progress, "segments": new}
            done: dict[str, Any] = {"type": "done", "task": options.task, "language": language or "en",
                                    "duration": round(duration, 3)}
            if turns_task is not None:
                turns = await turns_task
                segments = split_by_speaker(segments, turns)
                if not request.word_timestamps:
                    segments = [{k: v for k, v in s.items() if k != "words"} for s in segments]
                done["speakers"] = turns
                yield {"type": "segments", "language": language, "progress": 1.0, "segments": segments}
        finally:
            if turns_task is not None and not turns_task.done():
                turns_task.cancel()
        yield {**done, "text": "".join(s["text"] for s in segments).strip(), "segments": segments}

    async def voice(self, audio: bytes) -> AsyncIterator[dict[str, Any]]:
        """The speaker embedding of a clip of one voice: one `done` event."""
        if self._embed is None:
            raise InvalidRequestError("Speaker diarization is not enabled on this server.", param="diarize")
        samples = await self._run_blocking(voice_samples, audio)
        vector, model = await self._embed(samples)
        yield {"type": "done", "task": "embed", "duration": round(len(samples) / SAMPLE_RATE, 3),
               "embedding": [round(float(v), 6) for v in vector], "embedding_model": model}

    async def _speaker_turns(
        self, samples: np.ndarray, request: TranscribeRequest, references: list[np.ndarray]
    ) -> list[dict[str, Any]]:
        assert self._diarize is not None
        known: list[KnownSpeaker] = []
        if request.known:
            if self._embed is None:
                raise InvalidRequestError("Known speakers are not supported here.", param="known_speaker_names")
            known = await known_speakers(request.known, references, self._embed)
        return await self._diarize(samples, request.speakers, known)

    async def align(
        self, audio: bytes, transcript: list[dict[str, Any]], language: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Word timings for a given transcript (`[{start, end, text}]`): one `done` event."""
        given = _given_segments(transcript)
        options = replace(validate(TranscribeRequest(language=language), self.model), word_timestamps=True)
        decoded = await self._run_blocking(decode_audio, audio, self.settings.max_audio_seconds)
        samples: np.ndarray = decoded.samples
        duration = len(samples) / SAMPLE_RATE
        if duration < MIN_SECONDS:
            raise AudioTooShortError(f"Audio file is too short. Minimum audio length is {MIN_SECONDS} seconds.")
        segments: list[dict[str, Any]] = []
        languages: list[str] = []
        for window, pieces in _pack_given(given, len(samples)):
            chunk = samples[window.start : window.end]
            features, frames = await self._run_blocking(window_features, chunk, self.model.n_mels)
            relative = tuple((text, max(0.0, s - window.offset), min(window.duration, e - window.offset))
                             for text, s, e in pieces)
            result = await self._decode(WindowJob(features, frames, replace(options, given=relative)))
            languages.append(result.language)
            segments.extend(_segment_dict(len(segments) + i, window, s) for i, s in enumerate(result.segments))
        yield {
            "type": "done",
            "task": "align",
            "language": options.language or (max(set(languages), key=languages.count) if languages else "en"),
            "duration": round(duration, 3),
            "text": "".join(s["text"] for s in segments).strip(),
            "segments": segments,
        }

    async def _decode_windows(
        self, samples: np.ndarray, windows: list[Window], options: DecodeOptions
    ) -> AsyncIterator[tuple[Window, WindowResult, float]]:
        """Results in audio order with the fraction of windows done (resumed parts count with theirs)."""
        if not windows:
            return
        gate = asyncio.Semaphore(self.settings.max_windows_in_flight)

        async def run(window: Window, window_options: DecodeOptions) -> list[tuple[Window, WindowResult]]:
            """The window's result, then those of its remainder while Whisper stops early."""
            results = []
            for _ in range(MAX_RESUMES + 1):
                async with gate:
                    chunk = samples[window.start : window.end]
                    features, frames = await self._run_blocking(window_features, chunk, self.model.n_mels)
                    result = await self._decode(WindowJob(features, frames, window_options))
                results.append((window, result))
                if result.resume_at is None:
                    break
                rest = Window(window.start + int(result.resume_at * SAMPLE_RATE), window.end)
                if not await self._run_blocking(has_speech, samples[rest.start : rest.end]):
                    break  # Whisper stopped before silence: nothing was left out
                window, window_options = rest, replace(window_options, language=result.language)
            return results

        def progressed(
            index: int, items: list[tuple[Window, WindowResult]]
        ) -> list[tuple[Window, WindowResult, float]]:
            done = [round(index / len(windows), 4)] * (len(items) - 1) + [round((index + 1) / len(windows), 4)]
            return [(w, r, p) for (w, r), p in zip(items, done, strict=True)]

        first = await run(windows[0], options)
        for item in progressed(0, first):
            yield item
        if options.language is None and self.model.multilingual:
            # One language per request, detected on the first window, as OpenAI's Whisper does.
            options = replace(options, language=first[0][1].language)
        tasks = [asyncio.ensure_future(run(w, options)) for w in windows[1:]]
        try:
            for index, task in enumerate(tasks, start=1):
                for item in progressed(index, await task):
                    yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


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


def _segment_dict(index: int, window: Window, segment: Segment) -> dict[str, Any]:
    offset = window.offset
    data: dict[str, Any] = {
        "id": index,
        "seek": window.start // 160,
        "start": round(offset + segment.start, 3),
        "end": round(offset + segment.end, 3),
        "text": segment.text,
        "tokens": segment.tokens,
        "temperature": segment.temperature,
        "avg_logprob": segment.avg_logprob,
        "compression_ratio": segment.compression_ratio,
        "no_speech_prob": segment.no_speech_prob,
    }
    if segment.words:
        data["words"] = [
            {
                "word": w.word,
                "start": round(offset + w.start, 3),
                "end": round(offset + w.end, 3),
                "probability": round(w.probability, 4),
                "tokens": w.tokens,
            }
            for w in segment.words
        ]
    return data
