"""Per-key limits and fair share against the real stack, with the openai SDK as the client.

One served stack with named keys, each with its own limits (FRONTEND_KEY_LIMITS): `alice` 3 requests a
minute, `carol` 15 audio seconds an hour, `dave` one transcription at a time; `bob`, `flood` and `steady`
unlimited. FRONTEND_FAIR_SLOTS=2 (what this 2-core machine decodes at once without losing throughput):
beyond, requests wait their key's turn. A key over a limit gets 429 in OpenAI's shape with Retry-After and
the x-ratelimit-* headers while the other keys go on; a key that floods does not slow another key down.
"""

from __future__ import annotations

import asyncio
import base64
import json
import statistics
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from harness.assets import jfk_wav
from harness.stack import Served, start_served
from tests.e2e.test_http_errors import assert_openai_error

KEYS = {name: f"sk-test-{name}-5f0e1d2c3b4a" for name in ("alice", "bob", "carol", "dave", "erin", "flood",
                                                                  "steady")}
LIMITS = {"alice": {"requests_per_minute": 3}, "carol": {"audio_seconds_per_hour": 15},
          "dave": {"max_concurrent": 1}, "erin": {"audio_seconds_per_hour": 15}}
FAIR_SLOTS = 2


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    instance = start_served(tmp_path_factory.mktemp("serve-limits"), "tiny.en",
                            FRONTEND_API_KEYS=",".join(f"{n}:{k}" for n, k in KEYS.items()),
                            FRONTEND_KEY_LIMITS=json.dumps(LIMITS), FRONTEND_FAIR_SLOTS=str(FAIR_SLOTS))
    yield instance
    instance.stop()


def sdk(served: Served, name: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.base_url}/v1", api_key=KEYS[name], max_retries=0, timeout=300)


def transcribe(client: openai.OpenAI) -> openai.types.audio.Transcription:
    with jfk_wav().open("rb") as audio:
        return client.audio.transcriptions.create(model="whisper-1", file=audio)


def post(served: Served, name: str, audio: bytes) -> httpx.Response:
    return httpx.post(f"{served.base_url}/v1/audio/transcriptions", headers={"Authorization": f"Bearer {KEYS[name]}"},
                      data={"model": "whisper-1"}, files={"file": ("a.wav", audio)}, timeout=300)


def test_a_key_over_its_requests_per_minute_gets_429_while_others_go_on(limited: Served) -> None:
    alice = sdk(limited, "alice")
    with jfk_wav().open("rb") as audio:
        raw = alice.audio.transcriptions.with_raw_response.create(model="whisper-1", file=audio)
    assert "fellow americans" in raw.parse().text.lower()
    assert raw.headers["x-ratelimit-limit-requests"] == "3"
    assert raw.headers["x-ratelimit-remaining-requests"] == "2"
    assert raw.headers["x-ratelimit-reset-requests"].endswith("s")
    for _ in range(2):
        transcribe(alice)
    with pytest.raises(openai.RateLimitError) as refused:
        transcribe(alice)
    response = refused.value.response
    error = assert_openai_error(response, 429)
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    assert "requests per minute" in error["message"] and KEYS["alice"] not in error["message"]
    # 3 a minute: one back every 20 s, so the wait is at most 20 s and at least the time since the last request
    assert 1 <= int(response.headers["retry-after"]) <= 20
    assert 0 < int(response.headers["retry-after-ms"]) <= 20_000
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert "x-should-retry" not in response.headers  # the SDKs retry a 429 after Retry-After
    for _ in range(4):  # bob, unlimited, is not affected, and gets no x-ratelimit headers
        with jfk_wav().open("rb") as audio:
            ok = sdk(limited, "bob").audio.transcriptions.with_raw_response.create(model="whisper-1", file=audio)
        assert "fellow" in ok.parse().text.lower()
        assert not any(h.startswith("x-ratelimit") for h in ok.headers)
    # Chat completions count against the same budget.
    part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(jfk_wav().read_bytes()).decode(),
                                                   "format": "wav"}}
    with pytest.raises(openai.RateLimitError):
        alice.chat.completions.create(model="whisper-1", messages=[{"role": "user", "content": [part]}])  # type: ignore[list-item]
    # So do task submissions: queuing a task is a request too.
    task = httpx.post(f"{limited.base_url}/speech-to-text", headers={"Authorization": f"Bearer {KEYS['alice']}"},
                      files={"file": ("a.wav", jfk_wav().read_bytes())}, timeout=60)
    assert assert_openai_error(task, 429)["code"] == "rate_limit_exceeded"


