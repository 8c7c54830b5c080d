"""The bad-input corpus of issue 7, all in flight at once against a real served stack.

Every case goes over HTTP to `/v1/audio/transcriptions` while good requests (the JFK clip) run
beside them. Each bad case must get its 4xx in OpenAI's error shape (or a correct transcript where
the input is valid after all); the good requests must all succeed; the frontend and Triton must
still be up afterwards, Triton never restarted. The corpus is generated here (FFmpeg, numpy): no
binary file is committed.

The requests run once, in the module fixture; each case is then its own test on the stored answer.
"""

from __future__ import annotations

import asyncio
import json
import struct
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest

from harness.assets import encoded, jfk_wav, video_without_audio, wav_bytes
from harness.stack import Served
from tests.e2e.test_http_errors import assert_openai_error

PATH = "/v1/audio/transcriptions"
CONCURRENCY = 4  # bad requests in flight at once (beside the good ones)
JFK_WORDS = "fellow americans"


Body = Callable[[], tuple[bytes, str]]  # (body, content type), built when the corpus runs


@dataclass(frozen=True)
class Case:
    """A request body and what it must get: a status with an error code, or a transcript."""

    id: str
    body: Body
    status: int = 400
    code: str | None = None
    param: str | None = None
    text: str | None = None  # for 200: a phrase the transcript must contain ("" = must be empty)


def multipart(fields: list[tuple[str, str | bytes]], file: tuple[str, bytes] | None = None,
              boundary: str = "") -> tuple[bytes, str]:
    boundary = boundary or uuid.uuid4().hex
    parts = []
    for name, value in fields:
        data = value.encode() if isinstance(value, str) else value
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + data + b"\r\n")
    if file is not None:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file[0]}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + file[1] + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def audio(case_id: str, name: str, data: Callable[[], bytes], code: str = "invalid_audio",
          text: str | None = None) -> Case:
    """A file part (and model): refused as audio, or (text given) transcribed."""
    body: Body = lambda: multipart([("model", "whisper-1")], (name, data()))  # noqa: E731
    if text is not None:
        return Case(case_id, body, 200, text=text)
    return Case(case_id, body, 400, code, "file")


def fields(case_id: str, extra: list[tuple[str, str | bytes]], param: str | None, code: str = "invalid_value",
           text: str | None = None) -> Case:
    """The short JFK clip with extra form fields: refused naming `param`, or (text given) transcribed."""
    body: Body = lambda: multipart([("model", "whisper-1"), *extra], ("a.wav", short_jfk()))  # noqa: E731
    if text is not None:
        return Case(case_id, body, 200, text=text)
    return Case(case_id, body, 400, code, param)


def raw(case_id: str, body: bytes | Callable[[], bytes], content_type: str = "multipart/form-data; boundary=xyz",
        code: str = "invalid_request", param: str | None = None) -> Case:
    """A body as given: malformed multipart and the like."""
    return Case(case_id, lambda: (body() if callable(body) else body, content_type), 400, code, param)


# --------------------------------------------------------------------------------------------------
# Inputs


def ffmpeg(*args: str) -> bytes:
    return subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
                          capture_output=True, check=True).stdout


def short_jfk() -> bytes:
    """The first 4 s of JFK ("And so my fellow Americans..."): quick to transcribe."""
    return jfk_wav().read_bytes()[: 44 + 4 * 32_000]


def digital_silence_flac(hours: float) -> bytes:
    """Hours of zeros at 8 kHz in FLAC's largest blocks: about 14 KB per hour."""
    return ffmpeg("-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", str(hours * 3600), "-c:a", "flac",
                  "-frame_size", "65535", "-f", "flac", "-")


def eight_channels_192k() -> bytes:
    """4.5 s of JFK as 8-channel 16-bit 192 kHz WAV (13.8 MB: under the upload limit)."""
    pan = "pan=7.1|" + "|".join(f"c{i}=c0" for i in range(8))
    return ffmpeg("-i", str(jfk_wav()), "-t", "4.5", "-af", f"aresample=192000,{pan}", "-c:a", "pcm_s16le",
                  "-f", "wav", "-")


