"""Faults under `make serve`'s process (the frontend and its supervised Triton), with clear answers.

Triton killed mid-request; a model's Python process dying (the engine, the entry model); a malformed
window sent straight to the engine; the task database locked by someone else or its disk full; uploads
that trickle in, clients that stop reading, clients that leave. Each gives a clear OpenAI-shaped error
(503 + Retry-After where retrying helps), frees what it held, and the service comes back by itself.
Crashes of the whole frontend with tasks queued and running are in test_tasks.py.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from frontend.database import SQLiteDatabase
from frontend.tasks.records import TaskRequest, new_task
from frontend.tasks.store import TaskStore
from harness.assets import jfk_wav, long_recording
from harness.clients import connect, multipart, read_all, trickle
from harness.grpc_calls import call_engine
from harness.procfs import eventually, in_flight, open_sockets, rss_bytes, stub_pids
from harness.stack import Served, run_frontend, start_served
from harness.text import wer
from whisper_triton.contract import DoneEvent
from whisper_triton.repository import engine_model_name

ENGINE = engine_model_name("tiny.en")
ENV = {"FRONTEND_BODY_TIMEOUT_S": "2", "FRONTEND_SEND_TIMEOUT_S": "3", "FRONTEND_MAX_CONCURRENT_REQUESTS": "4",
       # One worker decoding two windows at a time: a long request's windows wait in the engine's queue.
       "WHISPER_ENGINE_WORKERS": "1", "WHISPER_ENGINE_MAX_BATCH": "2"}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`make serve` with short client time limits (2 s for a body to keep coming, 3 s for a client to read)."""
    instance = start_served(tmp_path_factory.mktemp("faults"), "tiny.en", **ENV)
    yield instance
    instance.stop()


def transcribe(base_url: str, audio: bytes, timeout: float = 120, **fields: str) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/audio/transcriptions", data={"model": "whisper-1", **fields},
                      files={"file": ("a.wav", audio)}, timeout=timeout)


def stream(base_url: str, audio: bytes) -> list[dict[str, Any]]:
    events = []
    with httpx.stream("POST", f"{base_url}/v1/audio/transcriptions", data={"model": "whisper-1", "stream": "true"},
                      files={"file": ("a.wav", audio)}, timeout=120) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return events


def assert_retry_later(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) > 0
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "server_error", error


def sockets_settle(served: Served, baseline: int, timeout: float = 20) -> bool:
    """The frontend's open sockets are back to `baseline` (idle keep-alive connections close after 5 s)."""
    return eventually(lambda: open_sockets(served.process.pid) <= baseline, timeout)


def engine_windows(served: Served, outcome: str) -> float:
    return served.metric("whisper_engine_windows_total", model=ENGINE, outcome=outcome)


def steady(read: Any, for_s: float = 2.0, timeout: float = 90) -> bool:
    """Whether `read()` stops changing for `for_s` seconds within `timeout`."""
    deadline, last, since = time.monotonic() + timeout, read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        value = read()
        if value != last:
            last, since = value, time.monotonic()
        elif time.monotonic() - since >= for_s:
            return True
    return False


def test_triton_killed_mid_request_gives_a_clear_503_and_comes_back(guarded: Served) -> None:
    audio = long_recording(2.0).path.read_bytes()
    with ThreadPoolExecutor(2) as pool:
        sync = pool.submit(transcribe, guarded.base_url, audio)
        streamed = pool.submit(stream, guarded.base_url, audio)
        assert eventually(lambda: in_flight(guarded.base_url) == 2, 30)
        time.sleep(1.0)
        [pid] = guarded.triton_pids()
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        response, events = sync.result(60), streamed.result(60)
    assert time.monotonic() - killed < 30
    assert_retry_later(response)
    assert events[-1]["error"]["code"] == "server_overloaded", events[-1]  # after the 200, as an SSE event
    assert in_flight(guarded.base_url) == 0
    guarded.wait_ready(180)
    assert guarded.triton_pids() != [pid]
    assert "country" in transcribe(guarded.base_url, jfk_wav().read_bytes()).json()["text"]


