"""The live model's sessions: requests applied in their order, turns transcribed one after another per
session, idle sessions dropped. No Triton import: `model_repository/whisper_live` gives it a `transcribe`
function (a BLS call to the entry model) and sends the events it yields.

Within one request, `start` and `update` apply before its audio, `commit`, `clear` and `end` after it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from whisper_triton.contract import DoneEvent, Event, SegmentsEvent, TokenLogprob, token_logprobs
from whisper_triton.errors import InvalidRequestError, ServiceError, UnavailableError
from whisper_triton.live_contract import (
    SESSION_ID,
    Clear,
    Commit,
    CompletedEvent,
    DeltaEvent,
    End,
    EndedEvent,
    FailedEvent,
    LiveConfig,
    LiveControl,
    LiveEvent,
    Start,
    Update,
    decode_control,
)
from whisper_triton.live_session import LiveSession, Retract, Turn

PIN_MIN_SECONDS = 2.0  # a turn at least this long...
PIN_MIN_PROBABILITY = 0.8  # ...whose language was detected this surely pins its session's language

# (turn audio, settings, the id its windows carry at the engine) -> the entry model's events
TranscribeFn = Callable[[np.ndarray, LiveConfig, str | None], AsyncIterator[Event]]
CancelFn = Callable[[str, LiveConfig], Coroutine[Any, Any, None]]  # drops the engine windows of a request id


@dataclass(frozen=True)
class LiveLimits:
    max_sessions: int = 256
    idle_s: float = 300.0  # a session without a request for this long is dropped
    max_buffer_s: float = 300.0  # audio held without turn detection before a commit
    order_wait_s: float = 30.0  # how long a request waits for the one numbered before it


@dataclass
class _Session:
    live: LiveSession | None = None
    next_seq: int = 0
    ended: bool = False
    used: float = field(default_factory=time.monotonic)
    turn: asyncio.Condition = field(default_factory=asyncio.Condition)  # next_seq changed
    chain: asyncio.Future[None] | None = None  # the last turn's transcription, done or not
    # tentative turns' transcriptions, and the ids their windows carry at the engine
    speculative: dict[int, tuple[asyncio.Task[list[Event]], str]] = field(default_factory=dict)
    language: str | None = None  # detected, for the session's later turns (see `pin_language`)
    candidate: str | None = None  # detected surely on one turn, waiting for a second to agree

    def settings(self) -> LiveConfig:
        """The session's settings, with the language it was found to speak when the client gave none."""
        assert self.live is not None and self.live.config is not None
        config = self.live.config
        if config.language or not self.language:
            return config
        return msgspec.structs.replace(config, language=self.language)


