"""Overload under `make serve`'s process: bounded admission and task queue, and nothing kept afterwards.

A burst of 200 concurrent transcriptions against 4 admission slots: every request gets an answer in
time, a transcript or a clean 503 (OpenAI error shape, Retry-After). Over 1,000 more, the frontend's
memory stays flat, and its open files, sockets and temporary files come back to where they were.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
import wave
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from harness.assets import jfk_wav, long_recording
from harness.procfs import eventually, in_flight, open_fds, open_sockets, rss_bytes, steady
from harness.stack import Served, start_served

LIMIT = 4
QUEUE = 3
RETRY_AFTER = "3"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("overload")
    (tmp / "tmp").mkdir()
    instance = start_served(tmp, "tiny.en", FRONTEND_MAX_CONCURRENT_REQUESTS=str(LIMIT),
                            MAX_TASK_QUEUE_SIZE=str(QUEUE), FRONTEND_TASK_WORKERS="1",
                            FRONTEND_RETRY_AFTER_S=RETRY_AFTER, TMPDIR=str(tmp / "tmp"))
    yield instance
    instance.stop()


def clip(seconds: float) -> bytes:
    """The first seconds of the JFK clip ("And so, my fellow Americans")."""
    with wave.open(str(jfk_wav())) as source:
        frames = source.readframes(int(source.getframerate() * seconds))
        params = source.getparams()
    out = io.BytesIO()
    with wave.open(out, "wb") as target:
        target.setparams(params)
        target.writeframes(frames)
    return out.getvalue()


@dataclass
class Outcome:
    status: int  # 0: no answer (timeout or connection error)
    seconds: float
    retry_after: str | None = None
    error: dict[str, object] | None = None
    text: str = ""


async def one(client: httpx.AsyncClient, audio: bytes) -> Outcome:
    started = time.monotonic()
    try:
        response = await client.post("/v1/audio/transcriptions", data={"model": "whisper-1"},
                                     files={"file": ("a.wav", audio)})
    except httpx.HTTPError:
        return Outcome(0, time.monotonic() - started)
    outcome = Outcome(response.status_code, time.monotonic() - started, response.headers.get("retry-after"))
    if response.status_code == 200:
        outcome.text = response.json()["text"]
    else:
        outcome.error = response.json().get("error")
    return outcome


async def burst(base_url: str, audio: bytes, count: int, concurrency: int) -> list[Outcome]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:
        gate = asyncio.Semaphore(concurrency)

        async def gated() -> Outcome:
            async with gate:
                return await one(client, audio)

        return await asyncio.gather(*(gated() for _ in range(count)))


def check(outcomes: list[Outcome], bound_s: float) -> Counter[int]:
    statuses = Counter(o.status for o in outcomes)
    assert set(statuses) <= {200, 503}, statuses  # no timeouts without an answer, no 500s
    assert statuses[200] >= LIMIT, statuses
    assert max(o.seconds for o in outcomes) < bound_s
    for o in outcomes:
        if o.status == 200:
            assert "fellow" in o.text.lower(), o.text
        else:
            assert o.retry_after == RETRY_AFTER and o.error is not None
            assert set(o.error) == {"message", "type", "param", "code"} and o.error["code"] == "server_overloaded"
    return statuses


def files_under(*folders: Path) -> set[str]:
    return {str(p) for folder in folders for p in folder.rglob("*")}


def test_a_burst_gets_answers_and_leaves_nothing_behind(bounded: Served) -> None:
    audio = clip(2.0)
    data_dir, tmp_dir = bounded.data_dir, bounded.log_path.parent / "tmp"
    pid = bounded.process.pid
    check(asyncio.run(burst(bounded.base_url, audio, 100, 100)), 60)  # warm-up: allocator and caches settle
    sockets = steady(lambda: open_sockets(pid))  # idle keep-alive connections close after 5 s
    fds, files = open_fds(pid), files_under(data_dir, tmp_dir)

    started = time.monotonic()
    statuses = check(asyncio.run(burst(bounded.base_url, audio, 200, 200)), 60)
    print(f"burst of 200: {dict(statuses)} in {time.monotonic() - started:.1f} s")
    after_burst = rss_bytes(pid)

    started = time.monotonic()
    statuses = Counter[int]()
    for _ in range(4):  # 1,000 more, 50 at a time
        statuses += check(asyncio.run(burst(bounded.base_url, audio, 250, 50)), 60)
    after_more = rss_bytes(pid)
    print(f"1,000 more: {dict(statuses)} in {time.monotonic() - started:.1f} s; frontend RSS "
          f"{after_burst / MIB:.0f} -> {after_more / MIB:.0f} MiB")
    assert after_more - after_burst < 16 * MIB

    assert in_flight(bounded.base_url) == 0
    assert eventually(lambda: open_sockets(pid) <= sockets and open_fds(pid) <= fds, 20), (
        open_fds(pid), fds, os.listdir(f"/proc/{pid}/fd"))
    assert files_under(data_dir, tmp_dir) == files  # no temporary files, no uploads left on disk


def test_the_task_queue_is_bounded(bounded: Served) -> None:
    with httpx.Client(base_url=bounded.base_url, timeout=60) as client:
        running = client.post("/speech-to-text", files={"file": ("long.wav", long_recording(1.0).path.read_bytes())})
        running_id = running.json()["identifier"]
        assert eventually(lambda: client.get(f"/task/{running_id}").json()["status"] == "processing", 30)

        async def submit_all() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=bounded.base_url, timeout=60) as submitter:
                return await asyncio.gather(*(
                    submitter.post("/speech-to-text", files={"file": ("a.wav", clip(3.0))}) for _ in range(30)))

        responses = asyncio.run(submit_all())
        accepted = [r.json()["identifier"] for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code != 200]
        assert len(accepted) == QUEUE, [r.status_code for r in responses]  # the one running is not queued
        for response in refused:
            assert response.status_code == 503 and response.headers["retry-after"] == RETRY_AFTER
            assert response.json()["error"]["code"] == "server_overloaded"
        for task_id in [running_id, *accepted]:  # every accepted task runs to the end
            assert eventually(lambda t=task_id: client.get(f"/task/{t}").json()["status"] == "completed", 120, 0.5)


def test_stopping_after_the_load_is_quick(bounded: Served) -> None:
    """After traffic, Ctrl-C used to wait 30 s for Triton: streams cancelled after their last response
    kept the entry model held in Triton until it gave up."""
    started = time.monotonic()
    assert bounded.stop() == 0
    assert time.monotonic() - started < 15
