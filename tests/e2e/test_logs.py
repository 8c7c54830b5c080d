"""Operators' logs against the real stack (`make serve`'s processes with LOG_DIR and an admin key): one failed
request followed by its x-request-id through the frontend's and Triton's lines over HTTP, a task's lines, the
admin key only, a rotated file downloaded, and no transcript in any log file."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from scipy.signal import resample_poly

from harness.assets import jfk_wav
from harness.stack import Served, start_served
from tests.e2e.test_http_errors import assert_openai_error
from whisper_triton.audio import decode_audio

ADMIN_KEY = "admin-logs-e2e"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
USER = {"authorization": "Bearer user-logs-e2e"}
JFK_PHRASE = "ask not what your country can do for you"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Small files, so that they rotate while the tests run."""
    served = start_served(tmp_path_factory.mktemp("serve-logs"), "tiny.en", FRONTEND_ADMIN_API_KEY=ADMIN_KEY,
                          FRONTEND_API_KEYS=f"user:{USER['authorization'].split()[1]}", LOG_MAX_BYTES="20000",
                          LOG_BACKUPS="100")
    yield served
    served.stop()


def log_lines(stack: Served, timeout_s: float = 20.0, **params: Any) -> list[dict[str, Any]]:
    response = httpx.get(f"{stack.base_url}/v1/logs", params=params, headers=ADMIN, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines()]


def wait_for(stack: Served, wanted: set[str], **params: Any) -> list[dict[str, Any]]:
    """The lines of a query once they come from every source in `wanted` (Triton's arrive through a pipe)."""
    deadline = time.monotonic() + 20
    while True:
        lines = log_lines(stack, **params)
        if wanted <= {line["source"] for line in lines} or time.monotonic() > deadline:
            return lines
        time.sleep(0.25)


def test_a_failed_request_is_followed_through_the_frontend_and_triton(stack: Served) -> None:
    request_id = f"e2e-failed-{time.time_ns()}"
    response = httpx.post(f"{stack.base_url}/v1/audio/transcriptions", headers={**USER, "x-request-id": request_id},
                          data={"model": "whisper-1"}, files={"file": ("a.wav", b"RIFF not audio at all" * 50)},
                          timeout=60)
    assert_openai_error(response, 400)
    assert response.headers["x-request-id"] == request_id
    lines = wait_for(stack, {"frontend", "triton"}, request_id=request_id)
    triton = [line for line in lines if line["source"] == "triton"]
    frontend = [line for line in lines if line["source"] == "frontend"]
    assert any("whisper: request failed" in line["message"] and line["level"] == "warning" for line in triton), lines
    assert any(line.get("status") == 400 and line.get("path") == "/v1/audio/transcriptions" for line in frontend)
    assert all(line["request_id"] == request_id for line in lines)
    assert [line["time"] for line in lines] == sorted(line["time"] for line in lines)
    # the operator narrows to what went wrong
    warnings = log_lines(stack, request_id=request_id, level="warning")
    assert warnings and all(line["level"] in ("warning", "error") for line in warnings)


async def test_a_realtime_session_is_followed_into_the_live_and_entry_models(stack: Served) -> None:
    request_id = f"e2e-live-{time.time_ns()}"
    jfk = decode_audio(jfk_wav().read_bytes()).samples
    pcm = (np.clip(resample_poly(jfk, 3, 2), -1, 1) * 32767).astype("<i2").tobytes()
    url = stack.base_url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
    async with websockets.connect(url, additional_headers={**USER, "x-request-id": request_id}) as socket:
        await socket.recv()  # session.created
        await socket.send(json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {
            "input": {"turn_detection": None}}}}))
        await socket.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}))
        await socket.send(json.dumps({"type": "input_audio_buffer.commit"}))
        async with asyncio.timeout(120):
            while json.loads(await socket.recv())["type"] != "conversation.item.input_audio_transcription.completed":
                pass
    lines = await asyncio.to_thread(wait_for, stack, {"frontend", "triton"}, request_id=request_id)
    triton = [line["message"] for line in lines if line["source"] == "triton"]
    assert any("whisper: transcribe" in message for message in triton), lines  # the turn, at the entry model
    assert all(line["request_id"] == request_id for line in lines)


def test_a_diarized_request_is_followed_into_the_diarization_model(stack: Served) -> None:
    request_id = f"e2e-diarized-{time.time_ns()}"
    response = httpx.post(f"{stack.base_url}/v1/audio/transcriptions", headers={**USER, "x-request-id": request_id},
                          data={"model": "whisper-1", "response_format": "diarized_json"},
                          files={"file": ("jfk.wav", jfk_wav().read_bytes())}, timeout=300)
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 20  # Triton's lines arrive through a pipe, each model's in its own order
    while True:
        lines = log_lines(stack, request_id=request_id)
        triton = [line["message"] for line in lines if line["source"] == "triton"]
        if any("diarization: speaker turns" in message for message in triton) or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert any("diarization: speaker turns" in message for message in triton), lines
    assert any("whisper: transcribe" in message for message in triton)
    assert any(line["source"] == "frontend" for line in lines)


