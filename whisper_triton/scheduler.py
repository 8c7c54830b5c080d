"""In-flight batching for the engine model: the windows of every request wait in one queue, and each of the
engine's workers takes the next batch from it as soon as it is free.

Why not only Triton's dynamic batcher: it hands one batch to an instance and waits until all of it is
decoded. On CPU, several single-threaded CTranslate2 replicas (sharing one copy of the weights) decoding
different batches at once use the cores better than one multi-threaded replica, and a window still
waiting here is dropped when its request is cancelled instead of being decoded for nobody.
Windows are taken oldest request first, in window order, so a request's first windows (and its
language) come first and requests finish in arrival order; a live turn's windows (`DecodeOptions.live`)
go before all of them, in batches of live windows only (turns that decode alike share one window, see
`whisper_triton.packing`), and while turns keep coming file windows go one at a time, so that a turn waits
for one file window at most. With an express runner (all the engine's threads), live batches go one at a
time: turns that come while one decodes wait for it and then go together, on every core (measured on 2 CPU
cores, 8 sessions: a batch of 1-3 turns took 0.9-1.4 s express against 1.2-1.9 s on one thread, and more
turns shared a window; p95 latency with the language detected 2.1-2.7 s against 2.7-3.5 s).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from whisper_triton.decoding import DecodeOptions, LanguageTicket, WindowJob, WindowResult, decode_each
from whisper_triton.engine import WhisperEngine
from whisper_triton.features import window_features
from whisper_triton.packing import Pack, guess_languages, plan_packs, unpack
from whisper_triton.text import WhisperTokenizer

log = logging.getLogger("whisper_triton.scheduler")
Outcome = WindowResult | BaseException
# While a live turn arrived this recently, file windows are taken one at a time: a turn then waits at most
# one window's decoding for a worker, not a batch's (8 windows: 10 s on a CPU core).
LIVE_RECENT_S = 10.0


class WindowCancelled(Exception):
    """The window's request was cancelled before the window was decoded."""


@dataclass
class QueuedWindow:
    """One window waiting for a worker: its input (audio or features, the engine model's business), how
    to decode it, and where its outcome goes (called once, from a worker thread or from `cancel`)."""

    payload: Any
    options: DecodeOptions
    reply: Callable[[Outcome], None]
    queued_at: float = field(default_factory=time.perf_counter)


RunBatch = Callable[[list[QueuedWindow], list[LanguageTicket | None]], list[Outcome]]


class _Slot:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.language: tuple[str, float] | None = None
        self.detecting = False


class _Ticket:
    def __init__(self, slot: _Slot, detector: bool, timeout_s: float) -> None:
        self._slot, self._detector, self._timeout_s = slot, detector, timeout_s
        self._done = slot.done  # this round's: a failed detector starts a new round for later windows
        self.published = False

    @property
    def detector(self) -> bool:
        return self._detector

    def publish(self, language: tuple[str, float] | None) -> None:
        self.published = True
        slot = self._slot
        slot.language, slot.detecting = language, False
        if language is None:  # failed: this round's waiters detect their own; a later window may try again
            slot.done = threading.Event()
        self._done.set()

    def wait(self) -> tuple[str, float] | None:
        self._done.wait(self._timeout_s)
        return self._slot.language


class RequestLanguages:
    """One language per request: the first window of it that is dispatched detects, later ones use it.

    `assign` runs under the scheduler's lock, in dispatch order, so exactly one window detects at a
    time; a window dispatched once the language is known gets it in its options and needs no detection.
    """

    def __init__(self, capacity: int = 4096, timeout_s: float = 300.0) -> None:
        self._slots: OrderedDict[str, _Slot] = OrderedDict()
        self._capacity, self._timeout_s = capacity, timeout_s

    def assign(self, options: DecodeOptions) -> tuple[DecodeOptions, LanguageTicket | None]:
        if options.language or not options.request:
            return options, None
        slot = self._slots.get(options.request)
        if slot is None:
            slot = self._slots[options.request] = _Slot()
            while len(self._slots) > self._capacity:
                self._slots.popitem(last=False)
        self._slots.move_to_end(options.request)
        if slot.done.is_set() and slot.language is not None:
            return replace(options, language=slot.language[0]), None
        detector = not slot.detecting
        slot.detecting = True
        return options, _Ticket(slot, detector, self._timeout_s)