@pytest.mark.parametrize(("model", "death"), [(ENGINE, signal.SIGKILL), ("whisper", signal.SIGSEGV)])
def test_a_model_process_that_dies_fails_its_requests_clearly_and_comes_back(
    guarded: Served, model: str, death: signal.Signals
) -> None:
    """Triton neither restarts a dead Python-backend process nor ends the streams it held (those of the
    entry model, and the engine's that its BLS calls read, then hung for ever, holding their admission
    slots); the Supervisor restarts Triton for it. Killed (out of memory) or crashed in native code: a crash
    leaves the Python traceback of each of the process's threads in the log."""
    guarded.wait_ready(180)
    audio = long_recording(2.0).path.read_bytes()
    with ThreadPoolExecutor(2) as pool:
        requests = [pool.submit(transcribe, guarded.base_url, audio) for _ in range(2)]
        assert eventually(lambda: in_flight(guarded.base_url) == 2, 30)
        time.sleep(1.0)
        [pid] = stub_pids(guarded.grpc_port, model)
        os.kill(pid, death)
        responses = [r.result(90) for r in requests]
    for response in responses:
        assert_retry_later(response)
    assert in_flight(guarded.base_url) == 0
    assert eventually(lambda: "its streams would never end: restarting Triton" in guarded.log(), 30), \
        guarded.log()[-3000:]
    assert eventually(lambda: transcribe(guarded.base_url, jfk_wav().read_bytes()).status_code == 200, 120, 1)
    assert stub_pids(guarded.grpc_port, model) not in ([], [pid])
    if death == signal.SIGSEGV:
        crash = guarded.log().partition("Fatal Python error: Segmentation fault")[2]
        assert "Thread 0x" in crash and "model.py" in crash, guarded.log()[-3000:]


def test_a_malformed_window_fails_alone(guarded: Served) -> None:
    """Windows of many requests share the engine's batches: one that the engine cannot decode (here sent
    straight over gRPC) used to fail every window batched with it."""
    guarded.wait_ready(180)
    stop, failures = threading.Event(), []

    def poison() -> None:
        while not stop.is_set():
            outcome = call_engine(guarded.grpc_url, ENGINE, np.zeros(1600, np.float32), b'{"temperatures": []}')
            failures.append(str(outcome))

    poisoners = [threading.Thread(target=poison) for _ in range(3)]
    for thread in poisoners:
        thread.start()
    try:
        with ThreadPoolExecutor(3) as pool:
            audio = long_recording(1.0)
            responses = list(pool.map(lambda _: transcribe(guarded.base_url, audio.path.read_bytes()), range(3)))
    finally:
        stop.set()
        for thread in poisoners:
            thread.join()
    assert [r.status_code for r in responses] == [200] * 3, [r.text for r in responses]
    assert all(wer(audio.text, r.json()["text"]) < 0.25 for r in responses)
    assert failures and all("bad window request" in f and "temperatures" in f for f in failures), failures[:3]


def test_a_client_that_leaves_stops_its_transcription(guarded: Served) -> None:
    """Its windows still queued at the engine are dropped, not decoded for nobody; no timing assumed."""
    guarded.wait_ready(180)
    recording = long_recording(6.0)
    windows_in_file = math.ceil(recording.duration / 30)
    decoded, cancelled = engine_windows(guarded, "decoded"), engine_windows(guarded, "cancelled")
    head, body = multipart(recording.path.read_bytes())
    sock = connect(guarded.http_port)
    sock.sendall(head + body)
    assert eventually(lambda: in_flight(guarded.base_url) == 1, 30)
    assert eventually(lambda: engine_windows(guarded, "decoded") > decoded, 120)  # work has started
    sock.close()
    left = time.monotonic()
    assert eventually(lambda: in_flight(guarded.base_url) == 0, 10)
    assert time.monotonic() - left < 3  # not when the 6-minute file is done
    assert eventually(lambda: engine_windows(guarded, "cancelled") > cancelled, 30)
    assert steady(lambda: engine_windows(guarded, "decoded"))  # the engine stopped working on it
    assert engine_windows(guarded, "decoded") - decoded < windows_in_file


