"""The live model (`whisper_live`) called directly, as a gRPC client would: sessions of live audio, turns cut
by server_vad or by commits, transcribed by the entry model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from scipy.signal import resample_poly

from harness.assets import JFK_TEXT, jfk_wav
from harness.grpc_calls import LiveStream
from harness.nonspeech import nonspeech
from harness.speech import speech_clips
from harness.stack import Served
from harness.text import wer
from whisper_triton.audio import decode_audio

CHUNK = 4800  # bytes: 100 ms of 24 kHz 16-bit PCM


@pytest.fixture(scope="module")
def live(served: Served) -> Iterator[LiveStream]:
    stream = LiveStream(served.grpc_url)
    yield stream
    stream.close()


def pcm24k(samples: np.ndarray) -> bytes:
    return (np.clip(resample_poly(samples, 3, 2), -1, 1) * 32767).astype("<i2").tobytes()


def talk() -> bytes:
    jfk = decode_audio(jfk_wav().read_bytes()).samples
    silence = nonspeech("room_tone", 2.0, seed=11)
    return pcm24k(np.concatenate([silence, jfk, silence]).astype(np.float32))


def run(live: LiveStream, session: str, data: bytes, control: dict[str, Any], end: bool = True) -> list[dict[str, Any]]:
    ids = [live.send(session, control={"type": "start", "config": control})]
    ids += [live.send(session, audio=data[at : at + CHUNK]) for at in range(0, len(data), CHUNK)]
    if end:
        ids.append(live.send(session, control={"type": "end"}))
    return [event for request in ids for event in live.events(request)]


def test_server_vad_turns_come_back_transcribed(live: LiveStream) -> None:
    events = run(live, "vad-1", talk(), {"format": "audio/pcm", "rate": 24000, "language": "en"})
    kinds = [e["type"] for e in events]
    assert kinds[0] == "speech_started" and kinds[-1] == "ended" and "error" not in kinds
    completed = [e for e in events if e["type"] == "completed"]
    committed = [e for e in events if e["type"] == "committed"]
    assert completed and [e["item"] for e in completed] == [e["item"] for e in committed] == list(range(len(completed)))
    for turn in completed:  # the deltas spell the final text: they never contradict it
        deltas = "".join(e["text"] for e in events if e["type"] == "delta" and e["item"] == turn["item"])
        assert deltas.strip() == turn["text"] and turn["language"] == "en" and turn["audio_seconds"] > 0
    assert wer(JFK_TEXT, " ".join(e["text"] for e in completed)) < 0.15
    assert 1500 <= committed[0]["audio_start_ms"] <= 2300  # JFK starts at 2 s, 300 ms of prefix padding


def test_manual_commits_and_bad_requests_get_error_events(live: LiveStream) -> None:
    data = talk()
    events = run(live, "manual-1", data, {"turn_detection": None}, end=False)
    assert events == []  # no turn detection: nothing happens until the client commits
    done = live.events(live.send("manual-1", control={"type": "commit"}))
    assert done[0]["type"] == "committed" and done[-1]["type"] == "completed"
    assert wer(JFK_TEXT, done[-1]["text"]) < 0.15 and done[0]["audio_end_ms"] == pytest.approx(15_000, abs=50)
    empty = live.events(live.send("manual-1", control={"type": "commit"}))
    assert [(e["type"], e["code"]) for e in empty] == [("error", "input_audio_buffer_commit_empty")]
    cleared = live.events(live.send("manual-1", audio=data[:CHUNK * 5], control={"type": "clear"}))
    assert [e["type"] for e in cleared] == ["cleared"]
    unknown = live.events(live.send("never-started", audio=data[:CHUNK]))
    assert unknown[0]["type"] == "error" and unknown[0]["code"] == "session_not_found"
    bad = live.events(live.send("bad-format", control={"type": "start", "config": {"format": "audio/mp3"}}))
    assert bad[0]["type"] == "error" and bad[0]["param"] == "format"
    junk = live.events(live.send("manual-1", control={"type": "dance"}))
    assert junk[0]["type"] == "error" and junk[0]["code"] == "invalid_value"
    ended = live.events(live.send("manual-1", control={"type": "end"}))
    assert ended[-1]["type"] == "ended"
    assert live.events(live.send("manual-1", audio=data[:CHUNK]))[0]["code"] == "session_not_found"


def test_requests_apply_in_their_order_whatever_order_they_arrive(live: LiveStream) -> None:
    data = talk()
    first = live.send("order-1", control={"type": "start", "config": {"turn_detection": None}}, seq=0)
    later = live.send("order-1", control={"type": "commit"}, seq=2)  # sent before the audio it commits
    audio = live.send("order-1", audio=data, seq=1)
    assert live.events(first) == [] and live.events(audio) == []
    committed = live.events(later)
    assert committed[0]["type"] == "committed" and committed[-1]["type"] == "completed"
    assert wer(JFK_TEXT, committed[-1]["text"]) < 0.15
    again = live.events(live.send("order-1", audio=data[:CHUNK], seq=1))
    assert again[0]["code"] == "sequence_repeated"


@pytest.mark.parametrize("language", ["en", None])
def test_turns_of_several_sessions_at_once_each_get_their_own_text(live: LiveStream, language: str | None) -> None:
    """Turns that reach the engine together may share one Whisper window (`whisper_triton.packing`): each
    session still gets exactly its own words. Without a language, the engine guesses each turn's first."""
    clips = [c for c in speech_clips("report") if 2.0 <= c.duration <= 5.0][10:16]
    config = {"format": "audio/pcm", "rate": 24000, "language": language, "turn_detection": None}
    commits = []
    for n, clip in enumerate(clips):
        live.send(f"together-{language}-{n}", control={"type": "start", "config": config})
        live.send(f"together-{language}-{n}", audio=pcm24k(np.asarray(clip.samples, dtype=np.float32)))
    for n in range(len(clips)):  # committed together: the turns meet at the engine
        commits.append(live.send(f"together-{language}-{n}", control={"type": "commit"}))
    for clip, request in zip(clips, commits, strict=True):
        completed = [e for e in live.events(request) if e["type"] == "completed"]
        assert len(completed) == 1 and completed[0]["language"] == "en"
        assert wer(clip.text, completed[0]["text"]) <= 0.25, (clip.text, completed[0]["text"])
