"""The live model's sessions with a fake transcriber: order, turns one after another, failures, idle sessions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import numpy as np
import pytest

from whisper_triton.contract import DoneEvent, Event, Segment, SegmentsEvent, TokenLogprob
from whisper_triton.errors import EngineError, InvalidRequestError, UnavailableError
from whisper_triton.live_contract import (
    Commit,
    CompletedEvent,
    DeltaEvent,
    End,
    EndedEvent,
    FailedEvent,
    LiveConfig,
    Start,
    TimeoutEvent,
    TurnDetection,
    Update,
)
from whisper_triton.live_service import LiveLimits, LiveSessions, pin_language

MANUAL = Start(LiveConfig(format="pcm16", rate=16_000, turn_detection=None))
SECOND = (np.full(16_000, 1000, dtype="<i2")).tobytes()  # 1 s of 16 kHz PCM


def segment(start: float, end: float, text: str) -> Segment:
    return Segment(start, end, text, [1], 0.0, -0.2, 1.2, 0.01)


class FakeTranscriber:
    """Answers each turn with two windows; records the order turns started and finished in."""

    def __init__(self, delays: list[float] | None = None, fail: set[int] | None = None) -> None:
        self.delays = delays or []
        self.fail = fail or set()
        self.log: list[str] = []
        self.calls = 0

    async def __call__(self, samples: np.ndarray, config: LiveConfig,
                       request_id: str | None = None) -> AsyncIterator[Event]:
        turn = self.calls
        self.calls += 1
        self.log.append(f"start {turn}")
        await asyncio.sleep(self.delays[turn] if turn < len(self.delays) else 0)
        if turn in self.fail:
            raise EngineError("the engine broke")
        first, second = segment(0.0, 1.0, f" turn {turn}."), segment(1.0, 2.0, " More.")
        yield SegmentsEvent(language="en", progress=0.5, segments=[first])
        yield SegmentsEvent(language="en", progress=1.0, segments=[second])
        self.log.append(f"end {turn}")
        yield DoneEvent(task="transcribe", language="en", duration=len(samples) / 16000,
                        text=f"turn {turn}. More.", segments=[first, second])


async def collect(sessions: LiveSessions, *request: Any) -> list[Any]:
    return [event async for event in sessions.handle(*request)]


async def test_an_idle_timeout_completes_empty_after_the_turns_before_it_without_transcribing() -> None:
    fake = FakeTranscriber(delays=[0.3])
    sessions = LiveSessions(fake)
    idle = Start(LiveConfig(format="pcm16", rate=16_000, turn_detection=TurnDetection(idle_timeout_ms=1000)))
    assert await collect(sessions, "s", 0, None, idle) == []
    quiet = np.zeros(24_000, dtype="<i2").tobytes()  # 1.5 s of digital silence
    first, second = await asyncio.gather(collect(sessions, "s", 1, SECOND, Commit()),
                                         collect(sessions, "s", 2, quiet, None))
    assert first[-1].item == 0 and first[-1].text == "turn 0. More."
    assert [type(e).__name__ for e in second] == ["TimeoutEvent", "CommittedEvent", "CompletedEvent"]
    # the idle time starts at the commit (992 ms: VAD frames of 32 ms) and ends at the frame that reaches 1 s
    assert second[0] == TimeoutEvent(1, 992, 2016) and second[-1] == CompletedEvent(1, "", "", 0.0)
    assert fake.calls == 1  # the silence went to no transcriber
    assert fake.log == ["start 0", "end 0"]


async def test_logprobs_asked_come_with_each_delta_and_all_with_the_completed_transcript() -> None:
    def with_logprobs(part: Segment, *values: float) -> Segment:
        words = part.text.split(" ")[1:]
        tokens = [TokenLogprob(" " + word, value, list((" " + word).encode())) for word, value in zip(words, values,
                                                                                                      strict=True)]
        return msgspec.structs.replace(part, logprobs=tokens)

    async def transcribe(samples: np.ndarray, config: LiveConfig,
                         request_id: str | None = None) -> AsyncIterator[Event]:
        first, second = with_logprobs(segment(0.0, 1.0, " Hello there."), -0.1, -0.2), with_logprobs(
            segment(1.0, 2.0, " Bye."), -0.3)
        yield SegmentsEvent(language="en", progress=0.5, segments=[first])
        yield SegmentsEvent(language="en", progress=1.0, segments=[second])
        yield DoneEvent(task="transcribe", language="en", duration=2.0, text="Hello there. Bye.",
                        segments=[first, second])

    sessions = LiveSessions(transcribe)
    asked = Start(LiveConfig(format="pcm16", rate=16_000, turn_detection=None, logprobs=True))
    assert await collect(sessions, "s", 0, None, asked) == []
    events = await collect(sessions, "s", 1, SECOND, Commit())
    deltas = [e for e in events if isinstance(e, DeltaEvent)]
    assert [[t.logprob for t in d.logprobs or []] for d in deltas] == [[-0.1, -0.2], [-0.3]]
    completed = events[-1]
    assert isinstance(completed, CompletedEvent) and [t.token for t in completed.logprobs or []] == [
        " Hello", " there.", " Bye."]
    plain = LiveSessions(transcribe)
    await collect(plain, "p", 0, None, MANUAL)
    events = await collect(plain, "p", 1, SECOND, Commit())
    assert all(e.logprobs is None for e in events if isinstance(e, DeltaEvent | CompletedEvent))


async def test_turns_are_transcribed_in_order_and_deltas_spell_the_text() -> None:
    fake = FakeTranscriber(delays=[0.3, 0.0])
    sessions = LiveSessions(fake)
    assert await collect(sessions, "s", 0, None, MANUAL) == []
    first, second = await asyncio.gather(collect(sessions, "s", 1, SECOND, Commit()),
                                         collect(sessions, "s", 2, SECOND, Commit()))
    assert fake.log == ["start 0", "end 0", "start 1", "end 1"]  # the second turn waited for the first
    assert [e for e in first if isinstance(e, DeltaEvent)] == [DeltaEvent(0, "turn 0."), DeltaEvent(0, " More.")]
    assert first[-1] == CompletedEvent(0, "turn 0. More.", "en", 1.0) and second[-1].item == 1
    assert await collect(sessions, "s", 3, None, End()) == [EndedEvent()] and len(sessions) == 0


async def test_a_failed_turn_fails_alone() -> None:
    sessions = LiveSessions(FakeTranscriber(fail={0}))
    await collect(sessions, "s", 0, None, MANUAL)
    failed = await collect(sessions, "s", 1, SECOND, Commit())
    assert failed[-1] == FailedEvent(0, "engine_error", "the engine broke")
    assert (await collect(sessions, "s", 2, SECOND, Commit()))[-1].text == "turn 1. More."


async def test_a_request_waits_for_the_one_before_it_and_a_gap_times_out() -> None:
    sessions = LiveSessions(FakeTranscriber(), LiveLimits(order_wait_s=0.3))
    await collect(sessions, "s", 0, None, MANUAL)
    commit = asyncio.ensure_future(collect(sessions, "s", 2, None, Commit()))
    await asyncio.sleep(0.05)
    assert not commit.done()
    await collect(sessions, "s", 1, SECOND, None)
    assert (await commit)[-1].text == "turn 0. More."
    with pytest.raises(InvalidRequestError, match="never came"):
        await collect(sessions, "s", 5, SECOND, None)
    with pytest.raises(InvalidRequestError, match="came twice"):
        await collect(sessions, "s", 1, SECOND, None)


async def test_bad_controls_are_refused_in_turn_and_the_session_goes_on() -> None:
    sessions = LiveSessions(FakeTranscriber())
    await collect(sessions, "s", 0, None, MANUAL)
    with pytest.raises(InvalidRequestError):
        await collect(sessions, "s", 1, SECOND, b'{"type": "dance"}')
    assert (await collect(sessions, "s", 2, SECOND, b'{"type": "commit"}'))[-1].text == "turn 0. More."
    for session, seq, control in (("s", 0, MANUAL), ("t", 1, None), ("t", 0, Commit()), ("bad id!", 0, MANUAL)):
        with pytest.raises(InvalidRequestError):
            await collect(sessions, session, seq, None, control)


async def test_sessions_are_bounded_and_idle_ones_dropped() -> None:
    sessions = LiveSessions(FakeTranscriber(), LiveLimits(max_sessions=2, idle_s=10))
    await collect(sessions, "a", 0, None, MANUAL)
    await collect(sessions, "b", 0, None, MANUAL)
    with pytest.raises(UnavailableError):
        await collect(sessions, "c", 0, None, MANUAL)
    assert sessions.sweep() == 0 and len(sessions) == 2
    assert sessions.sweep(time.monotonic() + 11) == 2 and len(sessions) == 0


async def test_a_turn_whose_pause_stood_uses_the_transcription_started_in_the_pause() -> None:
    """server_vad: the transcription starts 200 ms into a pause; when the pause ends the turn, that
    transcript is the turn's (the fake saw the shorter audio), and a pause the speaker talks through costs
    a transcription nobody uses, never a wrong transcript."""
    from harness.assets import jfk_wav
    from whisper_triton.audio import decode_audio

    jfk = decode_audio(jfk_wav().read_bytes()).samples
    pcm = (np.concatenate([jfk, np.zeros(32_000, np.float32)]) * 32767).astype("<i2").tobytes()
    fake = FakeTranscriber()
    seen: list[int] = []
    original = fake.__call__

    async def recording(samples: np.ndarray, config: LiveConfig, request_id: str | None) -> AsyncIterator[Event]:
        seen.append(len(samples))
        await asyncio.sleep(0.05)
        async for event in original(samples, config, request_id):
            yield event

    cancelled: list[str] = []

    async def cancel(request_id: str, config: LiveConfig) -> None:
        cancelled.append(request_id)

    sessions = LiveSessions(recording, cancel=cancel)
    await collect(sessions, "s", 0, None, Start(LiveConfig(format="pcm16", rate=16_000)))
    events: list[Any] = []
    for seq, at in enumerate(range(0, len(pcm), 3200), start=1):  # 100 ms pieces
        events += await collect(sessions, "s", seq, pcm[at : at + 3200], None)
        await asyncio.sleep(0)
    completed = [e for e in events if isinstance(e, CompletedEvent)]
    committed = [e for e in events if type(e).__name__ == "CommittedEvent"]
    assert completed and len(completed) == len(committed)
    for done, turn in zip(completed, committed, strict=True):
        assert done.audio_seconds == pytest.approx((turn.audio_end_ms - turn.audio_start_ms) / 1000, abs=0.002)
    # Each turn's transcript came from audio shorter than the turn (the tentative one, 300 ms short of it).
    final_lengths = [round(e.audio_seconds * 16_000) for e in completed]
    assert all(any(0 < f - s <= 300 * 16 + 32 for s in seen) for f in final_lengths)
    # JFK pauses mid-sentence: tentative turns taken back had their windows dropped at the engine by id.
    assert cancelled and all(c.startswith("live-") for c in cancelled) and len(set(cancelled)) == len(cancelled)


async def test_a_session_keeps_a_language_two_turns_detected_surely() -> None:
    configs: list[LiveConfig] = []

    async def transcribe(samples: np.ndarray, config: LiveConfig,
                         request_id: str | None = None) -> AsyncIterator[Event]:
        configs.append(config)
        said = segment(0.0, 1.0, " Hallo.")
        sure = 0.5 if len(configs) == 2 else 0.9
        yield DoneEvent(task="transcribe", language="de", duration=len(samples) / 16000, text="Hallo.",
                        segments=[said], language_probability=None if config.language else sure)

    sessions = LiveSessions(transcribe)
    await collect(sessions, "s", 0, None, MANUAL)
    await collect(sessions, "s", 1, SECOND, Commit())  # 1 s: too short to decide the session's language
    await collect(sessions, "s", 2, SECOND * 2, Commit())  # detected at 0.5: not sure enough
    await collect(sessions, "s", 3, SECOND * 2, Commit())  # sure: a candidate
    await collect(sessions, "s", 4, SECOND * 2, Commit())  # sure again, the same: kept from now on
    await collect(sessions, "s", 5, SECOND, Commit())
    assert [c.language for c in configs] == [None, None, None, None, "de"]
    # new settings: detected again; a language the client gives is never replaced
    await collect(sessions, "s", 6, None, Update(LiveConfig(format="pcm16", rate=16_000, turn_detection=None)))
    await collect(sessions, "s", 7, SECOND, Commit())
    given = LiveConfig(format="pcm16", rate=16_000, turn_detection=None, language="en")
    await collect(sessions, "s", 8, SECOND * 2, Update(given))
    await collect(sessions, "s", 9, None, Commit())
    await collect(sessions, "s", 10, SECOND, Commit())
    assert [c.language for c in configs[5:]] == [None, "en", "en"]


def test_a_language_is_pinned_by_two_sure_turns_that_agree() -> None:
    assert pin_language(None, "it", 0.97, " Ciao.", 2.5) == ("it", None)  # one turn: a candidate only
    assert pin_language("it", "es", 0.95, " Hola.", 3.0) == ("es", None)  # a disagreeing turn: a new candidate
    assert pin_language("es", "es", 0.9, " Hola.", 2.0) == ("es", "es")
    for unsure in [("es", 0.79, " Hola.", 3.0), ("es", 0.9, " Hola.", 1.9), ("es", 0.9, " ", 3.0),
                   (None, None, " Hola.", 3.0), ("es", None, " Hola.", 3.0)]:
        assert pin_language("es", *unsure) == ("es", None), unsure  # no say: the candidate stays
