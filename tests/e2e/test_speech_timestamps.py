"""`POST /v1/audio/speech/timestamps` (speaches' VAD endpoint) through the real stack, on real speech."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import numpy as np
import pytest

from harness.assets import jfk_wav, wav_bytes
from harness.nonspeech import nonspeech
from harness.speech import speech_clips
from harness.stack import Served
from whisper_triton.audio import SAMPLE_RATE, decode_audio

SILENCE = (11.0, 19.0)  # seconds: room tone inserted between two recordings of real speech


@pytest.fixture(scope="module")
def http(served: Served) -> httpx.Client:
    return httpx.Client(base_url=served.base_url, timeout=300)


@pytest.fixture(scope="module")
def recording() -> bytes:
    """JFK (11 s), 8 s of room tone, then real recordings of other speakers, one after another."""
    jfk = decode_audio(jfk_wav().read_bytes()).samples
    clips = [clip.samples for clip in speech_clips("report")[:6]]
    return wav_bytes(np.concatenate([jfk, nonspeech("room_tone", SILENCE[1] - SILENCE[0], seed=5), *clips]))


def regions(http: httpx.Client, audio: bytes, **fields: Any) -> list[dict[str, int]]:
    response = http.post("/v1/audio/speech/timestamps", files={"file": ("a.wav", audio)},
                         data={k: str(v) for k, v in fields.items()})
    assert response.status_code == 200, response.text
    body: list[dict[str, int]] = response.json()
    return body


def test_regions_cover_the_speech_and_leave_out_the_silence(http: httpx.Client, recording: bytes) -> None:
    found = regions(http, recording)
    duration_ms = len(decode_audio(recording).samples) * 1000 // SAMPLE_RATE
    assert found and all(set(r) == {"start", "end"} and isinstance(r["start"], int) for r in found)
    assert all(0 <= r["start"] < r["end"] <= duration_ms for r in found)
    assert all(a["end"] <= b["start"] for a, b in itertools.pairwise(found))
    quiet_from, quiet_to = (round(s * 1000) for s in SILENCE)
    assert not any(r["start"] < quiet_to - 500 and r["end"] > quiet_from + 500 for r in found)
    # JFK's phrases (he pauses about a second between them), and the recordings after the silence.
    for moment in (1_000, 6_500, 9_500, 21_000, 28_000, 35_000):
        assert any(r["start"] <= moment <= r["end"] for r in found), moment
    after = sum(r["end"] - max(r["start"], SILENCE[1] * 1000) for r in found if r["end"] > SILENCE[1] * 1000)
    assert after > 0.8 * (duration_ms - SILENCE[1] * 1000)


def test_parameters_change_the_regions(http: httpx.Client, recording: bytes) -> None:
    long_pauses = regions(http, recording, min_silence_duration_ms=2000)
    short_pauses = regions(http, recording, min_silence_duration_ms=100)
    assert len(short_pauses) > len(long_pauses)
    padded = regions(http, recording, min_silence_duration_ms=2000, speech_pad_ms=400)
    assert len(padded) <= len(long_pauses)
    assert sum(r["end"] - r["start"] for r in padded) > sum(r["end"] - r["start"] for r in long_pauses)
    strict = regions(http, recording, threshold=0.95, min_silence_duration_ms=100)
    lenient = regions(http, recording, threshold=0.2, min_silence_duration_ms=100)
    assert sum(r["end"] - r["start"] for r in strict) < sum(r["end"] - r["start"] for r in lenient)
    capped = regions(http, recording, max_speech_duration_s=3)
    assert all(r["end"] - r["start"] <= 3000 for r in capped)
    kept = regions(http, recording, min_silence_duration_ms=100, min_speech_duration_ms=1500)
    assert all(r["end"] - r["start"] >= 1500 for r in kept) and len(kept) < len(short_pauses)


def test_silence_has_no_speech(http: httpx.Client) -> None:
    assert regions(http, wav_bytes(nonspeech("room_tone", 5.0, seed=9))) == []


@pytest.mark.parametrize(("files", "fields", "param"), [
    ({"file": ("a.wav", b"this is not audio at all" * 40)}, {}, "file"),
    ({"file": ("a.wav", b"")}, {}, "file"),
    ({}, {"threshold": "0.5"}, "file"),
    (None, {"threshold": "1.5"}, "threshold"),
    (None, {"threshold": "-0.1"}, "threshold"),
    (None, {"threshold": "high"}, "threshold"),
    (None, {"neg_threshold": "2"}, "neg_threshold"),
    (None, {"min_silence_duration_ms": "-5"}, "min_silence_duration_ms"),
    (None, {"speech_pad_ms": "-1"}, "speech_pad_ms"),
    (None, {"speech_pad_ms": "12.5"}, "speech_pad_ms"),
    (None, {"min_speech_duration_ms": "-100"}, "min_speech_duration_ms"),
    (None, {"max_speech_duration_s": "0"}, "max_speech_duration_s"),
])
def test_bad_input_is_a_400_in_openai_shape(http: httpx.Client, files: dict[str, Any] | None, fields: dict[str, str],
                                            param: str) -> None:
    upload = files if files is not None else {"file": ("a.wav", jfk_wav().read_bytes())}
    response = http.post("/v1/audio/speech/timestamps", files=upload or {"x": ("x", b"")}, data=fields)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param
