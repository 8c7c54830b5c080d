"""Reading request bodies: multipart forms, form fields, JSON objects, size-limited bodies, base64 audio.

A multipart body is parsed as it streams in (chunked uploads without Content-Length work), into memory:
no temporary files. Field names follow the SDKs' encoding: lists as repeated `name[]`, objects as
`name[key]`; the un-bracketed forms and JSON strings are accepted too. Every failure is a 400 (413 past
a size limit) naming the parameter.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Request
from multipart import MultipartSegment, ParserError, ParserLimitReached, PushMultipartParser

from frontend.errors import bad_request, too_large

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

    def speaker_count(self, name: str) -> int | None:
        """A speaker count hint: a whole number up to 64; 0 or absent is none."""
        value = self.number(name, 0, 0, 64)
        if value != int(value):
            raise bad_request(f"'{name}' must be a whole number.", param=name)
        return int(value) or None

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


class NotADataUrlError(ValueError):
    pass


def data_url_bytes(value: str, bare: bool = False) -> bytes:
    """The bytes of a base64 `data:` URL (`data:audio/wav;base64,...`), or with `bare` of plain base64 too.

    Raises NotADataUrlError, or binascii.Error (a ValueError) for data that is not base64.
    """
    match = _DATA_URL.fullmatch(value.strip())
    if match is None and not bare:
        raise NotADataUrlError("not a base64 data URL")
    data = match["data"] if match is not None else value
    return base64.b64decode(re.sub(r"\s+", "", data), validate=True)


def data_url_audio(url: str, param: str) -> bytes:
    """A voice clip given as a data URL (`data:audio/wav;base64,...`)."""
    try:
        data = data_url_bytes(url)
    except NotADataUrlError:
        raise bad_request("Each known speaker reference must be a data URL such as 'data:audio/wav;base64,...'.",
                          param=param) from None
    except ValueError:
        raise bad_request("A known speaker reference is not valid base64.", param=param) from None
    if not data:
        raise bad_request("A known speaker reference is empty.", param=param)
    return data


async def read_body(request: Request[Any, Any, Any], limit: int, param: str) -> bytes:
    """The body, refused with 413 past `limit` (for routes where Litestar's own limit is off)."""
    if (request.content_length or 0) > limit:
        raise too_large(limit, param)
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise too_large(limit, param)
    return bytes(body)


async def read_json_object(request: Request[Any, Any, Any]) -> dict[str, Any]:
    try:
        body = msgspec.json.decode(await request.body())
    except msgspec.DecodeError as exc:
        raise bad_request(f"The body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise bad_request("The body must be a JSON object.", code="invalid_json")
    return body