class LiveSessions:
    def __init__(self, transcribe: TranscribeFn, limits: LiveLimits | None = None,
                 executor: Executor | None = None, cancel: CancelFn | None = None) -> None:
        self._transcribe = transcribe
        self._cancel = cancel
        self._background: set[asyncio.Task[None]] = set()  # engine cancellations in flight
        self.limits = limits or LiveLimits()
        self._executor = executor
        self._sessions: dict[str, _Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    async def handle(self, session_id: str, seq: int, audio: bytes | None,
                     control: LiveControl | bytes | None) -> AsyncIterator[LiveEvent]:
        """The events of one request, in order; for a request that ends turns, their transcripts after them.
        `control` may be the JSON: a bad one is refused in its turn, and the requests after it still apply."""
        refused: InvalidRequestError | None = None
        if isinstance(control, bytes):
            try:
                control = decode_control(control)
            except InvalidRequestError as exc:
                control, refused = None, exc
        session = self._session(session_id, seq, control)
        session.used = time.monotonic()
        async with session.turn:
            try:
                await asyncio.wait_for(session.turn.wait_for(lambda: session.next_seq >= seq),
                                       self.limits.order_wait_s)
            except TimeoutError as exc:
                raise InvalidRequestError(f"Request {session.next_seq} of session {session_id!r} never came.",
                                          param="SEQ", code="sequence_gap") from exc
            if session.next_seq > seq:
                raise InvalidRequestError(f"Request {seq} of session {session_id!r} came twice.", param="SEQ",
                                          code="sequence_repeated")
        try:
            if refused is not None:
                raise refused
            loop = asyncio.get_running_loop()
            events, turns = await loop.run_in_executor(self._executor, self._apply, session, audio, control)
        finally:
            async with session.turn:
                session.next_seq += 1
                session.turn.notify_all()
        for event in events:
            yield event
        config = session.settings()
        for turn in turns:
            if isinstance(turn, Retract):
                self._drop(session.speculative.pop(turn.item, None), config)
            elif turn.tentative:  # started now; used if the turn ends with nothing but silence after it
                self._drop(session.speculative.pop(turn.item, None), config)
                request_id = f"live-{uuid.uuid4().hex}"
                task = asyncio.create_task(self._collect(turn.samples, config, request_id))
                session.speculative[turn.item] = (task, request_id)
            else:
                async for event in self._transcribed(session, turn, config):
                    yield event
        if session.ended:
            if session.chain is not None:
                await session.chain
            self._sessions.pop(session_id, None)
            yield EndedEvent()

    def sweep(self, now: float | None = None) -> int:
        """Drops sessions idle for `idle_s` (their clients are gone); how many."""
        now = time.monotonic() if now is None else now
        idle = [key for key, s in self._sessions.items()
                if now - s.used > self.limits.idle_s and (s.chain is None or s.chain.done())]
        for key in idle:
            del self._sessions[key]
        return len(idle)

    def _session(self, session_id: str, seq: int, control: LiveControl | None) -> _Session:
        if not SESSION_ID.fullmatch(session_id):
            raise InvalidRequestError("A session id is 1-128 letters, digits, '_', '.', ':' or '-'.",
                                      param="SESSION", code="invalid_session")
        session = self._sessions.get(session_id)
        if session is not None:
            if isinstance(control, Start) and seq == 0:
                raise InvalidRequestError(f"Session {session_id!r} has already started.", param="SESSION",
                                          code="session_exists")
            return session
        if seq != 0 or not isinstance(control, Start):
            raise InvalidRequestError(f"No live session {session_id!r} (ended, or idle too long): start one with "
                                      "SEQ 0 and a start control.", param="SESSION", code="session_not_found")
        if len(self._sessions) >= self.limits.max_sessions:
            raise UnavailableError("Too many live sessions; retry shortly.")
        session = self._sessions[session_id] = _Session()
        return session

    def _apply(self, session: _Session, audio: bytes | None,
               control: LiveControl | None) -> tuple[list[LiveEvent], list[Turn | Retract]]:
        """One request's control and audio (in a thread: VAD runs here)."""
        if session.ended:
            raise InvalidRequestError("The session has ended.", param="CONTROL", code="session_ended")
        if isinstance(control, Start):
            session.live = LiveSession(control.config, self.limits.max_buffer_s)
        assert session.live is not None
        if isinstance(control, Update):
            session.live.configure(control.config)
            session.language = session.candidate = None
        events: list[LiveEvent] = []
        turns: list[Turn | Retract] = []
        if audio:
            events, turns = session.live.append(audio)
        if isinstance(control, Commit):
            more, turn = session.live.commit()
            events, turns = events + more, [*turns, turn]
        elif isinstance(control, Clear):
            events += session.live.clear()
        elif isinstance(control, End):
            session.ended = True
        return events, turns

    async def _transcribed(self, session: _Session, turn: Turn, config: LiveConfig) -> AsyncIterator[LiveEvent]:
        """A turn's transcript, after the session's turns before it: a delta per decoded window, then
        `completed` (whose text the deltas spell), or `failed`."""
        previous, done = session.chain, asyncio.get_running_loop().create_future()
        session.chain = done
        speculation = session.speculative.pop(turn.item, None)
        try:
            if previous is not None:
                await asyncio.shield(previous)
            source = None
            if turn.speculated and speculation is not None:
                source = await self._speculated(speculation[0])
            else:
                self._drop(speculation, config)
            said = ""
            logprobs: list[TokenLogprob] | None = [] if config.logprobs else None
            if turn.silent:  # an idle timeout: nothing was said, nothing to decode (usage: no audio)
                yield CompletedEvent(turn.item, "", config.language or "", 0.0, logprobs)
                return
            async for event in source if source is not None else self._transcribe(turn.samples, config, None):
                if isinstance(event, SegmentsEvent):
                    text = "".join(segment.text for segment in event.segments)
                    delta = text.lstrip() if not said else text
                    if delta:
                        said += delta
                        tokens = None
                        if logprobs is not None:
                            tokens = token_logprobs(event.segments)
                            logprobs += tokens
                        yield DeltaEvent(turn.item, delta, tokens)
                elif isinstance(event, DoneEvent):
                    if not said and event.text:  # a transcriber that sent no segments events
                        said = event.text
                        logprobs = token_logprobs(event.segments) if logprobs is not None else None
                        yield DeltaEvent(turn.item, said, logprobs)
                    seconds = round(len(turn.samples) / 16000, 3)
                    if config.language is None and session.language is None:
                        session.candidate, session.language = pin_language(session.candidate, event.language,
                                                                           event.language_probability, said, seconds)
                    yield CompletedEvent(turn.item, said.strip(), event.language or "", seconds, logprobs)
        except ServiceError as exc:
            yield FailedEvent(turn.item, exc.code or "transcription_failed", exc.message)
        finally:
            if not done.done():
                done.set_result(None)

    async def _collect(self, samples: np.ndarray, config: LiveConfig, request_id: str) -> list[Event]:
        return [event async for event in self._transcribe(samples, config, request_id)]

    def _drop(self, speculation: tuple[asyncio.Task[list[Event]], str] | None, config: LiveConfig) -> None:
        """A tentative turn's transcription no longer needed: its result is not used, and its windows still
        queued at the engine are dropped."""
        if speculation is None:
            return
        task, request_id = speculation
        if task.done():
            return
        task.cancel()
        if self._cancel is not None:
            cancelling = asyncio.create_task(self._cancel(request_id, config))
            self._background.add(cancelling)
            cancelling.add_done_callback(self._background.discard)

    @staticmethod
    async def _speculated(speculation: asyncio.Task[list[Event]]) -> AsyncIterator[Event] | None:
        """The events of a tentative turn's transcription, if it succeeded (else the turn is transcribed)."""
        try:
            events = await speculation
        except (ServiceError, asyncio.CancelledError):
            return None
        return _replay(events)


def pin_language(candidate: str | None, language: str | None, probability: float | None, text: str,
                 seconds: float) -> tuple[str | None, str | None]:
    """A session's language, from its turns' detections: (the candidate now, the language pinned or None).

    Like a file's (detected once, on its first 30 s), a live session's language is detected and then kept:
    turns that know their language can share an engine window with other sessions' turns
    (`whisper_triton.packing`), which is what keeps many sessions' turns from queueing on CPU. A wrong
    language kept would spoil every later turn, so it takes two turns that agree: each of at least
    `PIN_MIN_SECONDS`, with text, whose guess has `PIN_MIN_PROBABILITY` (Whisper's guess on a word or two is
    poor; on real speech of five languages, 2 of 300 short turns were guessed wrong that surely, see
    `python -m bench.language`). Until then each turn is detected on its own."""
    if language is None or not text.strip() or seconds < PIN_MIN_SECONDS or (probability or 0.0) < PIN_MIN_PROBABILITY:
        return candidate, None
    return language, language if candidate == language else None


async def _replay(events: list[Event]) -> AsyncIterator[Event]:
    for event in events:
        yield event

