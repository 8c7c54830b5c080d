"""`POST /v1/audio/speech/timestamps` (speaches' VAD endpoint): the form, and speech regions in milliseconds.

Regions come from the entry model's `TASK=vad`: the same Silero VAD the transcription pipeline cuts windows
with, on Triton, with the client's parameters (speaches' names and defaults).
"""

from __future__ import annotations

from dataclasses import dataclass

from frontend.errors import bad_request
from frontend.openai.schemas import SpeechTimestamp
from frontend.request_bodies import FormReader, UploadedFile
from whisper_triton.contract import DoneEvent, TranscriptionRequest, VadParameters

_DEFAULTS = VadParameters()
_LONGEST_MS = 86_400_000  # a day: anything longer is a mistake


@dataclass(frozen=True)
class SpeechForm:
    file: UploadedFile
    request: TranscriptionRequest


def parse_speech_form(fields: dict[str, list[str]], files: dict[str, UploadedFile]) -> SpeechForm:
    """The upload and its VAD parameters; `model` is accepted and ignored (one VAD: Silero v6)."""
    upload = files.get("file")
    if upload is None:
        raise bad_request(
            "You must provide a 'file' part with the audio.", param="file", code="missing_required_parameter"
        )
    reader = FormReader(fields)
    threshold = reader.number("threshold", _DEFAULTS.threshold, 0.0, 1.0)
    negative = reader.number("neg_threshold", -1.0, 0.0, 1.0) if reader.text("neg_threshold") else None
    longest = reader.number("max_speech_duration_s", 0.0, 0.0, _LONGEST_MS / 1000) or None
    if reader.text("max_speech_duration_s") and longest is None:
        raise bad_request("'max_speech_duration_s' must be more than 0.", param="max_speech_duration_s")
    parameters = VadParameters(
        threshold=threshold,
        neg_threshold=negative,
        min_speech_duration_ms=_milliseconds(reader, "min_speech_duration_ms", _DEFAULTS.min_speech_duration_ms),
        max_speech_duration_s=longest,
        min_silence_duration_ms=_milliseconds(reader, "min_silence_duration_ms", _DEFAULTS.min_silence_duration_ms),
        speech_pad_ms=_milliseconds(reader, "speech_pad_ms", _DEFAULTS.speech_pad_ms),
    )
    return SpeechForm(upload, TranscriptionRequest(task="vad", vad_options=parameters))


def _milliseconds(reader: FormReader, name: str, default: int) -> int:
    value = reader.number(name, default, 0, _LONGEST_MS)
    if value != int(value):
        raise bad_request(f"'{name}' must be a whole number of milliseconds.", param=name)
    return int(value)


def speech_timestamps(done: DoneEvent) -> list[SpeechTimestamp]:
    return [SpeechTimestamp(start=round(span.start * 1000), end=round(span.end * 1000)) for span in done.speech or []]