def float_wav_with_nan_and_inf() -> bytes:
    """JFK as IEEE float WAV, with 0.1 s of NaN at the start and +-Inf samples every second."""
    samples = np.frombuffer(ffmpeg("-i", str(jfk_wav()), "-f", "f32le", "-ac", "1", "-"), dtype="<f4").copy()
    samples[:1600] = np.nan
    samples[16_000::16_000] = np.inf
    samples[24_000::16_000] = -np.inf
    data = samples.tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, 16_000, 64_000, 4, 32)
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data"
            + struct.pack("<I", len(data)) + data)


def png() -> bytes:
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pixels = zlib.compress(b"\x00\xff\x00\x00" * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 1, 8, 2, 0, 0, 0)) + chunk(
        b"IDAT", pixels) + chunk(b"IEND", b"")


def truncated(name: str, fraction: float | None = None, size: int = 100) -> Callable[[], bytes]:
    def make() -> bytes:
        data = encoded(name).read_bytes()
        return data[: int(len(data) * fraction)] if fraction else data[:size]

    return make


def random_bytes(size: int) -> bytes:
    return np.random.default_rng(7).integers(0, 256, size, dtype=np.uint8).tobytes()


TONE_50MS = (np.sin(np.arange(800) / 5) * 3000).astype("<i2")
PUNYCODE_FIELD = (b'--xyz\r\nContent-Disposition: form-data; name="prompt"\r\n'
                  b"Content-Type: text/plain; charset=punycode\r\n\r\n..\r\n--xyz--\r\n")
