"""Multipart parsing and validation of OpenAI's audio request forms.

The body is parsed as it streams in (chunked uploads without Content-Length work), into memory:
no temporary files. Field names follow the SDKs' encoding: lists as repeated `name[]`, objects as
`name[key]`; the un-bracketed forms and JSON strings are accepted too.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from litestar import Request
from multipart import MultipartSegment, ParserError, ParserLimitReached, PushMultipartParser

from frontend.errors import APIError, bad_request, too_large

RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt", "diarized_json")
GRANULARITIES = ("word", "segment")
MAX_FIELD_BYTES = 64 * 1024
# known_speaker_references[] carry whole clips as data URLs: 30 s of 48 kHz stereo 16-bit WAV in base64.
MAX_REFERENCE_FIELD_BYTES = 8 * 1024 * 1024
REFERENCE_FIELDS = ("known_speaker_references", "known_speaker_references[]")
_DATA_URL = re.compile(r"data:(?P<type>[\w.+/-]*)(?P<params>(?:;[\w.+-]+=[^;,]*)*);base64,(?P<data>.*)", re.S)
MAX_PARTS = 64
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}


@dataclass(frozen=True)
class UploadedFile:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class AudioForm:
    """A validated transcription or translation request."""

    file: UploadedFile
    model: str
    task: str
    language: str | None
    prompt: str | None
    response_format: str
    temperature: float
    timestamp_granularities: tuple[str, ...]
    stream: bool
    diarize: bool = False
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None
    # Names of known speakers: the first ones with the reference clips, in order; the rest name speakers
    # stored with /v1/speakers.
    known_speaker_names: tuple[str, ...] = ()
    known_speaker_references: tuple[bytes, ...] = ()

    @property
    def word_timestamps(self) -> bool:
        return self.response_format == "verbose_json" and "word" in self.timestamp_granularities


async def read_multipart(
    request: Request[Any, Any, Any], max_file_bytes: int
) -> tuple[dict[str, list[str]], dict[str, UploadedFile]]:
    media_type, options = request.content_type
    boundary = options.get("boundary")
    if media_type != "multipart/form-data" or not boundary:
        raise bad_request("The request must be multipart/form-data with a boundary.", code="invalid_request")
    fields: dict[str, list[str]] = defaultdict(list)
    files: dict[str, UploadedFile] = {}
    segment: MultipartSegment | None = None
    buffer = bytearray()
    try:
        with PushMultipartParser(boundary.encode(), max_segment_count=MAX_PARTS) as parser:
            async for chunk in request.stream():
                for event in parser.parse(chunk):
                    if isinstance(event, MultipartSegment):
                        segment, buffer = event, bytearray()
                    elif event is not None:
                        buffer.extend(event)
                        _check_size(segment, buffer, max_file_bytes)
                    elif segment is not None:
                        _store(segment, buffer, fields, files)
                        segment = None
                if parser.closed:
                    break
            if not parser.closed:
                raise bad_request("The multipart body ended before its closing boundary.", code="invalid_request")
    except ParserLimitReached as exc:
        if "segment count" in str(exc):
            raise bad_request(f"Too many form fields (at most {MAX_PARTS}).", code="invalid_request") from exc
        raise bad_request(f"Malformed multipart body: {exc}.", code="invalid_request") from exc
    except ParserError as exc:
        raise bad_request(f"Malformed multipart body: {exc}", code="invalid_request") from exc
    return dict(fields), files


def _check_size(segment: MultipartSegment | None, buffer: bytearray, max_file_bytes: int) -> None:
    if segment is not None and segment.filename is not None:
        if len(buffer) > max_file_bytes:
            raise too_large(max_file_bytes)
        return
    name = segment.name if segment is not None else "field"
    limit = MAX_REFERENCE_FIELD_BYTES if name in REFERENCE_FIELDS else MAX_FIELD_BYTES
    if len(buffer) > limit:
        raise bad_request(f"The form field '{name}' is longer than {limit} bytes.", param=name)


def _store(
    segment: MultipartSegment,
    buffer: bytearray,
    fields: dict[str, list[str]],
    files: dict[str, UploadedFile],
) -> None:
    if segment.filename is not None or segment.name == "file":
        if segment.name in files:
            raise bad_request(f"The file part '{segment.name}' was given more than once.", param=segment.name)
        files[segment.name] = UploadedFile(
            filename=segment.filename or "upload",
            content_type=segment.content_type or "application/octet-stream",
            data=bytes(buffer),
        )
        return
    charset = segment.charset or "utf-8"
    try:
        fields[segment.name].append(buffer.decode(charset))
    # UnicodeError, not only UnicodeDecodeError: codecs such as punycode raise the base class.
    except (UnicodeError, LookupError) as exc:
        raise bad_request(f"The form field '{segment.name}' is not valid text in charset '{charset[:40]}'.",
                          param=segment.name) from exc


def _json_field(value: str, name: str, what: str) -> Any:
    try:
        return json.loads(value)
    # RecursionError: a few KB of "[[[[..." nest deeper than the parser's recursion limit.
    except (json.JSONDecodeError, RecursionError):
        raise bad_request(f"'{name}' is not {what}.", param=name) from None


class FormReader:
    """Typed access to the parsed fields, each failure a 400 naming the parameter."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        self.fields = fields

    def scalar(self, name: str) -> str | None:
        values = self.fields.get(name, [])
        if len(set(values)) > 1:
            raise bad_request(f"The parameter '{name}' was given more than once with different values.",
                              param=name)
        return values[0] if values else None

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self.scalar(name)
        return default if value is None or not value.strip() else value

    def boolean(self, name: str, default: bool = False) -> bool:
        value = self.scalar(name)
        if value is None:
            return default
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise bad_request(f"'{value}' is not a valid boolean for '{name}'; use true or false.", param=name)

    def number(self, name: str, default: float, low: float, high: float) -> float:
        value = self.scalar(name)
        if value is None or not value.strip():
            return default
        try:
            number = float(value)
        except ValueError:
            raise bad_request(f"'{value}' is not a number for '{name}'.", param=name) from None
        if math.isnan(number) or not low <= number <= high:
            raise bad_request(f"'{name}' must be between {low:g} and {high:g}.", param=name)
        return number

    def array(self, name: str) -> list[str]:
        """`name[]` repeated, `name` repeated, a JSON array, or a comma-separated string."""
        return self._values(name, split_commas=True)

    def items(self, name: str) -> list[str]:
        """`name[]` or `name` repeated, or a JSON array; values may contain commas."""
        return self._values(name, split_commas=False)

    def _values(self, name: str, split_commas: bool) -> list[str]:
        values: list[str] = []
        for raw in self.fields.get(f"{name}[]", []) + self.fields.get(name, []):
            stripped = raw.strip()
            if stripped.startswith("["):
                parsed = _json_field(stripped, name, "a valid JSON array")
                values.extend(str(v) for v in (parsed if isinstance(parsed, list) else [parsed]))
            elif split_commas:
                values.extend(v.strip() for v in stripped.split(",") if v.strip())
            elif stripped:
                values.append(stripped)
        return values

    def object(self, name: str) -> dict[str, str] | str | None:
        """`name=auto`, `name={"type": ...}` or bracketed sub-fields `name[type]=...`."""
        prefix = f"{name}["
        nested = {k[len(prefix):-1]: v[-1] for k, v in self.fields.items() if k.startswith(prefix) and k.endswith("]")}
        value = self.scalar(name)
        if value is not None and value.strip().startswith("{"):
            parsed = _json_field(value, name, "valid JSON")
            if not isinstance(parsed, dict):
                raise bad_request(f"'{name}' must be an object.", param=name)
            nested.update({str(k): str(v) for k, v in parsed.items()})
        elif value is not None and value.strip():
            return value.strip()
        return nested or None