def test_the_audio_budget_refuses_once_spent(limited: Served) -> None:
    carol = sdk(limited, "carol")
    with jfk_wav().open("rb") as audio:
        first = carol.audio.transcriptions.with_raw_response.create(model="whisper-1", file=audio)
    assert first.headers["x-ratelimit-limit-audio-seconds"] == "15"
    assert first.headers["x-ratelimit-remaining-audio-seconds"] == "4"  # 15 - 11 s of JFK
    transcribe(carol)  # 4 s left: it runs, and overdraws the budget
    with pytest.raises(openai.RateLimitError) as refused:
        transcribe(carol)
    response = refused.value.response
    error = assert_openai_error(response, 429)
    assert "audio seconds per hour" in error["message"]
    # 7 s overdrawn at 15 s an hour: 8 s of audio come back in 8 * 240 s
    assert 1800 <= int(response.headers["retry-after"]) <= 8 * 240
    assert response.headers["x-ratelimit-remaining-audio-seconds"] == "0"
    transcribe(sdk(limited, "bob"))


def test_speech_timestamps_spend_the_audio_budget_too(limited: Served) -> None:
    def regions() -> httpx.Response:
        return httpx.post(f"{limited.base_url}/v1/audio/speech/timestamps", timeout=300,
                          headers={"Authorization": f"Bearer {KEYS['erin']}"},
                          files={"file": ("a.wav", jfk_wav().read_bytes())})

    first = regions()
    assert first.status_code == 200 and first.json()
    assert first.headers["x-ratelimit-remaining-audio-seconds"] == "4"  # 15 - 11 s of JFK
    assert regions().status_code == 200  # 4 s left: it runs, and overdraws the budget
    assert "audio seconds per hour" in assert_openai_error(regions(), 429)["message"]


def test_concurrent_transcriptions_of_one_key(limited: Served) -> None:
    audio = jfk_wav().read_bytes()

    async def three_at_once(name: str) -> list[httpx.Response]:
        return list(await asyncio.gather(*(asyncio.to_thread(post, limited, name, audio) for _ in range(3))))

    statuses = sorted(r.status_code for r in asyncio.run(three_at_once("dave")))
    assert statuses[0] == 200 and 429 in statuses, statuses
    refused = next(r for r in asyncio.run(three_at_once("dave")) if r.status_code == 429)
    assert assert_openai_error(refused, 429)["code"] == "rate_limit_exceeded"
    assert refused.headers["x-ratelimit-limit-concurrent"] == "1" and refused.headers["retry-after"] == "1"
    assert [r.status_code for r in asyncio.run(three_at_once("bob"))] == [200, 200, 200]
    assert post(limited, "dave", audio).status_code == 200  # freed again


def test_a_flooding_key_does_not_take_the_other_keys_share(limited: Served) -> None:
    audio = jfk_wav().read_bytes()
    seconds = 20.0
    latencies: dict[str, list[float]] = {"flood": [], "steady": []}

    async def loop(client: httpx.AsyncClient, name: str, until: float) -> None:
        while time.monotonic() < until:
            started = time.monotonic()
            response = await client.post("/v1/audio/transcriptions", headers={"Authorization": f"Bearer {KEYS[name]}"},
                                         data={"model": "whisper-1"}, files={"file": ("a.wav", audio)})
            assert response.status_code == 200, response.text
            if time.monotonic() < until:  # completed within the measured time
                latencies[name].append(time.monotonic() - started)

    async def load() -> None:
        limits = httpx.Limits(max_connections=20, max_keepalive_connections=20)
        async with httpx.AsyncClient(base_url=limited.base_url, timeout=300, limits=limits) as client:
            until = time.monotonic() + seconds
            await asyncio.gather(*(loop(client, "flood", until) for _ in range(10)), loop(client, "steady", until))

    asyncio.run(load())
    flood, steady = len(latencies["flood"]), len(latencies["steady"])
    median = {name: statistics.median(values) for name, values in latencies.items()}
    print(f"in {seconds:.0f} s: flood (10 at a time) {flood} done, median {median['flood']:.2f} s;"
          f" steady (1 at a time) {steady} done, median {median['steady']:.2f} s")
    assert steady >= (flood + steady) / 3, (flood, steady)  # about half; without fair share 1/11
    assert median["steady"] < median["flood"] / 2


def test_logs_and_metrics_name_the_key_never_the_key(limited: Served) -> None:
    metrics = httpx.get(f"{limited.base_url}/metrics", timeout=10).text
    lines = [line for line in metrics.splitlines() if line.startswith("whisper_frontend_")]
    assert any(line.startswith("whisper_frontend_rate_limited_total{") and 'key="alice"' in line
               and 'limit="requests"' in line for line in lines)
    assert any(line.startswith("whisper_frontend_audio_seconds_total{") and 'key="steady"' in line for line in lines)
    assert any(line.startswith("whisper_frontend_requests_total{") and 'key="flood"' in line
               and 'status="200"' in line for line in lines)
    log = limited.log()
    assert any("/v1/audio/transcriptions" in line and "key=alice" in line and "429" in line
               for line in log.splitlines())
    for key in KEYS.values():
        assert key not in metrics and key not in log
