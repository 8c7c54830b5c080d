"""A live session: audio in the client's format cut into turns by server_vad or by the client's commits."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.signal import resample_poly

from harness.assets import jfk_wav
from harness.nonspeech import nonspeech
from whisper_triton.audio import SAMPLE_RATE, decode_audio
from whisper_triton.errors import InvalidRequestError
from whisper_triton.live_contract import (
    ClearedEvent,
    Commit,
    CommittedEvent,
    CompletedEvent,
    LiveConfig,
    SpeechStartedEvent,
    SpeechStoppedEvent,
    Start,
    TimeoutEvent,
    TurnDetection,
    decode_control,
    decode_event,
    encode,
)
from whisper_triton.live_session import LiveSession, Retract, Turn


@pytest.fixture(scope="module")
def jfk() -> np.ndarray:
    return decode_audio(jfk_wav().read_bytes()).samples


def pcm24k(samples: np.ndarray) -> bytes:
    """16 kHz float32 as OpenAI's Realtime audio: 16-bit PCM at 24 kHz."""
    return (np.clip(resample_poly(samples, 3, 2), -1, 1) * 32767).astype("<i2").tobytes()


def stream(session: LiveSession, data: bytes, piece: int = 4800) -> tuple[list[object], list[object]]:
    events, turns = [], []
    for at in range(0, len(data), piece):
        more, ended = session.append(data[at : at + piece])
        events += more
        turns += ended
    return events, turns


def test_server_vad_cuts_turns_where_the_speaker_stops(jfk: np.ndarray) -> None:
    silence = nonspeech("room_tone", 3.0, seed=5)
    talk = np.concatenate([silence, jfk, silence, jfk[: 4 * SAMPLE_RATE], silence]).astype(np.float32)
    session = LiveSession(LiveConfig())
    events, everything = stream(session, pcm24k(talk))
    turns = [t for t in everything if isinstance(t, Turn) and not t.tentative]
    tentative = {t.item: t for t in everything if isinstance(t, Turn) and t.tentative}
    # A turn whose tentative end stood (only silence after it) is marked so; its tentative audio is the start
    # of the turn's, ending 200 ms into the pause.
    for turn in turns:
        assert turn.speculated == (turn.item in tentative and not any(
            isinstance(r, Retract) and r.item == turn.item and everything.index(r) > everything.index(
                tentative[turn.item]) for r in everything))
        if turn.speculated:
            early = tentative[turn.item]
            assert early.start_ms == turn.start_ms and turn.end_ms - early.end_ms == pytest.approx(300, abs=40)
            assert np.array_equal(turn.samples[: len(early.samples)], early.samples)
    assert any(t.speculated for t in turns)
    kinds = [type(e) for e in events]
    assert kinds[:3] == [SpeechStartedEvent, SpeechStoppedEvent, CommittedEvent]
    assert kinds.count(SpeechStartedEvent) == kinds.count(CommittedEvent) == len(turns) >= 2
    assert [t.item for t in turns] == list(range(len(turns)))
    first, last = turns[0], turns[-1]
    assert 2_500 <= first.start_ms <= 3_300  # JFK starts at 3 s; 300 ms of prefix padding
    assert last.end_ms <= 3_000 + 11_000 + 3_000 + 4_000 + 3_000 and last.end_ms > 3_000 + 11_000 + 3_000 + 3_500
    for turn in turns:
        assert abs(len(turn.samples) - (turn.end_ms - turn.start_ms) * 16) <= 16
    assert all(a.end_ms <= b.start_ms for a, b in itertools.pairwise(turns))
    # Nothing of the room tone between the two JFKs is a turn of its own
    assert not any(11_000 + 3_000 + 600 < t.start_ms and t.end_ms < 17_000 for t in turns)
    assert session.heard == pytest.approx(len(talk), abs=48)


def test_manual_turns_commit_and_clear(jfk: np.ndarray) -> None:
    session = LiveSession(LiveConfig(turn_detection=None), max_buffer_s=20)
    assert stream(session, pcm24k(jfk)) == ([], [])
    events, turn = session.commit()
    assert events == [CommittedEvent(0, 0, turn.end_ms)] and abs(turn.end_ms - 11_000) < 50
    with pytest.raises(InvalidRequestError) as empty:
        session.commit()
    assert empty.value.code == "input_audio_buffer_commit_empty"
    stream(session, pcm24k(jfk[:SAMPLE_RATE]))
    assert session.clear() == [ClearedEvent()]
    with pytest.raises(InvalidRequestError):
        session.commit()
    stream(session, pcm24k(jfk))
    with pytest.raises(InvalidRequestError) as full:
        stream(session, pcm24k(jfk))  # over the 20 s buffer
    assert full.value.code == "input_audio_buffer_full"


