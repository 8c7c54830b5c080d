"""Fuzzing the multipart parser and the form validation behind it (`request_bodies`, `openai.audio_form`).

Bodies shaped like the openai SDK's, Open WebUI's and curl's are mutated (bit flips, cut and
repeated ranges, broken boundaries and headers, odd charsets) and streamed in random chunk sizes
through a real Litestar `Request` into `read_multipart`, then `parse_audio_form`. Every body must
parse or be refused with an `APIError` of status 400 or 413, and quickly (no super-linear blow-up).

`make test` runs it briefly; `FUZZ_SECONDS=600` runs it longer (`make fuzz`); `FUZZ_SEED` replays.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from litestar import Request

from frontend.errors import APIError
from frontend.openai.audio_form import parse_audio_form
from frontend.request_bodies import read_multipart
from harness.profiles import fuzz_seconds
from tests.fuzz.mutate import mutate

MAX_FILE_BYTES = 4096
CASE_LIMIT_S = 3.0  # parsing a body of a few KB takes about a millisecond
CHARSETS = ("utf-8", "latin-1", "utf-16", "punycode", "idna", "rot13", "base64", "utf-7", "nope", "")
FIELDS = (("model", "whisper-1"), ("language", "en"), ("response_format", "verbose_json"), ("temperature", "0.2"),
          ("timestamp_granularities[]", "word"), ("timestamp_granularities[]", "segment"), ("stream", "false"),
          ("chunking_strategy[type]", "server_vad"), ("chunking_strategy[threshold]", "0.5"), ("prompt", "Hello"),
          ("include[]", "logprobs"), ("known_speaker_names[]", "agent"),
          ("known_speaker_references[]", "data:audio/wav;base64,UklGRg=="), ("diarize", "true"))


class _Handler:
    """What `Request.stream()` asks of the route handler: the body size limit (none here)."""

    def resolve_request_max_body_size(self) -> int | None:
        return None


def request(body: bytes, content_type: bytes, chunks: list[int]) -> Request[Any, Any, Any]:
    pieces = [body[start:end] for start, end in zip([0, *chunks], [*chunks, len(body)], strict=True)]

    async def receive() -> dict[str, Any]:
        if pieces:
            piece = pieces.pop(0)
            return {"type": "http.request", "body": piece, "more_body": bool(pieces)}
        return {"type": "http.disconnect"}

    scope = {"type": "http", "method": "POST", "path": "/", "raw_path": b"/", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", content_type)], "state": {}, "app": None, "route_handler": _Handler()}
    return Request(scope, receive)  # type: ignore[arg-type]


def part(boundary: str, name: str, value: bytes, filename: str | None = None, headers: str = "") -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    return f"--{boundary}\r\nContent-Disposition: {disposition}\r\n{headers}\r\n".encode() + value + b"\r\n"


def seed_body(rng: random.Random) -> tuple[bytes, str]:
    boundary = rng.choice(["xyz", "----WebKitFormBoundary7MA4YWxkTrZu0gW", "3871a91d8dff5948541f65cc75e64d0d", "b"])
    fields = rng.sample(FIELDS, rng.randint(0, len(FIELDS)))
    parts = []
    for name, value in fields:
        headers = f"Content-Type: text/plain; charset={rng.choice(CHARSETS)}\r\n" if rng.random() < 0.3 else ""
        parts.append(part(boundary, name, value.encode(), headers=headers))
    audio = b"RIFF\x24\x00\x00\x00WAVEfmt " + rng.randbytes(rng.randint(0, MAX_FILE_BYTES + 64))
    parts.insert(rng.randint(0, len(parts)), part(boundary, "file", audio, rng.choice(["a.wav", "", "upload"]),
                                                   "Content-Type: application/octet-stream\r\n"))
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), boundary


def _repeat_header_line(rng: random.Random, data: bytearray) -> None:
    at = rng.randrange(len(data))
    data[at:at] = b"X-Fuzz: " + b"a" * rng.choice([10, 5000]) + b"\r\n"


def _boundary_noise(rng: random.Random, data: bytearray) -> None:
    at = rng.randrange(len(data))
    data[at:at] = rng.choice([b"\r\n--xyz\r\n", b"--xyz--", b"\r\n\r\n",
                              b'Content-Disposition: form-data; name="file"'])


async def parse(body: bytes, content_type: bytes, chunks: list[int]) -> None:
    fields, files = await read_multipart(request(body, content_type, chunks), MAX_FILE_BYTES)
    parse_audio_form(fields, files, "transcribe")


async def check(body: bytes, content_type: bytes, chunks: list[int],
                run: Callable[[bytes, bytes, list[int]], Awaitable[None]] = parse) -> str | None:
    """None when the body parsed or was refused properly; else what went wrong."""
    for _ in range(2):  # a slow case is timed twice: the machine may just have been busy
        started = time.monotonic()
        try:
            await run(body, content_type, chunks)
        except APIError as error:
            if error.status not in (400, 413) or not error.message:
                return f"APIError {error.status}: {error.message}"
        except Exception as exc:  # anything else is what we are looking for
            return f"{type(exc).__name__}: {exc}"
        elapsed = time.monotonic() - started
        if elapsed <= CASE_LIMIT_S:
            return None
    return f"took {elapsed:.1f} s (twice)"


def content_type(rng: random.Random, boundary: str) -> bytes:
    choice = rng.random()
    if choice < 0.85:
        return f"multipart/form-data; boundary={boundary}".encode()
    if choice < 0.9:
        return f'multipart/form-data; boundary="{boundary}"; charset=utf-8'.encode()
    return rng.choice([b"multipart/form-data", b"multipart/form-data; boundary=", b"multipart/form-data; boundary=\xff",
                       b"text/plain", b"multipart/form-data; boundary=" + rng.randbytes(8)])


async def test_the_seed_bodies_parse() -> None:
    rng = random.Random(1)
    for _ in range(20):
        body, boundary = seed_body(rng)
        assert await check(body, f"multipart/form-data; boundary={boundary}".encode(), []) is None


async def test_mutated_multipart_parses_or_is_refused_with_a_4xx(tmp_path: Path) -> None:
    seed = int(os.environ.get("FUZZ_SEED") or time.time_ns() % 2**32)
    rng = random.Random(seed)
    deadline = time.monotonic() + fuzz_seconds(8.0)
    failures: list[str] = []
    cases = 0
    while time.monotonic() < deadline and len(failures) < 5:
        body, boundary = seed_body(rng)
        if rng.random() < 0.9:
            body = mutate(rng, body, extra=[_repeat_header_line, _boundary_noise])
        cuts = sorted(rng.sample(range(1, len(body)), min(len(body) - 1, rng.randint(0, 6)))) if len(body) > 1 else []
        problem = await check(body, content_type(rng, boundary), cuts)
        if problem is not None:
            path = tmp_path / f"case-{cases}.bin"
            path.write_bytes(body)
            failures.append(f"{problem} (body saved as {path})")
        cases += 1
    print(f"multipart fuzz: seed {seed}, {cases} cases")
    assert not failures, f"FUZZ_SEED={seed}:\n" + "\n".join(failures)
