"""Task APIs (whisperX-FastAPI and insanely-fast-whisper-api dialects) against real Triton and databases."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from frontend.webhooks import verify
from harness.assets import JFK_TEXT, jfk_wav, long_recording
from harness.grpc_calls import engine_calls
from harness.stack import Served, run_frontend, start_served
from harness.text import wer
from whisper_triton.repository import engine_model_name

TINY_ENGINE = engine_model_name("tiny.en")


class Peer:
    """A local HTTP peer: serves audio files and records webhook POSTs."""

    def __init__(self, files: dict[str, bytes], fail_webhooks: int = 0) -> None:
        self.files = files
        self.fail_webhooks = fail_webhooks
        self.posts: list[tuple[dict[str, str], bytes]] = []
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = peer.files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                peer.posts.append(({k.lower(): v for k, v in self.headers.items()}, data))
                failing = peer.fail_webhooks > 0
                peer.fail_webhooks -= 1
                self.send_response(503 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self) -> None:
        self.server.shutdown()


@contextmanager
def peer(files: dict[str, bytes] | None = None, fail_webhooks: int = 0) -> Iterator[Peer]:
    instance = Peer(files or {"/jfk.wav": jfk_wav().read_bytes()}, fail_webhooks)
    try:
        yield instance
    finally:
        instance.close()


def wait_task(client: httpx.Client, task_id: str, until: tuple[str, ...] = ("completed", "failed", "cancelled"),
              timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task: dict[str, Any] = client.get(f"/task/{task_id}").json()
        if task["status"] in until:
            return task
        time.sleep(0.2)
    raise AssertionError(f"task {task_id} still {task['status']}")


def upload(client: httpx.Client, audio: bytes, **fields: str) -> str:
    response = client.post("/speech-to-text", files={"file": ("speech.wav", audio)}, data=fields)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["message"] == "Task queued"
    return str(body["identifier"])


def test_whisperx_upload_task_lifecycle(served: Served) -> None:
    with httpx.Client(base_url=served.base_url, timeout=60) as client:
        task_id = upload(client, jfk_wav().read_bytes(), language="en", word_timestamps="true")
        task = wait_task(client, task_id)
        assert task["status"] == "completed", task
        assert task["progress"] == 100 and task["error"] is None
        assert wer(JFK_TEXT, task["result"]["text"]) < 0.1
        assert task["result"]["segments"][0]["words"]
        meta = task["metadata"]
        assert meta["file_name"] == "speech.wav" and meta["task_type"] == "transcribe" and meta["model"] == "tiny.en"
        assert meta["audio_duration"] == pytest.approx(11.0, abs=0.1)
        assert meta["start_time"] and meta["end_time"] and meta["duration"] > 0
        listed = client.get("/task/all").json()["tasks"]
        assert listed[0]["identifier"] == task_id and listed[0]["result"] is None
        srt = client.get(f"/task/{task_id}/result", params={"format": "srt"})
        assert srt.status_code == 200 and re.match(r"1\n00:00:0\d,\d{3} --> 00:00:\d\d,\d{3}\n", srt.text)
        assert "attachment" in srt.headers["content-disposition"]
        vtt = client.get(f"/task/{task_id}/result", params={"format": "vtt"})
        assert vtt.text.startswith("WEBVTT")
        assert client.get(f"/task/{task_id}/result", params={"format": "txt"}).text.strip() == task["result"]["text"]
        assert client.get(f"/task/{task_id}/result", params={"format": "docx"}).status_code == 400
        assert client.delete(f"/task/{task_id}/delete").json() == {"message": "Task deleted"}
        gone = client.get(f"/task/{task_id}")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "task_not_found"


def test_bad_task_requests(served: Served) -> None:
    with httpx.Client(base_url=served.base_url, timeout=60) as client:
        empty = client.post("/speech-to-text", files={"file": ("a.wav", b"")})
        assert empty.status_code == 400 and empty.json()["error"]["param"] == "file"
        for bad in ({"language": "xx"}, {"task": "summarize"}, {"model": "nope"}, {"min_speakers": "-1"}):
            response = client.post("/speech-to-text", files={"file": ("a.wav", b"RIFF")}, data=bad)
            assert 400 <= response.status_code < 500 and set(response.json()["error"]) == {
                "message", "type", "param", "code"}, (bad, response.text)
        # Undecodable audio fails the task with the reason.
        failed = wait_task(client, upload(client, b"this is not audio"))
        assert failed["status"] == "failed" and failed["error"]["code"] == "invalid_audio"


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/a.wav", "http://169.254.169.254/latest", "file:///etc/passwd",
                                 "http://[::1]/x", "http://2130706433/x", "ftp://example.com/a.wav"])
def test_private_and_non_http_urls_are_refused(served: Served, url: str) -> None:
    with httpx.Client(base_url=served.base_url, timeout=60) as client:
        response = client.post("/speech-to-text-url", data={"url": url})
        assert response.status_code == 400 and response.json()["error"]["param"] == "url", response.text
        response = client.post("/", json={"url": url, "is_async": True})
        assert response.status_code == 400 and response.json()["error"]["param"] == "url", response.text
        public = "http://93.184.216.34/a.wav"  # a literal public address: no DNS needed offline
        response = client.post("/", json={"url": public, "webhook": {"url": url}})
        assert response.status_code == 400 and response.json()["error"]["param"] == "webhook", response.text


def test_url_task_with_signed_webhook(served: Served) -> None:
    with peer(fail_webhooks=1) as source, run_frontend(served, allow_private_urls=True,
                                                       webhook_secret="s3cret") as base_url:
        client = httpx.Client(base_url=base_url, timeout=60)
        response = client.post("/speech-to-text-url", json={
            "url": source.url("/jfk.wav"), "webhook_url": source.url("/hook"),
            "webhook_headers": {"X-Token": "abc"}})
        assert response.status_code == 200, response.text
        task_id = response.json()["identifier"]
        task = wait_task(client, task_id)
        assert task["status"] == "completed" and wer(JFK_TEXT, task["result"]["text"]) < 0.1
        deadline = time.monotonic() + 30
        while (client.get(f"/task/{task_id}").json()["webhook"] or {}).get("state") != "delivered":
            assert time.monotonic() < deadline, client.get(f"/task/{task_id}").json()["webhook"]
            time.sleep(0.2)
        assert client.get(f"/task/{task_id}").json()["webhook"]["attempts"] == 2  # the first got a 503
        headers, body = source.posts[-1]
        assert headers["x-token"] == "abc"
        assert verify(b"s3cret", int(headers["x-webhook-timestamp"]), body, headers["x-webhook-signature"])
        assert not verify(b"other", int(headers["x-webhook-timestamp"]), body, headers["x-webhook-signature"])
        payload = json.loads(body)
        assert payload["identifier"] == task_id and payload["status"] == "completed"


def test_insanely_fast_whisper_dialect(served: Served) -> None:
    with peer() as source, run_frontend(served, allow_private_urls=True) as base_url:
        client = httpx.Client(base_url=base_url, timeout=120)
        sync = client.post("/", json={"url": source.url("/jfk.wav"), "task": "transcribe", "language": "en",
                                      "batch_size": 24, "timestamp": "chunk"})
        assert sync.status_code == 200, sync.text
        output = sync.json()
        assert wer(JFK_TEXT, output["text"]) < 0.1 and output["speakers"] == []
        assert all(len(c["timestamp"]) == 2 and c["text"] for c in output["chunks"])
        words = client.post("/", json={"url": source.url("/jfk.wav"), "timestamp": "word"}).json()
        assert len(words["chunks"]) >= 20 and words["chunks"][0]["text"].strip() == "And"
        accepted = client.post("/", json={"url": source.url("/jfk.wav"), "is_async": True,
                                          "managed_task_id": "my-task-1", "webhook": {"url": source.url("/hook"),
                                                                                      "header": {"A": "b"}}})
        assert accepted.json() == {"detail": "Task is being processed in the background", "status": "processing",
                                   "task_id": "my-task-1"}
        deadline = time.monotonic() + 120
        while (status := client.get("/status/my-task-1").json())["status"] != "completed":
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
        assert wer(JFK_TEXT, status["output"]["text"]) < 0.1
        assert "my-task-1" in [t["task_id"] for t in client.get("/tasks").json()["tasks"]]
        duplicate = client.post("/", json={"url": source.url("/jfk.wav"), "managed_task_id": "my-task-1"})
        assert duplicate.status_code == 409
        missing = client.post("/", json={"url": source.url("/missing.wav"), "is_async": True,
                                         "webhook": {"url": source.url("/hook")}})
        failed_id = missing.json()["task_id"]
        while (status := client.get(f"/status/{failed_id}").json())["status"] not in ("failed", "completed"):
            time.sleep(0.2)
        assert status["status"] == "failed" and "404" in status["error"]
        deadline = time.monotonic() + 30
        while len(source.posts) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        outcomes = {json.loads(body)["task_id"]: json.loads(body) for _, body in source.posts}
        assert outcomes["my-task-1"]["status"] == "completed" and outcomes["my-task-1"]["output"]["text"]
        assert outcomes[failed_id]["status"] == "failed" and outcomes[failed_id]["error"]
        assert client.delete("/cancel/unknown-task").status_code == 404


def test_queue_bound_cancel_of_queued_and_running_tasks(served: Served) -> None:
    long_audio = long_recording(10.0).path.read_bytes()
    with run_frontend(served, task_workers=1, max_task_queue_size=1, retry_after_s=9) as base_url:
        client = httpx.Client(base_url=base_url, timeout=60)
        running = upload(client, long_audio)
        wait_task(client, running, until=("processing",))
        queued = upload(client, jfk_wav().read_bytes())
        refused = client.post("/speech-to-text", files={"file": ("a.wav", jfk_wav().read_bytes())})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "9"
        assert client.delete(f"/cancel/{queued}").json() == {"status": "cancelled", "task_id": queued}
        assert client.get(f"/task/{queued}").json()["status"] == "cancelled"
        deadline = time.monotonic() + 120
        while client.get(f"/task/{running}").json()["progress"] <= 0:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert client.delete(f"/cancel/{running}").status_code == 200
        cancelled = wait_task(client, running, timeout=30)
        assert cancelled["status"] == "cancelled" and cancelled["result"] is None
        # The work inside Triton stopped too: the engine gets no more windows of that file.
        time.sleep(2)
        settled = engine_calls(served.grpc_url, TINY_ENGINE)
        time.sleep(3)
        assert engine_calls(served.grpc_url, TINY_ENGINE) == settled


def test_synchronous_openai_requests_are_recorded(served: Served) -> None:
    sdk = openai.OpenAI(base_url=f"{served.base_url}/v1", api_key="unused", max_retries=0)
    sdk.audio.transcriptions.create(model="whisper-1", file=("sync-record.wav", jfk_wav().read_bytes()))
    tasks = httpx.get(f"{served.base_url}/task/all", timeout=30).json()["tasks"]
    recorded = [t for t in tasks if t["metadata"]["file_name"] == "sync-record.wav"]
    assert recorded and recorded[0]["status"] == "completed" and recorded[0]["metadata"]["source"] == "sync"


def test_admin_key_and_bearer_tokens_guard_the_task_api(served: Served) -> None:
    with run_frontend(served, admin_api_key="adm-key", api_keys=["user-key"]) as base_url:
        assert httpx.get(f"{base_url}/task/all").status_code == 401
        assert httpx.get(f"{base_url}/task/all", headers={"x-admin-api-key": "wrong"}).status_code == 401
        assert httpx.get(f"{base_url}/task/all", headers={"x-admin-api-key": "adm-key"}).status_code == 200
        assert httpx.get(f"{base_url}/task/all", headers={"Authorization": "Bearer user-key"}).status_code == 200
        assert httpx.get(f"{base_url}/tasks", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_combine_transcript_with_speaker_turns(served: Served) -> None:
    transcript = {"text": "a b", "segments": [
        {"start": 0.0, "end": 2.0, "text": " Hello.", "words": [{"word": "Hello.", "start": 0.1, "end": 0.9}]},
        {"start": 2.5, "end": 4.0, "text": " Hi there."}]}
    turns = [{"start": 0.0, "end": 2.2, "speaker": "SPEAKER_00"}, {"start": 2.2, "end": 4.5, "speaker": "SPEAKER_01"}]
    response = httpx.post(f"{served.base_url}/service/combine", json={"transcript": transcript, "diarization": turns})
    segments = response.json()["segments"]
    assert [s["speaker"] for s in segments] == ["SPEAKER_00", "SPEAKER_01"]
    assert segments[0]["words"][0]["speaker"] == "SPEAKER_00"
    assert httpx.post(f"{served.base_url}/service/combine", json={"transcript": {}}).status_code == 400


def test_align_a_given_transcript(served: Served) -> None:
    """Word timings for known text (forced alignment through the engine's cross-attention DTW)."""
    transcript = {"segments": [
        {"start": 0.0, "end": 8.0, "text": "And so, my fellow Americans, ask not what your country can do for you,"},
        {"start": 8.0, "end": 11.0, "text": "ask what you can do for your country."}]}
    with httpx.Client(base_url=served.base_url, timeout=60) as client:
        response = client.post("/service/align", files={"file": ("jfk.wav", jfk_wav().read_bytes()),
                                                        "transcript": ("t.json", json.dumps(transcript))})
        assert response.status_code == 200, response.text
        task = wait_task(client, response.json()["identifier"])
        assert task["status"] == "completed" and task["metadata"]["task_type"] == "align", task
        segments = task["result"]["segments"]
        assert [s["text"].strip() for s in segments] == [s["text"] for s in transcript["segments"]]
        words = [w for s in segments for w in s["words"]]
        assert [w["word"].strip() for w in words][:4] == ["And", "so,", "my", "fellow"]
        starts = [w["start"] for w in words]
        assert starts == sorted(starts)
        country = [w for w in words if w["word"].strip().startswith("country")]
        assert len(country) == 2 and country[0]["end"] < 8.5 < country[1]["start"] and country[1]["end"] > 9.5
        bad = client.post("/service/align", files={"file": ("jfk.wav", jfk_wav().read_bytes())},
                          data={"transcript": "[{\"start\": 0}]"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "transcript"


def test_tasks_survive_crashes_of_the_frontend_and_of_triton(tmp_path: Path) -> None:
    env = {"FRONTEND_TASK_LEASE_S": "3", "FRONTEND_TASK_WORKERS": "1"}
    audio = long_recording(2.0).path.read_bytes()
    first = start_served(tmp_path, "tiny.en", **env)
    try:
        client = httpx.Client(base_url=first.base_url, timeout=60)
        ids = [upload(client, audio) for _ in range(3)]
        wait_task(client, ids[0], until=("processing",))
    finally:
        first.process.send_signal(signal.SIGKILL)  # no shutdown at all; Triton dies with its parent
        first.process.wait()
    deadline = time.monotonic() + 45  # Triton gets SIGTERM from the kernel and drains for up to 30 s
    while first.triton_pids() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert first.triton_pids() == []
    second = start_served(tmp_path, "tiny.en", FRONTEND_DATA_DIR=str(first.data_dir), **env)  # same task database
    try:
        client = httpx.Client(base_url=second.base_url, timeout=60)
        wait_task(client, ids[1], until=("processing", "completed"))
        [triton] = second.triton_pids()
        os.kill(triton, signal.SIGKILL)  # Triton dies mid-task: the task goes back to the queue
        finished = [wait_task(client, task_id, timeout=300) for task_id in ids]
        assert [t["status"] for t in finished] == ["completed"] * 3, [t["error"] for t in finished]
        assert all(wer(long_recording(2.0).text, t["result"]["text"]) < 0.25 for t in finished)
    finally:
        second.stop()


def test_replicas_sharing_postgresql_run_each_task_once(served: Served, postgres_url: str | None) -> None:
    if postgres_url is None:
        pytest.skip("no PostgreSQL server can be started here")
    with run_frontend(served, db_url=postgres_url, task_workers=2) as a, \
            run_frontend(served, db_url=postgres_url, task_workers=2) as b:
        client_a, client_b = httpx.Client(base_url=a, timeout=60), httpx.Client(base_url=b, timeout=60)
        ids = [upload(client_a if i % 2 else client_b, jfk_wav().read_bytes()) for i in range(8)]
        finished = [wait_task(client_a, task_id) for task_id in ids]
        assert all(t["status"] == "completed" for t in finished)
        assert [t["metadata"]["attempts"] for t in finished] == [1] * len(ids)  # none ran twice
        listed = {t["identifier"]: t for t in client_b.get("/task/all").json()["tasks"]}
        assert set(ids) <= set(listed)
        assert httpx.get(f"{a}/health/ready").status_code == 200