def test_a_trickling_upload_is_cut_and_its_connection_closed(guarded: Served) -> None:
    guarded.wait_ready(180)
    baseline = open_sockets(guarded.process.pid)
    head, body = multipart(jfk_wav().read_bytes())
    with ThreadPoolExecutor(8) as pool:
        slow = [pool.submit(trickle, guarded.http_port, head, body) for _ in range(8)]
        # Meanwhile others are served as usual.
        assert transcribe(guarded.base_url, jfk_wav().read_bytes()).status_code == 200
        outcomes = [s.result(60) for s in slow]
    for answer, elapsed in outcomes:
        assert elapsed < 6, elapsed  # 2 s for the body to keep coming, plus its 200 bytes at 1 KiB/s
        status, _, rest = answer.partition(b"\r\n")
        headers, _, payload = rest.partition(b"\r\n\r\n")
        assert status == b"HTTP/1.1 408 Request Timeout" and b"connection: close" in headers.lower(), answer[:300]
        assert json.loads(payload)["error"]["code"] == "request_timeout"
        # read_all returned: the server closed the connection after the answer.
    assert sockets_settle(guarded, baseline)


def test_a_client_that_stops_reading_is_dropped(guarded: Served, tmp_path: Path) -> None:
    guarded.wait_ready(180)
    size = 24 * 1024 * 1024
    task = new_task(TaskRequest(model="tiny.en"), "upload", status="completed")
    task.result = DoneEvent(task="transcribe", language="en", duration=1.0, text="x" * size, segments=[])

    async def store_it() -> None:  # a large finished result, written beside the frontend (SQLite WAL)
        database = SQLiteDatabase(guarded.data_dir / "tasks.db")
        try:
            await TaskStore(database).create(task)
        finally:
            await database.close()

    asyncio.run(store_it())
    assert len(httpx.get(f"{guarded.base_url}/task/{task.id}", timeout=60).content) > size  # a reader gets it
    pid = guarded.process.pid
    baseline_sockets, baseline_rss = open_sockets(pid), rss_bytes(pid)
    stuck = [connect(guarded.http_port, receive_buffer=4096) for _ in range(4)]
    for sock in stuck:
        sock.sendall(f"GET /task/{task.id} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    time.sleep(3 + 4)  # FRONTEND_SEND_TIMEOUT_S and some
    for sock in stuck:
        data, _ = read_all(sock)  # what the kernel still held, then the end: the server dropped the connection
        sock.close()
        assert len(data) < size, len(data)
    assert sockets_settle(guarded, baseline_sockets)
    assert rss_bytes(pid) - baseline_rss < 3 * size  # the four bodies are not kept, unsent
    assert "stopped reading" in guarded.log()
    assert httpx.get(f"{guarded.base_url}/health/ready", timeout=10).status_code == 200


def test_a_stream_nobody_reads_gives_its_slot_back(guarded: Served) -> None:
    guarded.wait_ready(180)
    head, body = multipart(long_recording(1.0).path.read_bytes(), stream="true")
    sock = connect(guarded.http_port, receive_buffer=4096)
    try:
        sock.sendall(head + body)
        assert eventually(lambda: in_flight(guarded.base_url) == 1, 30)
        assert eventually(lambda: in_flight(guarded.base_url) == 0, 60)
    finally:
        sock.close()


@contextmanager
def database_fault(kind: str, where: Path) -> Iterator[Any]:
    """`busy`: another connection holds the write lock; `full`: the database's file system is full."""
    if kind == "busy":
        other = sqlite3.connect(where / "tasks.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            yield None
        finally:
            other.execute("ROLLBACK")
            other.close()
        return
    filler = where / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    try:
        yield None
    finally:
        filler.unlink()


@contextmanager
def tiny_disk(path: Path, size_mb: int) -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.parametrize("kind", ["busy", "full"])
def test_a_locked_or_full_database_gives_clear_errors_and_no_result_is_lost(
    guarded: Served, tmp_path: Path, kind: str
) -> None:
    guarded.wait_ready(180)
    with tiny_disk(tmp_path / "db", 16) if kind == "full" else _directory(tmp_path / "db") as where, \
            run_frontend(guarded, db_url=f"sqlite:///{where / 'tasks.db'}?timeout=1", data_dir=str(where),
                         task_workers=1, task_lease_s=3) as base_url:
        client = httpx.Client(base_url=base_url, timeout=60)
        running = _upload(client, long_recording(1.0).path.read_bytes())
        assert eventually(lambda: client.get(f"/task/{running}").json()["status"] == "processing", 30)
        with database_fault(kind, where):
            started = time.monotonic()
            refused = client.post("/speech-to-text", files={"file": ("a.wav", jfk_wav().read_bytes())})
            assert time.monotonic() - started < 10
            assert_retry_later(refused)
            assert refused.json()["error"]["code"] == "database_unavailable"
            # Transcriptions that need no database go on (their record is skipped, and logged).
            assert transcribe(base_url, jfk_wav().read_bytes()).status_code == 200
            time.sleep(8)  # the running task ends meanwhile: its end cannot be written
            assert client.get(f"/task/{running}").json()["status"] != "completed"
        queued = _upload(client, jfk_wav().read_bytes())
        for task_id in (running, queued):
            assert eventually(lambda t=task_id: client.get(f"/task/{t}").json()["status"] == "completed", 120, 0.5), \
                client.get(f"/task/{task_id}").json()
        tasks = [client.get(f"/task/{t['identifier']}").json() for t in client.get("/task/all").json()["tasks"]]
        assert tasks and all(t["result"] and t["result"]["text"] for t in tasks if t["status"] == "completed")
        assert wer(long_recording(1.0).text, client.get(f"/task/{running}").json()["result"]["text"]) < 0.25


@contextmanager
def _directory(path: Path) -> Iterator[Path]:
    path.mkdir()
    yield path


def _upload(client: httpx.Client, audio: bytes) -> str:
    response = client.post("/speech-to-text", files={"file": ("speech.wav", audio)})
    assert response.status_code == 200, response.text
    return str(response.json()["identifier"])


def test_triton_killed_mid_live_session_closes_it_cleanly_and_new_sessions_work(guarded: Served) -> None:
    """A Realtime session whose live model goes away gets OpenAI's error event and close 1011; once Triton is
    back, a new session transcribes."""
    import base64

    import websockets

    url = guarded.base_url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
    pcm = _pcm24k(jfk_wav().read_bytes())

    async def killed_mid_session() -> tuple[dict[str, Any], int]:
        async with websockets.connect(url) as socket:
            await socket.recv()  # session.created
            await socket.send(json.dumps({"type": "input_audio_buffer.append",
                                          "audio": base64.b64encode(pcm[: 48_000]).decode()}))
            [pid] = guarded.triton_pids()
            os.kill(pid, signal.SIGKILL)
            error: dict[str, Any] = {}
            with pytest.raises(websockets.ConnectionClosed) as closed:
                async with asyncio.timeout(60):
                    while True:
                        event = json.loads(await socket.recv())
                        if event["type"] == "error":
                            error = event
            assert closed.value.rcvd is not None
            return error, closed.value.rcvd.code

    async def transcribed() -> str:
        async with websockets.connect(url) as socket:
            await socket.recv()
            await socket.send(json.dumps({"type": "session.update", "session": {
                "type": "transcription", "audio": {"input": {"turn_detection": None}}}}))
            audio = base64.b64encode(pcm).decode()
            await socket.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
            await socket.send(json.dumps({"type": "input_audio_buffer.commit"}))
            async with asyncio.timeout(120):
                while True:
                    event = json.loads(await socket.recv())
                    if event["type"].endswith("transcription.completed"):
                        return str(event["transcript"])

    error, code = asyncio.run(killed_mid_session())
    assert code == 1011 and error["error"]["type"] == "server_error", error
    guarded.wait_ready(180)
    assert "country" in asyncio.run(transcribed()).lower()


def _pcm24k(wav: bytes) -> bytes:
    from scipy.signal import resample_poly

    from whisper_triton.audio import decode_audio

    samples = decode_audio(wav).samples
    return (np.clip(resample_poly(samples, 3, 2), -1, 1) * 32767).astype("<i2").tobytes()
