"""Bad input and refusals: always OpenAI's error shape, the right status, the right SDK exception."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from harness.assets import jfk_wav, long_recording, wav_bytes
from harness.stack import Served, run_frontend


def _wav(seconds: float) -> bytes:
    return wav_bytes((np.sin(np.arange(int(16000 * seconds)) / 5) * 3000).astype("<i2"))


def assert_openai_error(response: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in error["message"]
    if param is not None:
        assert error["param"] == param
    return dict(error)


@pytest.fixture(scope="module")
def http(served: Served) -> httpx.Client:
    return httpx.Client(base_url=served.base_url, timeout=120)


@pytest.fixture(scope="module")
def sdk(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.base_url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"", "invalid_audio"),
        (bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8)), "invalid_audio"),
        (b"Hello, this is a text file pretending to be audio.\n" * 20, "invalid_audio"),
        (b"\x89PNG\r\n\x1a\n" + bytes(200), "invalid_audio"),
    ],
    ids=["empty", "random", "text", "png"],
)
def test_undecodable_audio_is_400(sdk: openai.OpenAI, payload: bytes, code: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk.audio.transcriptions.create(model="whisper-1", file=("speech.wav", payload, "audio/wav"))
    assert info.value.code == code
    assert info.value.param == "file"


def test_too_short_audio_is_400(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk.audio.transcriptions.create(model="whisper-1", file=("short.wav", _wav(0.05), "audio/wav"))
    assert info.value.code == "audio_too_short"


def test_unknown_model_is_404(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        sdk.audio.transcriptions.create(model="whisper-9", file=jfk_wav().open("rb"))
    assert info.value.code == "model_not_found"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"response_format": "xml"}, "response_format"),
        ({"temperature": "2"}, "temperature"),
        ({"temperature": "warm"}, "temperature"),
        ({"language": "xx"}, "language"),
        ({"timestamp_granularities[]": "sentence"}, "timestamp_granularities"),
        ({"stream": "maybe"}, "stream"),
        ({"chunking_strategy": "fixed"}, "chunking_strategy"),
        ({"model": ""}, "model"),
    ],
)
def test_bad_parameters_are_400(http: httpx.Client, fields: dict[str, str], param: str) -> None:
    data = {"model": "whisper-1", **fields}
    response = http.post("/v1/audio/transcriptions", data=data, files={"file": ("a.wav", _wav(1.0))})
    assert_openai_error(response, 400, param)
    assert response.headers["x-should-retry"] == "false"


def test_missing_file_is_400(http: httpx.Client) -> None:
    response = http.post("/v1/audio/transcriptions", data={"model": "whisper-1"}, files={"other": ("x", b"1")})
    assert_openai_error(response, 400, "file")


def test_not_multipart_is_400(http: httpx.Client) -> None:
    response = http.post("/v1/audio/transcriptions", json={"model": "whisper-1"})
    assert_openai_error(response, 400)


def test_truncated_multipart_is_400(http: httpx.Client) -> None:
    body = b'--xyz\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n--xyz\r\nContent-Disp'
    response = http.post("/v1/audio/transcriptions", content=body,
                         headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert_openai_error(response, 400)


def test_oversize_upload_is_413_with_and_without_content_length(http: httpx.Client) -> None:
    big = bytes(26 * 1024 * 1024 + 10)
    response = http.post("/v1/audio/transcriptions", data={"model": "whisper-1"}, files={"file": ("a.wav", big)})
    assert_openai_error(response, 413)

    def chunks() -> Any:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        for _ in range(27):
            yield bytes(1024 * 1024)
        yield b"\r\n--b--\r\n"

    response = http.post("/v1/audio/transcriptions", content=chunks(),
                         headers={"content-type": "multipart/form-data; boundary=b"})
    assert "content-length" not in response.request.headers
    assert_openai_error(response, 413)


def test_unknown_route_is_openai_shaped_404(http: httpx.Client) -> None:
    assert_openai_error(http.get("/v1/nothing-here"), 404)


def test_server_survives_bad_input_and_serves_good_requests(sdk: openai.OpenAI) -> None:
    for _ in range(3):
        with pytest.raises(openai.BadRequestError):
            sdk.audio.transcriptions.create(model="whisper-1", file=("x.mp3", b"\xff\xfb" + bytes(3000)))
    result = sdk.audio.transcriptions.create(model="whisper-1", file=jfk_wav().open("rb"))
    assert "fellow americans" in result.text.lower()


def test_open_webui_style_chunked_upload(http: httpx.Client) -> None:
    """Open WebUI: octet-stream file part with a uuid name, text parts with a Content-Type, chunked."""
    boundary = uuid.uuid4().hex
    audio = jfk_wav().read_bytes()

    def body() -> Any:
        for name, value in (("model", "whisper-1"), ("language", "en")):
            yield (f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                   f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n').encode()
        yield (f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
               f'Content-Disposition: form-data; name="file"; filename="{uuid.uuid4()}.wav"\r\n\r\n').encode()
        for start in range(0, len(audio), 65536):
            yield audio[start : start + 65536]
        yield f"\r\n--{boundary}--\r\n".encode()

    response = http.post("/v1/audio/transcriptions", content=body(),
                         headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert "your country" in response.json()["text"].lower()


def test_api_key_is_enforced_when_configured(served: Served) -> None:
    with run_frontend(served, api_keys=["sk-right", "sk-other"]) as base_url:
        wrong = openai.OpenAI(base_url=f"{base_url}/v1", api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as info:
            wrong.audio.transcriptions.create(model="whisper-1", file=jfk_wav().open("rb"))
        assert info.value.code == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
        assert_openai_error(httpx.get(f"{base_url}/v1/models"), 401)
        right = openai.OpenAI(base_url=f"{base_url}/v1", api_key="sk-other", max_retries=0)
        result = right.audio.transcriptions.create(model="whisper-1", file=jfk_wav().open("rb"))
        assert "fellow americans" in result.text.lower()
        assert httpx.get(f"{base_url}/health/live").status_code == 200  # probes need no key


async def test_overload_is_503_with_retry_after(served: Served) -> None:
    long_audio = long_recording(1.0).path.read_bytes()
    with run_frontend(served, max_concurrent_requests=1, retry_after_s=7) as base_url:
        async with httpx.AsyncClient(base_url=base_url, timeout=300) as client:

            async def post(audio: bytes) -> httpx.Response:
                return await client.post("/v1/audio/transcriptions", data={"model": "whisper-1"},
                                         files={"file": ("a.wav", audio)})

            slow = asyncio.ensure_future(post(long_audio))
            await asyncio.sleep(1.0)
            refused = await post(jfk_wav().read_bytes())
            error = assert_openai_error(refused, 503)
            assert error["type"] == "server_error"
            assert refused.headers["retry-after"] == "7"
            assert (await slow).status_code == 200
            assert (await post(jfk_wav().read_bytes())).status_code == 200  # the slot is free again


def test_sdk_exception_message_is_readable(sdk: openai.OpenAI, tmp_path: Path) -> None:
    bogus = tmp_path / "notes.wav"
    bogus.write_text("not audio at all")
    with pytest.raises(openai.BadRequestError) as info:
        sdk.audio.transcriptions.create(model="whisper-1", file=bogus.open("rb"))
    assert "could not be decoded" in info.value.message