def parse_audio_form(
    fields: dict[str, list[str]], files: dict[str, UploadedFile], task: str
) -> AudioForm:
    upload = files.get("file")
    if upload is None:
        raise bad_request(
            "You must provide a 'file' part with the audio.", param="file", code="missing_required_parameter"
        )
    reader = FormReader(fields)
    model = reader.text("model")
    if model is None:
        raise bad_request("You must provide a model parameter.", param="model", code="missing_required_parameter")
    response_format = (reader.text("response_format") or "json").strip().lower()
    allowed = RESPONSE_FORMATS if task == "transcribe" else RESPONSE_FORMATS[:-1]
    if response_format not in allowed:
        raise bad_request(
            f"Unsupported response_format '{response_format}'. Use one of: {', '.join(allowed)}.",
            param="response_format",
            code="unsupported_value",
        )
    granularities = tuple(g.lower() for g in reader.array("timestamp_granularities")) or ("segment",)
    for granularity in granularities:
        if granularity not in GRANULARITIES:
            raise bad_request(
                f"Unsupported timestamp granularity '{granularity}'. Use 'word' and/or 'segment'.",
                param="timestamp_granularities",
                code="unsupported_value",
            )
    _check_chunking_strategy(reader)
    for item in reader.array("include"):
        if item != "logprobs":
            raise bad_request(f"Unsupported include value '{item}'.", param="include", code="unsupported_value")
    diarize = task == "transcribe" and (response_format == "diarized_json" or reader.boolean("diarize")
                                        or model.strip().endswith("-diarize"))
    names, references = _known_speakers(reader, diarize)
    language = reader.text("language")
    languages = reader.array("languages")
    if language is None and len(languages) == 1:
        language = languages[0]
    return AudioForm(
        file=upload,
        model=model.strip(),
        task=task,
        language=language.strip() if language and task == "transcribe" else None,
        prompt=_prompt(reader),
        response_format=response_format,
        temperature=reader.number("temperature", 0.0, 0.0, 1.0),
        timestamp_granularities=granularities,
        stream=reader.boolean("stream"),
        diarize=diarize,
        known_speaker_names=names,
        known_speaker_references=references,
        num_speakers=speaker_count(reader, "num_speakers"),
        min_speakers=speaker_count(reader, "min_speakers"),
        max_speakers=speaker_count(reader, "max_speakers"),
    )


