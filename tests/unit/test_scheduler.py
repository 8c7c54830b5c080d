"""The engine model's in-flight batching: order, shares, one language per request, cancellation, failures."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import pytest

from whisper_triton.decoding import DecodeOptions, LanguageTicket, Segment, WindowResult
from whisper_triton.scheduler import (
    QueuedWindow,
    RequestLanguages,
    WindowCancelled,
    WindowScheduler,
)

Outcome = WindowResult | BaseException


@dataclass
class Replies:
    outcomes: dict[tuple[str | None, int], Outcome] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)
    expected: int = 0

    def window(self, request: str | None, index: int, **options: object) -> QueuedWindow:
        self.expected += 1

        def reply(outcome: Outcome) -> None:
            self.outcomes[(request, index)] = outcome
            if len(self.outcomes) >= self.expected:
                self.done.set()

        return QueuedWindow(payload=None, options=DecodeOptions(request=request, window=index, **options),
                            reply=reply)

    def wait(self) -> None:
        assert self.done.wait(10), f"only {len(self.outcomes)} of {self.expected} windows answered"


def result(text: str, language: str = "en") -> WindowResult:
    return WindowResult(language, 1.0, [Segment(0.0, 1.0, text, [], 0.0, -0.1, 1.0, 0.0)])


class Runner:
    """Records each batch; holds the first batch until released, so that the queue fills up behind it."""

    def __init__(self, hold_first: bool = False, hold: int = 1, delay: float = 0.0) -> None:
        self.delay = delay
        self.batches: list[list[tuple[str | None, int]]] = []
        self.tickets: list[list[LanguageTicket | None]] = []
        self.release = threading.Event()
        self.started = threading.Event()
        self.held = threading.Semaphore(0)
        self.hold = hold if hold_first else 0
        self.lock = threading.Lock()

    def __call__(self, batch: list[QueuedWindow], tickets: list[LanguageTicket | None]) -> list[Outcome]:
        with self.lock:
            held = len(self.batches) < self.hold
            self.batches.append([(w.options.request, w.options.window) for w in batch])
            self.tickets.append(tickets)
        self.started.set()
        time.sleep(self.delay)
        if held:
            self.held.release()
            assert self.release.wait(10)
        return [result(f"{w.options.request}:{w.options.window}") for w in batch]


def test_windows_arriving_one_by_one_are_gathered_into_shared_batches_in_window_order() -> None:
    runner = Runner(delay=0.3)  # a batch takes a while: both workers are busy at once
    replies = Replies()
    scheduler = WindowScheduler(runner, workers=2, max_batch=4, gather_s=1.0, quiet_s=0.2)
    try:
        for index in range(10):  # one by one, as the engine model receives them
            scheduler.submit(replies.window("a", index))
        replies.wait()
    finally:
        scheduler.close()
    sizes = [len(batch) for batch in runner.batches]
    # The first window alone (the other worker is free to take the rest at once), then gathered batches,
    # never more than the maximum.
    assert sizes[:2] == [1, 4] and max(sizes) <= 4
    assert [w for batch in runner.batches for w in batch] == [("a", i) for i in range(10)]  # in window order
    assert sum(sizes) == 10 and len(replies.outcomes) == 10


def test_a_batch_takes_an_even_share_of_the_queue() -> None:
    runner = Runner(hold_first=True)
    replies = Replies()
    scheduler = WindowScheduler(runner, workers=2, max_batch=8, gather_s=0.5, quiet_s=0.1)
    try:
        scheduler.submit(replies.window("a", 0))
        assert runner.held.acquire(timeout=5)
        for index in range(1, 7):
            scheduler.submit(replies.window("a", index))
        assert eventually_batches(runner, 2)
        runner.release.set()
        replies.wait()
    finally:
        scheduler.close()
    # Six queued windows, two workers: the free one takes half, leaving the rest to be shared in turn.
    assert runner.batches[:2] == [[("a", 0)], [("a", i) for i in range(1, 4)]]
    assert len(replies.outcomes) == 7


def test_a_first_window_goes_alone_only_while_another_worker_is_free() -> None:
    runner = Runner(hold_first=True)
    replies = Replies()
    scheduler = WindowScheduler(runner, workers=2, max_batch=8, gather_s=0.5, quiet_s=0.1)
    try:
        scheduler.submit(replies.window("busy", 0))  # holds one worker
        assert runner.held.acquire(timeout=5)
        for index in range(6):
            scheduler.submit(replies.window("a", index))
        assert eventually_batches(runner, 2)
        runner.release.set()
        replies.wait()
    finally:
        scheduler.close()
    # With one worker left, "a"'s first window is batched with the next ones: under load no batch of one.
    assert runner.batches[1] == [("a", 0), ("a", 1), ("a", 2)]


def eventually_batches(runner: Runner, count: int, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(runner.batches) >= count:
            return True
        time.sleep(0.01)
    return False


def test_batches_never_exceed_the_maximum_and_take_older_requests_first() -> None:
    runner = Runner(hold_first=True)
    replies = Replies()
    scheduler = WindowScheduler(runner, workers=1, max_batch=3)
    try:
        scheduler.submit(replies.window("old", 0))
        assert runner.started.wait(5)
        scheduler.submit(replies.window("new", 0))
        for index in (3, 1, 2):
            scheduler.submit(replies.window("old", index))
        runner.release.set()
        replies.wait()
    finally:
        scheduler.close()
    assert runner.batches[1:] == [[("old", 1), ("old", 2), ("old", 3)], [("new", 0)]]


def test_the_first_window_dispatched_detects_and_later_ones_get_the_language() -> None:
    languages = RequestLanguages()
    first, ticket = languages.assign(DecodeOptions(request="r", window=0))
    assert ticket is not None and ticket.detector and first.language is None
    _, waiter = languages.assign(DecodeOptions(request="r", window=1))
    assert waiter is not None and not waiter.detector
    ticket.publish(("fr", 0.9))
    assert waiter.wait() == ("fr", 0.9)
    later, none = languages.assign(DecodeOptions(request="r", window=2))
    assert none is None and later.language == "fr"
    # Given languages and windows without a request are left alone.
    assert languages.assign(DecodeOptions(request="r", language="de")) == (DecodeOptions(request="r", language="de"),
                                                                         None)
    assert languages.assign(DecodeOptions()) == (DecodeOptions(), None)


def test_a_failed_detection_lets_the_waiters_detect_and_a_later_window_try_again() -> None:
    languages = RequestLanguages()
    _, detector = languages.assign(DecodeOptions(request="r"))
    _, waiter = languages.assign(DecodeOptions(request="r", window=1))
    assert detector is not None and waiter is not None
    detector.publish(None)
    assert waiter.wait() is None  # at once, not after the timeout
    _, again = languages.assign(DecodeOptions(request="r", window=2))
    assert again is not None and again.detector


def test_a_batch_that_fails_before_detecting_releases_its_requests_language() -> None:
    seen: list[LanguageTicket | None] = []

    def runner(batch: list[QueuedWindow], tickets: list[LanguageTicket | None]) -> list[Outcome]:
        seen.extend(tickets)
        if len(seen) == 1:
            raise RuntimeError("features failed")
        return [result("x") for _ in batch]

    replies = Replies()
    scheduler = WindowScheduler(runner, workers=1, max_batch=1)
    try:
        scheduler.submit(replies.window("r", 0))
        replies.wait()
        replies.done.clear()
        scheduler.submit(replies.window("r", 1))
        replies.wait()
    finally:
        scheduler.close()
    assert isinstance(replies.outcomes[("r", 0)], RuntimeError)
    assert isinstance(replies.outcomes[("r", 1)], WindowResult)
    first, second = seen
    assert first is not None and second is not None
    assert first.detector and second.detector  # the failed round ended; the next window detects anew


def test_cancel_drops_queued_windows_and_answers_the_running_ones_as_cancelled() -> None:
    runner = Runner(hold_first=True)
    replies = Replies()
    scheduler = WindowScheduler(runner, workers=1, max_batch=1)
    try:
        scheduler.submit(replies.window("gone", 0))
        assert runner.started.wait(5)
        for index in (1, 2, 3):
            scheduler.submit(replies.window("gone", index))
        scheduler.submit(replies.window("other", 0))
        assert scheduler.cancel("gone") == 3
        assert scheduler.is_cancelled("gone") and not scheduler.is_cancelled("other")
        scheduler.submit(replies.window("gone", 4))  # late windows of a cancelled request are refused at once
        runner.release.set()
        replies.wait()
    finally:
        scheduler.close()
    assert all(isinstance(replies.outcomes[("gone", i)], WindowCancelled) for i in range(5))
    assert isinstance(replies.outcomes[("other", 0)], WindowResult)
    assert [w for batch in runner.batches for w in batch] == [("gone", 0), ("other", 0)]  # never decoded


def test_workers_decode_batches_at_the_same_time() -> None:
    barrier = threading.Barrier(2, timeout=5)

    def runner(batch: list[QueuedWindow], tickets: list[LanguageTicket | None]) -> list[Outcome]:
        barrier.wait()  # fails unless a second batch runs meanwhile
        return [result("x") for _ in batch]

    replies = Replies()
    scheduler = WindowScheduler(runner, workers=2, max_batch=1)
    try:
        scheduler.submit(replies.window("a", 0))
        scheduler.submit(replies.window("b", 0))
        replies.wait()
    finally:
        scheduler.close()
    assert all(isinstance(outcome, WindowResult) for outcome in replies.outcomes.values())


def test_close_answers_what_is_still_queued() -> None:
    runner = Runner(hold_first=True)
    replies = Replies()
    scheduler = WindowScheduler(runner, workers=1, max_batch=1)
    scheduler.submit(replies.window("a", 0))
    assert runner.started.wait(5)
    scheduler.submit(replies.window("a", 1))
    closing = threading.Thread(target=scheduler.close)
    closing.start()
    time.sleep(0.1)
    runner.release.set()
    closing.join(10)
    replies.wait()
    assert isinstance(replies.outcomes[("a", 1)], RuntimeError)
    with pytest.raises(RuntimeError):
        scheduler.submit(replies.window("a", 2))


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        WindowScheduler(Runner(), workers=0, max_batch=1)
    with pytest.raises(ValueError):
        WindowScheduler(Runner(), workers=1, max_batch=0)


def test_a_live_turn_goes_before_queued_file_windows_in_a_batch_of_its_own() -> None:
    runner = Runner(hold_first=True)
    replies = Replies()
    scheduler = WindowScheduler(runner, workers=1, max_batch=8)
    try:
        scheduler.submit(replies.window("file", 0))  # holds the worker
        assert runner.held.acquire(timeout=5)
        for index in range(1, 9):
            scheduler.submit(replies.window("file", index))
        scheduler.submit(replies.window("turn-1", 0, live=True))
        scheduler.submit(replies.window("turn-2", 0, live=True))
        runner.release.set()
        replies.wait()
    finally:
        scheduler.close()
    # The live turns, queued last, are decoded next, together and without a file window.
    assert runner.batches[1] == [("turn-1", 0), ("turn-2", 0)]
    assert [w for batch in runner.batches[2:] for w in batch] == [("file", i) for i in range(1, 9)]


def test_a_live_turn_on_an_idle_engine_runs_express_and_alone() -> None:
    """With no other batch running, a live batch goes to the express runner (all the engine's threads), and
    the other worker takes nothing meanwhile; a live turn behind a busy worker runs as usual."""
    express_batches: list[list[tuple[str | None, int]]] = []
    during: list[int] = []
    runner = Runner(delay=0.05)

    def express(batch: list[QueuedWindow], tickets: list[LanguageTicket | None]) -> list[Outcome]:
        express_batches.append([(w.options.request, w.options.window) for w in batch])
        before = len(runner.batches)
        time.sleep(0.3)
        during.append(len(runner.batches) - before)
        return [result("live") for _ in batch]

    replies = Replies()
    scheduler = WindowScheduler(runner, workers=2, max_batch=4, express=express)
    try:
        scheduler.submit(replies.window("turn", 0, live=True))
        time.sleep(0.05)
        for index in range(4):  # arrive while the turn runs express: they wait for it
            scheduler.submit(replies.window("file", index))
        replies.wait()
    finally:
        scheduler.close()
    assert express_batches == [[("turn", 0)]] and during == [0]
    assert [w for batch in runner.batches for w in batch] == [("file", i) for i in range(4)]

    held = Runner(hold_first=True)
    express_batches.clear()
    replies = Replies()
    scheduler = WindowScheduler(held, workers=2, max_batch=4, express=express)
    try:
        scheduler.submit(replies.window("file", 0))  # a worker is busy: no express run now
        assert held.held.acquire(timeout=5)
        scheduler.submit(replies.window("turn", 0, live=True))
        assert eventually_batches(held, 2)
        held.release.set()
        replies.wait()
    finally:
        scheduler.close()
    assert express_batches == [] and held.batches[1] == [("turn", 0)]


def test_live_turns_wait_for_the_live_batch_decoding_then_go_together_express() -> None:
    """Live batches go one at a time: a turn that comes while another turn decodes (on one thread, here, since
    a file window held the other worker) waits for it, though a worker is free, then goes express with
    every turn that came meanwhile."""
    gates = {"file": threading.Event(), "turn-1": threading.Event()}
    started = {name: threading.Event() for name in gates}
    batches: list[list[str | None]] = []
    express_batches: list[list[str | None]] = []

    def runner(batch: list[QueuedWindow], tickets: list[LanguageTicket | None]) -> list[Outcome]:
        name = batch[0].options.request
        batches.append([w.options.request for w in batch])
        if name in gates:
            started[name].set()
            assert gates[name].wait(10)
        return [result("text") for _ in batch]

    def express(batch: list[QueuedWindow], tickets: list[LanguageTicket | None]) -> list[Outcome]:
        express_batches.append([w.options.request for w in batch])
        return [result("text") for _ in batch]

    replies = Replies()
    scheduler = WindowScheduler(runner, workers=2, max_batch=4, express=express)
    try:
        scheduler.submit(replies.window("file", 0))
        assert started["file"].wait(5)
        scheduler.submit(replies.window("turn-1", 0, live=True))  # the other worker, one thread
        assert started["turn-1"].wait(5)
        scheduler.submit(replies.window("turn-2", 0, live=True))
        scheduler.submit(replies.window("turn-3", 0, live=True))
        gates["file"].set()  # its worker is free now, and takes neither turn while turn-1 decodes
        deadline = time.monotonic() + 5
        while ("file", 0) not in replies.outcomes and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
        assert batches == [["file"], ["turn-1"]] and express_batches == []
        gates["turn-1"].set()
        replies.wait()
    finally:
        scheduler.close()
    assert batches == [["file"], ["turn-1"]] and express_batches == [["turn-2", "turn-3"]]


def test_a_live_turn_is_taken_at_once_without_gathering() -> None:
    runner = Runner()
    replies = Replies()
    scheduler = WindowScheduler(runner, workers=1, max_batch=4, gather_s=4.0, quiet_s=2.0)
    try:
        started = time.monotonic()
        scheduler.submit(replies.window("turn", 0, live=True))
        replies.wait()
        waited = time.monotonic() - started
        later = Replies()
        started = time.monotonic()
        scheduler.submit(later.window("file", 0))
        later.wait()
        gathered = time.monotonic() - started
    finally:
        scheduler.close()
    # The file window waited for company (at least quiet_s), the live one did not: the bound is quiet_s,
    # so a second's stall of a shared CI machine cannot fail it.
    assert waited < 2.0 <= gathered


def test_while_live_turns_keep_coming_file_windows_go_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("whisper_triton.scheduler.LIVE_RECENT_S", 2.0)  # room for a slow, shared machine
    runner = Runner(hold_first=True)
    replies = Replies()
    scheduler = WindowScheduler(runner, workers=1, max_batch=8)
    try:
        scheduler.submit(replies.window("turn", 0, live=True))  # holds the worker
        assert runner.held.acquire(timeout=5)
        for index in range(3):
            scheduler.submit(replies.window("file", index))
        runner.release.set()
        replies.wait()
        time.sleep(2.1)  # no turn for longer than LIVE_RECENT_S: batches as usual again
        later = Replies()
        for index in range(3):
            scheduler.submit(later.window("later", index))
        later.wait()
    finally:
        scheduler.close()
    assert runner.batches == [[("turn", 0)], [("file", 0)], [("file", 1)], [("file", 2)],
                              [("later", 0), ("later", 1), ("later", 2)]]


def test_an_express_batch_takes_every_waiting_live_turn() -> None:
    express_batches: list[list[tuple[str | None, int]]] = []

    def express(batch: list[QueuedWindow], tickets: list[LanguageTicket | None]) -> list[Outcome]:
        express_batches.append([(w.options.request, w.options.window) for w in batch])
        return [result("live") for _ in batch]

    runner = Runner()
    replies = Replies()
    scheduler = WindowScheduler(runner, workers=2, max_batch=4, express=express)
    try:
        with scheduler._ready:  # the turns arrive together (its lock is re-entrant): no worker takes one before
            for index in range(5):
                scheduler.submit(replies.window(f"turn-{index}", 0, live=True))
        replies.wait()
    finally:
        scheduler.close()
    # One express batch takes as many turns as a batch holds, not a worker's share (they may share a window).
    assert express_batches[0] == [(f"turn-{index}", 0) for index in range(4)]


def test_while_live_turns_keep_coming_one_worker_stays_free_for_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("whisper_triton.scheduler.LIVE_RECENT_S", 2.0)  # room for a slow, shared machine
    runner = Runner(hold_first=True)
    turns, files = Replies(), Replies()
    scheduler = WindowScheduler(runner, workers=2, max_batch=8, express=None)
    try:
        scheduler.submit(turns.window("turn", 0, live=True))
        assert runner.held.acquire(timeout=5)  # one worker busy (held), one free
        scheduler.submit(files.window("file", 0))
        scheduler.submit(files.window("file", 1))
        time.sleep(0.3)
        assert len(runner.batches) == 1  # the free worker keeps off file windows...
        last_turn = time.monotonic()
        scheduler.submit(turns.window("turn-2", 0, live=True))
        assert eventually_batches(runner, 2) and runner.batches[1] == [("turn-2", 0)]  # ...for the next turn
        files.wait()  # and takes them once no turn came for LIVE_RECENT_S, one at a time
        assert time.monotonic() - last_turn >= 1.95
        assert runner.batches[2:] == [[("file", 0)], [("file", 1)]]
    finally:
        runner.release.set()
        scheduler.close()