def test_the_format_and_turn_detection_change_mid_session(jfk: np.ndarray) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop

    session = LiveSession(LiveConfig(turn_detection=None))
    stream(session, pcm24k(jfk[:SAMPLE_RATE]))
    session.configure(LiveConfig(format="g711_ulaw", turn_detection=TurnDetection(silence_duration_ms=300)))
    linear = (resample_poly(jfk, 1, 2) * 32767).astype("<i2").tobytes()
    events, turns = stream(session, audioop.lin2ulaw(linear, 2) + bytes([0xFF]) * 8000, piece=800)
    assert turns and isinstance(events[0], SpeechStartedEvent)
    assert session.heard == pytest.approx(SAMPLE_RATE + len(jfk) + SAMPLE_RATE, abs=64)
    with pytest.raises(InvalidRequestError):
        session.configure(LiveConfig(format="audio/mp3"))
    with pytest.raises(InvalidRequestError):
        session.configure(LiveConfig(turn_detection=TurnDetection(threshold=1.5)))


def test_semantic_vad_waits_longer_when_less_eager(jfk: np.ndarray) -> None:
    pause = np.zeros(SAMPLE_RATE, dtype=np.float32)
    talk = np.concatenate([jfk[: 3 * SAMPLE_RATE], pause, jfk[3 * SAMPLE_RATE : 6 * SAMPLE_RATE], pause * 2])
    counts = {}
    for eagerness in ("high", "low"):
        session = LiveSession(LiveConfig(turn_detection=TurnDetection(type="semantic_vad", eagerness=eagerness)))
        counts[eagerness] = sum(isinstance(t, Turn) and not t.tentative for t in stream(session, pcm24k(talk))[1])
    assert counts["high"] > counts["low"] >= 1


def test_an_idle_timeout_commits_the_silence_as_an_empty_turn(jfk: np.ndarray) -> None:
    room = nonspeech("room_tone", 4.0, seed=3)
    talk = np.concatenate([room, jfk, room]).astype(np.float32)
    session = LiveSession(LiveConfig(turn_detection=TurnDetection(idle_timeout_ms=3000)))
    events, everything = stream(session, pcm24k(talk))
    turns = [t for t in everything if isinstance(t, Turn) and not t.tentative]
    # 4 s of room tone (and JFK's first 0.5 s): one timeout (0-3 s); JFK's turns (his longest pause is 2.5 s);
    # 4 s of room tone less the last turn's trailing silence: one more
    assert [t.silent for t in turns] == [True] + [False] * (len(turns) - 2) + [True] and len(turns) >= 3
    assert [t.item for t in turns] == list(range(len(turns)))
    timeouts = [e for e in events if isinstance(e, TimeoutEvent)]
    assert [(t.item, t.audio_start_ms, t.audio_end_ms) for t in timeouts] == [
        (0, 0, turns[0].end_ms), (turns[-1].item, turns[-2].end_ms, turns[-1].end_ms)]
    assert all(3000 <= t.audio_end_ms - t.audio_start_ms < 3000 + 32 for t in timeouts)
    committed = [e for e in events if isinstance(e, CommittedEvent)]
    assert [(c.item, c.audio_start_ms, c.audio_end_ms) for c in committed] == [
        (t.item, t.start_ms, t.end_ms) for t in turns]
    assert all(len(t.samples) == 0 for t in turns if t.silent)
    assert turns[1].start_ms >= turns[0].end_ms  # the first turn's prefix padding does not reach into the timeout
    # off by default, and server_vad's alone
    assert not any(isinstance(e, TimeoutEvent) for e in stream(LiveSession(LiveConfig()), pcm24k(room))[0])
    with pytest.raises(InvalidRequestError):
        TurnDetection(type="semantic_vad", idle_timeout_ms=5000).check()
    with pytest.raises(InvalidRequestError):
        TurnDetection(idle_timeout_ms=10).check()


def test_controls_and_events_travel_as_json() -> None:
    assert decode_control(b'{"type": "start", "config": {"format": "audio/pcm", "rate": 24000, '
                          b'"turn_detection": null, "unknown": 1}}') == Start(
        LiveConfig(format="audio/pcm", rate=24000, turn_detection=None))
    assert decode_control(b'{"type": "commit"}') == Commit()
    for junk in (b"{", b'{"type": "dance"}', b'{"type": "start", "config": {"rate": "fast"}}'):
        with pytest.raises(InvalidRequestError):
            decode_control(junk)
    event = CompletedEvent(3, " Hello.", "en", 1.5)
    assert decode_event(encode(event)) == event
    assert b'"type":"completed"' in encode(event)