def speaker_count(reader: FormReader, name: str) -> int | None:
    value = reader.number(name, 0, 0, 64)
    if value != int(value):
        raise bad_request(f"'{name}' must be a whole number.", param=name)
    return int(value) or None


def _known_speakers(reader: FormReader, diarize: bool) -> tuple[tuple[str, ...], tuple[bytes, ...]]:
    names = tuple(name.strip() for name in reader.items("known_speaker_names"))
    references = tuple(data_url_audio(url, "known_speaker_references")
                       for url in reader.items("known_speaker_references"))
    if not names and not references:
        return (), ()
    if not diarize:
        raise bad_request("Known speakers need diarization: use response_format=diarized_json.",
                          param="known_speaker_names")
    if len(references) > len(names):
        raise bad_request(f"{len(references)} known_speaker_references for {len(names)} known_speaker_names: "
                          "give a name for every reference.", param="known_speaker_names")
    return names, references


def data_url_audio(url: str, param: str) -> bytes:
    """The bytes of a base64 `data:` URL (`data:audio/wav;base64,...`)."""
    match = _DATA_URL.fullmatch(url.strip())
    if match is None:
        raise bad_request("Each known speaker reference must be a data URL such as 'data:audio/wav;base64,...'.",
                          param=param)
    try:
        data = base64.b64decode(re.sub(r"\s+", "", match["data"]), validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("A known speaker reference is not valid base64.", param=param) from None
    if not data:
        raise bad_request("A known speaker reference is empty.", param=param)
    return data


def _prompt(reader: FormReader) -> str | None:
    prompt = reader.text("prompt")
    keywords = reader.array("keywords")
    if keywords:
        # Whisper has no keyword input; the prompt is where vocabulary hints go.
        prompt = " ".join(p for p in (prompt, ", ".join(keywords) + ".") if p)
    return prompt


def _check_chunking_strategy(reader: FormReader) -> None:
    strategy = reader.object("chunking_strategy")
    if strategy is None or strategy == "auto":
        return
    if isinstance(strategy, str) or strategy.get("type") != "server_vad":
        raise bad_request(
            "chunking_strategy must be 'auto' or an object with type 'server_vad'.",
            param="chunking_strategy",
            code="unsupported_value",
        )
    for key in ("prefix_padding_ms", "silence_duration_ms", "threshold"):
        if key in strategy:
            try:
                float(strategy[key])
            except ValueError:
                raise bad_request(f"chunking_strategy[{key}] must be a number.",
                                  param="chunking_strategy") from None


__all__ = ["APIError", "AudioForm", "UploadedFile", "parse_audio_form", "read_multipart"]