def test_a_request_without_an_id_gets_one_that_finds_its_lines(stack: Served) -> None:
    response = httpx.post(f"{stack.base_url}/v1/audio/transcriptions", headers=USER, data={"model": "whisper-1"},
                          files={"file": ("jfk.wav", jfk_wav().read_bytes())}, timeout=120)
    assert response.status_code == 200, response.text
    request_id = response.headers["x-request-id"]
    lines = wait_for(stack, {"frontend", "triton"}, request_id=request_id, source="all")
    assert {"frontend", "triton"} <= {line["source"] for line in lines}
    assert not log_lines(stack, request_id=request_id, source="frontend", level="warning")


def test_a_task_s_lines_carry_its_id_and_the_id_of_the_request_that_made_it(stack: Served) -> None:
    request_id = f"e2e-task-{time.time_ns()}"
    created = httpx.post(f"{stack.base_url}/speech-to-text", headers={**USER, "x-request-id": request_id},
                         files={"file": ("jfk.wav", jfk_wav().read_bytes())}, timeout=60)
    assert created.status_code == 200, created.text
    task_id = created.json()["identifier"]
    deadline = time.monotonic() + 120
    while httpx.get(f"{stack.base_url}/task/{task_id}", headers=USER, timeout=10).json()["status"] not in (
            "completed", "failed") and time.monotonic() < deadline:
        time.sleep(0.5)
    lines = wait_for(stack, {"frontend", "triton"}, request_id=request_id)
    by_task = [line for line in lines if line.get("task_id") == task_id]
    assert any("started" in line["message"] for line in by_task) and any("completed" in line["message"]
                                                                         for line in by_task)
    assert any(line["source"] == "triton" for line in lines)  # the task's Triton call carries the request id
    assert log_lines(stack, task_id=task_id) == by_task


def test_only_the_admin_key_reads_the_logs(stack: Served) -> None:
    for path in ("/v1/logs", "/v1/logs/files", "/v1/logs/download?file=frontend.log"):
        assert_openai_error(httpx.get(f"{stack.base_url}{path}", timeout=10), 401)
        assert assert_openai_error(httpx.get(f"{stack.base_url}{path}", headers=USER, timeout=10), 403)["code"] == \
            "forbidden"
    assert_openai_error(httpx.get(f"{stack.base_url}/v1/logs", params={"level": "loud"}, headers=ADMIN, timeout=10),
                        400, "level")
    for name in ("../data/tasks.db", "%2e%2e/frontend.log", str(stack.log_dir / "frontend.log"), "tasks.db"):
        response = httpx.get(f"{stack.base_url}/v1/logs/download", params={"file": name}, headers=ADMIN, timeout=10)
        assert response.status_code in (400, 404) and response.json()["error"]["param"] == "file"


def test_a_rotated_file_is_listed_and_downloaded(stack: Served) -> None:
    deadline = time.monotonic() + 60
    while not (stack.log_dir / "frontend.log.1").exists() and time.monotonic() < deadline:
        httpx.get(f"{stack.base_url}/v1/models", headers=USER, timeout=10)  # access lines fill the file
    files = httpx.get(f"{stack.base_url}/v1/logs/files", headers=ADMIN, timeout=10).json()
    names = [item["name"] for item in files]
    assert "frontend.log.1" in names and "frontend.log" in names and "triton.log" in names
    response = httpx.get(f"{stack.base_url}/v1/logs/download", params={"file": "frontend.log.1"}, headers=ADMIN,
                         timeout=30)
    assert response.status_code == 200
    first = json.loads(response.text.splitlines()[0])
    assert {"time", "level", "logger", "message"} <= set(first)


def test_no_transcript_text_or_key_reaches_a_log_file(stack: Served) -> None:
    for fmt in ("json", "verbose_json", "text"):
        response = httpx.post(f"{stack.base_url}/v1/audio/transcriptions", headers=USER,
                              data={"model": "whisper-1", "response_format": fmt},
                              files={"file": ("jfk.wav", jfk_wav().read_bytes())}, timeout=120)
        assert response.status_code == 200 and JFK_PHRASE in response.text.lower()
    time.sleep(1)  # Triton's last lines through its pipe
    files = sorted(Path(stack.log_dir).iterdir())
    assert files
    for path in files:
        text = path.read_text(errors="replace").lower()
        assert "country can do" not in text and "fellow americans" not in text, path.name
        assert ADMIN_KEY not in text and USER["authorization"].split()[1] not in text, path.name