CASES = [
    # Files that are not (enough) audio
    audio("empty-file", "a.wav", lambda: b""),
    audio("random-bytes", "a.wav", lambda: random_bytes(20_000)),
    audio("text-named-wav", "notes.wav", lambda: b"Meeting notes: nothing to transcribe here.\n" * 50),
    audio("png-named-wav", "image.wav", png),
    audio("jpeg-named-mp3", "photo.mp3", lambda: b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(4000)),
    audio("video-without-audio", "clip.mp4", lambda: video_without_audio().read_bytes()),
    audio("0.05-seconds", "short.wav", lambda: wav_bytes(TONE_50MS), code="audio_too_short"),
    audio("5-hours-of-silence-in-40kb", "silence.flac", lambda: digital_silence_flac(5)),
    # Broken containers: cut inside the header, or half way through the audio (what is there is valid)
    *(audio(f"truncated-{name}-header", f"a.{name}", truncated(name)) for name in ("mp3", "flac", "ogg")),
    *(audio(f"truncated-{name}-half", f"a.{name}", truncated(name, 0.5), text=JFK_WORDS)
      for name in ("mp3", "flac", "ogg")),
    # Strange but valid: a correct transcript
    audio("1-hour-of-silence-in-14kb", "silence.flac", lambda: digital_silence_flac(1), text=""),
    audio("8-channels-192khz", "multi.wav", eight_channels_192k, text=JFK_WORDS),
    audio("float-wav-nan-inf", "float.wav", float_wav_with_nan_and_inf, text=JFK_WORDS),
    fields("prompt-longer-than-context", [("prompt", "vocabulary " * 5000)], None, text=JFK_WORDS),
    # Wrong and conflicting fields
    fields("unknown-response-format", [("response_format", "docx")], "response_format", "unsupported_value"),
    fields("negative-temperature", [("temperature", "-0.5")], "temperature"),
    fields("huge-temperature", [("temperature", "1e308")], "temperature"),
    fields("nan-temperature", [("temperature", "NaN")], "temperature"),
    fields("unknown-language-code", [("language", "xx")], "language"),
    fields("unknown-language-tag", [("language", "zz-ZZ")], "language"),
    fields("language-the-model-lacks", [("language", "fr")], "language"),
    fields("conflicting-models", [("model", "tiny.en")], "model"),
    fields("conflicting-formats", [("response_format", "json"), ("response_format", "srt")], "response_format"),
    Case("two-files", lambda: multipart([("model", "whisper-1"), ("file", short_jfk())], ("b.wav", short_jfk())),
         400, "invalid_value", "file"),
    fields("granularity-sentence", [("timestamp_granularities[]", "sentence")], "timestamp_granularities",
           "unsupported_value"),
    fields("granularities-nested-json", [("timestamp_granularities", "[" * 20_000)], "timestamp_granularities"),
    fields("include-unknown", [("include[]", "everything")], "include", "unsupported_value"),
    fields("stream-maybe", [("stream", "maybe")], "stream"),
    fields("fractional-speakers", [("num_speakers", "2.5")], "num_speakers"),
    fields("known-speakers-without-diarization", [("known_speaker_names[]", "agent")], "known_speaker_names"),
    fields("reference-not-a-data-url", [("response_format", "diarized_json"), ("known_speaker_names[]", "agent"),
                                        ("known_speaker_references[]", "http://example.com/a.wav")],
           "known_speaker_references"),
    fields("field-not-utf8", [("prompt", b"\xff\xfe\xfa")], "prompt"),
    fields("field-over-64kib", [("prompt", "x" * (64 * 1024 + 1))], "prompt"),
    raw("field-in-punycode", PUNYCODE_FIELD, code="invalid_value", param="prompt"),
    Case("missing-model", lambda: multipart([], ("a.wav", short_jfk())), 400, "missing_required_parameter", "model"),
    Case("missing-file", lambda: multipart([("model", "whisper-1")]), 400, "missing_required_parameter", "file"),
    Case("unknown-model", lambda: multipart([("model", "whisper-9")], ("a.wav", short_jfk())), 404,
         "model_not_found", "model"),
    # Malformed and truncated multipart
    raw("not-multipart", b'{"model": "whisper-1"}', "application/json"),
    raw("no-boundary", lambda: multipart([("model", "whisper-1")])[0], "multipart/form-data"),
    raw("wrong-boundary", lambda: multipart([("model", "whisper-1")], boundary="xyz")[0],
        "multipart/form-data; boundary=abc"),
    raw("truncated-multipart", lambda: multipart([("model", "whisper-1")], ("a.wav", short_jfk()), "xyz")[0][:5000]),
    raw("empty-body", b""),
    raw("garbage-body", lambda: random_bytes(5000)),
    raw("part-without-disposition", b"--xyz\r\nContent-Type: text/plain\r\n\r\nhi\r\n--xyz--\r\n"),
    raw("header-line-over-4kb", b'--xyz\r\nContent-Disposition: form-data; name="model"\r\nX-Pad: ' + b"a" * 10_000
        + b"\r\n\r\nwhisper-1\r\n--xyz--\r\n"),
    raw("65-parts", lambda: multipart([(f"f{i}", "1") for i in range(65)], boundary="xyz")[0]),
]


# --------------------------------------------------------------------------------------------------
# Running the corpus


@dataclass
class Outcome:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Run:
    outcomes: dict[str, Outcome]
    good: list[Outcome]
    huge_content_length: tuple[int, dict[str, Any]]
    triton_pids: tuple[list[int], list[int]]
    seconds: float


async def post(client: httpx.AsyncClient, body: bytes, content_type: str) -> Outcome:
    started = time.monotonic()
    response = await client.post(PATH, content=body, headers={"content-type": content_type})
    return Outcome(response.status_code, dict(response.headers), response.content, time.monotonic() - started)


async def good_requests(client: httpx.AsyncClient, stop: asyncio.Event) -> list[Outcome]:
    """JFK, one request after another, until the corpus is done (at least one)."""
    body, content_type = multipart([("model", "whisper-1")], ("jfk.wav", jfk_wav().read_bytes()))
    outcomes = []
    while not stop.is_set() or not outcomes:
        outcomes.append(await post(client, body, content_type))
    return outcomes