class _Recent:
    """A bounded set of recent request ids (cancelled ones, arrival numbers), oldest forgotten first."""

    def __init__(self, capacity: int = 4096) -> None:
        self._items: OrderedDict[str, int] = OrderedDict()
        self._capacity = capacity

    def get(self, key: str) -> int | None:
        return self._items.get(key)

    def put(self, key: str, value: int) -> int:
        self._items.setdefault(key, value)
        self._items.move_to_end(key)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)
        return self._items[key]


class WindowScheduler:
    """`workers` threads, each running `run_batch` on up to `max_batch` queued windows at a time.

    A worker takes an even share of the queue among all workers, never more than `max_batch`: one long
    file then keeps every worker busy to its end, in batches that shrink towards it so that the workers
    finish together. A request's first window may go alone (see `_first_alone`).
    """

    def __init__(self, run_batch: RunBatch, workers: int, max_batch: int, gather_s: float = 0.1,
                 quiet_s: float = 0.02, express: RunBatch | None = None) -> None:
        if workers < 1 or max_batch < 1:
            raise ValueError("workers and max_batch must be at least 1")
        self._run_batch, self._workers, self._max_batch = run_batch, workers, max_batch
        # A live batch taken while no other worker decodes runs on `express` (all the engine's threads, for
        # one batch's latency) while the other workers wait: the cores are not shared twice.
        self._express, self._exclusive = express, False
        # A request's windows arrive one by one within milliseconds: a free worker waits until they stop
        # coming (quiet_s), at most gather_s, so that it does not start a batch of one.
        self._gather_s, self._quiet_s = gather_s, quiet_s
        self._ready = threading.Condition()
        self._queue: list[tuple[int, int, int, int, QueuedWindow]] = []
        self._count = itertools.count()
        self._arrivals = _Recent()
        self._cancelled = _Recent()
        self._languages = RequestLanguages()
        self._closed = False
        self._live_at = -math.inf  # when the last live turn arrived
        self.busy = 0  # workers decoding a batch now
        self._live_busy = 0  # of them, on live windows
        self._threads = [threading.Thread(target=self._work, name=f"engine-worker-{n}", daemon=True)
                         for n in range(workers)]
        for thread in self._threads:
            thread.start()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def submit(self, window: QueuedWindow) -> None:
        """Queues the window (a window of a cancelled request is answered at once)."""
        request = window.options.request
        with self._ready:
            if self._closed:
                raise RuntimeError("the engine is shutting down")
            if request is not None and self._cancelled.get(request) is not None:
                _reply(window, WindowCancelled())
                return
            number = next(self._count)
            arrival = self._arrivals.put(request, number) if request is not None else number
            rank = 0 if window.options.live else 1
            if window.options.live:
                self._live_at = time.monotonic()
            heapq.heappush(self._queue, (rank, arrival, window.options.window, number, window))
            self._ready.notify_all()

    def cancel(self, request: str) -> int:
        """Drops the request's queued windows (they are answered as cancelled); windows being decoded
        now skip their remaining fallback and resume passes. Returns how many windows were dropped."""
        with self._ready:
            self._cancelled.put(request, 1)
            dropped = [item for item in self._queue if item[-1].options.request == request]
            if dropped:
                self._queue = [item for item in self._queue if item[-1].options.request != request]
                heapq.heapify(self._queue)
        for *_, window in dropped:
            _reply(window, WindowCancelled())
        return len(dropped)

    def is_cancelled(self, request: str | None) -> bool:
        return request is not None and self._cancelled.get(request) is not None

    def close(self) -> None:
        with self._ready:
            self._closed = True
            left, self._queue = self._queue, []
            self._ready.notify_all()
        for *_, window in left:
            _reply(window, RuntimeError("the engine is shutting down"))
        for thread in self._threads:
            thread.join(timeout=5)

    def _take(self) -> tuple[list[QueuedWindow], list[LanguageTicket | None], bool] | None:
        with self._ready:
            while True:
                while (not self._queue or self._exclusive) and not self._closed:
                    self._ready.wait()
                if self._closed:
                    return None
                live = self._queue[0][-1].options.live
                if live and self._live_busy and self._express is not None:
                    self._ready.wait()  # one live batch at a time: the turns waiting go together after it
                    continue
                if not live:  # a live turn waits for no company
                    held = self._held_for_live()
                    if held > 0:
                        self._ready.wait(held)
                        continue
                    self._gather()
                if self._queue and not self._exclusive:  # (else another worker took them meanwhile)
                    break
            size = min(self._max_batch, max(1, math.ceil(len(self._queue) / self._workers)))
            if self._first_alone():
                size = 1
            live = self._queue[0][-1].options.live  # (the head may have changed while this worker waited)
            if not live and self._live_left() > 0:
                size = 1  # live sessions are speaking: a worker is never long away from their next turn
            express = live and self._express is not None and self.busy == 0
            if live:  # a live turn waits for no file window: live windows go in batches of their own
                waiting = sum(1 for item in self._queue if item[-1].options.live)
                # An express batch has every core: it takes all the turns (they may share one window).
                size = min(self._max_batch if express else size, waiting)
            batch = [heapq.heappop(self._queue)[-1] for _ in range(min(size, len(self._queue)))]
            tickets: list[LanguageTicket | None] = []
            for window in batch:
                window.options, ticket = self._languages.assign(window.options)
                tickets.append(ticket)
            self.busy += 1
            self._live_busy += live
            self._exclusive = express
            return batch, tickets, express

    def _held_for_live(self) -> float:
        """How long this worker, the last one free, keeps off file windows (0: it may take them): while live
        turns keep coming, one worker stays free for the next turn, which then waits for no file window."""
        if self._workers < 2 or self._workers - self.busy > 1:
            return 0.0
        return self._live_left()

    def _live_left(self) -> float:
        """Seconds until live sessions count as quiet (no turn for LIVE_RECENT_S); 0 when they are."""
        return max(0.0, self._live_at + LIVE_RECENT_S - time.monotonic())

    def _first_alone(self) -> bool:
        """A request's first window goes in a batch of its own while another worker is free to take the
        rest at once: its text (streamed, or a task's progress) and its language, which the request's
        other windows wait for, come a whole batch earlier, and the rest still fill the other workers."""
        head = self._queue[0][-1].options
        if head.window != 0 or head.request is None or self._workers - self.busy < 2:
            return False
        return any(item[-1].options.request == head.request for item in self._queue[1:])

    def _gather(self) -> None:
        """Waits (lock held, released while waiting) while windows keep arriving, up to gather_s."""
        deadline = time.monotonic() + self._gather_s
        while not self._closed and len(self._queue) < self._max_batch * (self._workers - self.busy):
            waiting, left = len(self._queue), deadline - time.monotonic()
            if left <= 0:
                return
            self._ready.wait(min(self._quiet_s, left))
            if len(self._queue) == waiting:
                return  # nothing more is coming now

    def _work(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            batch, tickets, express = taken
            try:
                run = self._express if express and self._express is not None else self._run_batch
                outcomes: Sequence[Outcome] = run(batch, tickets)
            except BaseException as exc:  # a bug in the runner fails its windows, not the worker
                outcomes = [exc] * len(batch)
            finally:
                for ticket in tickets:  # never leave another batch waiting for a language
                    if isinstance(ticket, _Ticket) and ticket.detector and not ticket.published:
                        ticket.publish(None)
                with self._ready:
                    self.busy -= 1
                    self._live_busy -= batch[0].options.live
                    if express:
                        self._exclusive = False
                    self._ready.notify_all()  # express, or the live turns waiting for this batch, may go now
            for window, outcome in zip(batch, outcomes, strict=True):
                if self.is_cancelled(window.options.request) and not isinstance(outcome, BaseException):
                    outcome = WindowCancelled()
                _reply(window, outcome)


def _reply(window: QueuedWindow, outcome: Outcome) -> None:
    """A reply that fails (its client gone, a transport error) must not take the worker down with it."""
    try:
        window.reply(outcome)
    except Exception:
        log.exception("answering a window failed")


def decode_queued(
    engine: WhisperEngine,
    tokenizer: WhisperTokenizer,
    batch: list[QueuedWindow],
    tickets: list[LanguageTicket | None],
    is_cancelled: Callable[[str | None], bool],
    pack: bool = True,
) -> list[Outcome]:
    """A worker's batch: log-mel of each window's audio (here, on the engine's side, so that a GPU engine
    can do it on its device), then `decode_each`; timings gain the queueing and feature stages. Live turns
    that decode alike share one window (`whisper_triton.packing`), those without a language once it is guessed
    on their own audio; a pack that fails decodes them alone (their language detected in their window)."""
    started = time.perf_counter()
    outcomes: list[Outcome | None] = [None] * len(batch)
    payloads, chosen = [window.payload for window in batch], [window.options for window in batch]
    guessed: dict[int, float] = {}
    if pack:
        try:
            chosen, guessed = guess_languages(engine, payloads, chosen)
        except Exception:  # no guess: each turn without a language is detected in its own window, as always
            log.exception("guessing live turns' languages failed")
    guess_s = time.perf_counter() - started
    packs = plan_packs(payloads, chosen) if pack else []
    packed = {member for group in packs for member in group.members}
    # What is decoded: each window in no pack (by its place in the batch), then each pack.
    inputs: list[tuple[int | Pack, Any, DecodeOptions, LanguageTicket | None]] = [
        (place, window.payload, chosen[place], tickets[place]) for place, window in enumerate(batch)
        if place not in packed]
    inputs += [(group, group.samples, group.options, None) for group in packs]
    jobs, kept, job_tickets = [], [], []
    for place, samples, options, ticket in inputs:
        try:
            features, frames = window_features(samples, engine.n_mels)
        except Exception as exc:  # an unusable window fails alone
            for member in place.members if isinstance(place, Pack) else (place,):
                outcomes[member] = exc
            continue
        jobs.append(WindowJob(features, frames, options))
        kept.append(place)
        job_tickets.append(ticket)
    features_s = (time.perf_counter() - started - guess_s) / len(batch)
    decoded = decode_each(engine, tokenizer, jobs, job_tickets, lambda job: is_cancelled(job.options.request))
    for place, answer in zip(kept, decoded, strict=True):
        if not isinstance(place, Pack):
            outcomes[place] = answer
            continue
        members = [batch[member] for member in place.members]
        if isinstance(answer, WindowResult):
            results: Sequence[Outcome] = unpack(place, answer, [window.options for window in members])
        else:  # one bad turn must not fail the others: each decodes alone
            results = decode_queued(engine, tokenizer, members, [None] * len(members), is_cancelled, pack=False)
        for member, result in zip(place.members, results, strict=True):
            outcomes[member] = result
    wall = time.perf_counter() - started
    for place, (window, outcome) in enumerate(zip(batch, outcomes, strict=True)):
        if isinstance(outcome, WindowResult):
            outcome.timings.update(queue=round(started - window.queued_at, 6), features=round(features_s, 6),
                                   batch_wall=round(wall, 6))
            if place in guessed and outcome.language == chosen[place].language:  # detected, on its own audio
                outcome.language_probability = guessed[place]
                outcome.timings["language_guess"] = round(guess_s / len(guessed), 6)
    return [outcome if outcome is not None else RuntimeError("window not decoded") for outcome in outcomes]