async def huge_content_length(port: int) -> tuple[int, dict[str, Any]]:
    """Content-Length: 10^12 with a few bytes sent: refused at once, without waiting for the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; "
                 b"boundary=xyz\r\nContent-Length: 1000000000000\r\n\r\n--xyz\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    lines = head.split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length:"))
    body = await asyncio.wait_for(reader.readexactly(length), 30)
    writer.close()
    return int(lines[0].split()[1]), json.loads(body)


@pytest.fixture(scope="module")
async def run(served: Served) -> AsyncIterator[Run]:
    bodies = {case.id: case.body() for case in CASES}
    pids_before = served.triton_pids()
    started = time.monotonic()
    limit = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(base_url=served.base_url, timeout=600) as client:

        async def bounded(case_id: str) -> tuple[str, Outcome]:
            async with limit:
                return case_id, await post(client, *bodies[case_id])

        stop = asyncio.Event()
        good = asyncio.ensure_future(good_requests(client, stop))
        # The slowest first, so that the quick ones run beside them.
        ordered = sorted(bodies, key=lambda case_id: "silence" not in case_id)
        outcomes, refused = await asyncio.gather(asyncio.gather(*map(bounded, ordered)),
                                                 huge_content_length(served.http_port))
        stop.set()
        good_outcomes = await good
        ready = await client.get("/health/ready")
        assert ready.status_code == 200, ready.text
    yield Run(dict(outcomes), good_outcomes, refused, (pids_before, served.triton_pids()),
              time.monotonic() - started)


# --------------------------------------------------------------------------------------------------
# The checks


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_case(run: Run, case: Case) -> None:
    outcome = run.outcomes[case.id]
    response = httpx.Response(outcome.status, headers=outcome.headers, content=outcome.body)
    if case.text is None:
        error = assert_openai_error(response, case.status, case.param)
        assert error["code"] == case.code, error
        assert error["type"] == "invalid_request_error"
        assert response.headers["x-should-retry"] == "false"
        return
    assert response.status_code == 200, response.text
    text = response.json()["text"].lower()
    assert case.text in text if case.text else text == "", text


def test_concurrent_good_requests_are_unaffected(run: Run) -> None:
    assert run.good, "no good request ran"
    for outcome in run.good:
        assert outcome.status == 200, outcome.body
        assert JFK_WORDS in outcome.json()["text"].lower()


def test_a_declared_content_length_over_the_limit_is_refused_before_the_body(run: Run) -> None:
    status, body = run.huge_content_length
    assert status == 413 and body["error"]["code"] == "request_too_large"


def test_the_server_stays_up_and_triton_never_restarted(served: Served, run: Run) -> None:
    before, after = run.triton_pids
    assert before and before == after, "Triton was restarted while the corpus ran"
    assert served.process.poll() is None
    assert "Traceback" not in "".join(o.body.decode(errors="replace") for o in run.outcomes.values())
    print(f"bad-input corpus: {len(run.outcomes)} cases and {len(run.good)} good requests in {run.seconds:.1f} s")


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/", "/service/combine", "/speech-to-text-url",
                                  "/v1/speakers"])
def test_json_nested_past_the_recursion_limit_is_a_400(served: Served, path: str) -> None:
    for body in (b"[" * 50_000, b'{"model": "whisper-1", "messages": [' + b'{"a":' * 20_000 + b"1" + b"}" * 20_000
                 + b"]}"):
        response = httpx.post(served.base_url + path, content=body, headers={"content-type": "application/json"},
                              timeout=60)
        assert response.status_code == 400, response.text
        assert_openai_error(response, 400)


def test_unsupported_methods_are_405_with_allow(served: Served) -> None:
    response = httpx.request("TRACE", served.base_url + "/v1/models", timeout=30)
    assert_openai_error(response, 405)
    assert "GET" in response.headers["allow"]
