"""Fair admission of synchronous transcriptions: a share of the server for every key that is sending.

Triton's engine batches windows first come, first served: a key that sends ten requests at once would
fill its batches and everyone else would wait behind them. So the frontend lets at most `slots`
transcriptions into Triton at once (enough to keep the engine's batches full); beyond that, requests wait
in one queue per key, and each slot that frees goes to the next key in turn (round robin). A key that
floods waits behind its own requests while another key's next request goes first.

A key whose last request ended less than `grace_s` ago keeps one slot free for its next request while the
other keys are over their share (`slots` divided among the keys sending, rounded up): a client that sends
one request at a time needs a moment to send the next, and without the grace the flooding key's queue would
take that slot every time (the quiet key would get a third of the throughput instead of half). A slot kept
that way stays free for at most `grace_s`; otherwise every free slot is used.

A request waits at most `wait_s`, then gets a 503 (retry later), as does one that arrives while `limit`
requests are in flight or waiting (the server is really full). When full, a key holding fewer
requests than the busiest key gets in anyway: the busiest key's newest waiter is refused instead.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter, OrderedDict, deque
from collections.abc import Callable

from whisper_triton.errors import UnavailableError

BUSY = "The server is busy with other transcriptions; retry shortly."
GRACE_S = 0.5  # a key that sends one request at a time sends its next one within this (a LAN round trip)


class Slot:
    """One admitted transcription; `release` frees it (once, however often it is called)."""

    def __init__(self, *on_release: Callable[[], None]) -> None:
        self._on_release: tuple[Callable[[], None], ...] | None = on_release

    def release(self) -> None:
        callbacks, self._on_release = self._on_release, None
        for callback in callbacks or ():
            callback()


class Admission:
    """At most `slots` transcriptions in flight, the rest waiting per key and served round robin."""

    def __init__(self, limit: int, slots: int | None = None, wait_s: float = 30.0, grace_s: float = GRACE_S) -> None:
        self.limit = limit  # in flight and waiting, before 503
        self.slots = min(limit, slots or limit)
        self.wait_s = wait_s
        self.grace_s = grace_s
        self.in_flight = 0
        self.waiting = 0
        self._held: Counter[str] = Counter()  # in flight, per key
        self._queues: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()  # next key in turn first
        self._ended: dict[str, float] = {}  # when each key's last request ended (loop time)
        self._recheck: asyncio.TimerHandle | None = None

    def held(self, key: str) -> int:
        """A key's requests in flight and waiting."""
        return self._held[key] + len(self._queues.get(key, ()))

    async def admit(self, key: str = "") -> Slot:
        """A slot for `key`'s transcription, at once or after waiting its turn; UnavailableError when the
        server is full or the wait is over."""
        if self.in_flight < self.slots and not self.waiting and self._may_take(key):
            return self._grant(key)
        if self.in_flight + self.waiting >= self.limit:
            self._make_room(key)
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(key, deque()).append(turn)
        self.waiting += 1
        self._next_turns()
        try:
            async with asyncio.timeout(self.wait_s):
                await turn
        except (TimeoutError, asyncio.CancelledError) as exc:
            if turn.done() and not turn.cancelled() and turn.exception() is None:
                self._release(key)  # the turn came as the wait ended: pass it on
            else:
                self._forget(key, turn)
            if isinstance(exc, TimeoutError):
                raise UnavailableError(BUSY) from None
            raise
        return Slot(lambda: self._release(key))

    def _grant(self, key: str) -> Slot:
        self.in_flight += 1
        self._held[key] += 1
        return Slot(lambda: self._release(key))

    def _release(self, key: str) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        self._held[key] -= 1
        if self._held[key] <= 0:
            del self._held[key]
        self._ended[key] = asyncio.get_running_loop().time()
        self._next_turns()

    def _may_take(self, key: str, spare: bool = True) -> bool:
        """Whether `key` may take a free slot now: while under its share of the slots, or (`spare`) while more
        slots are free than the keys within their grace (each keeps one for its next request)."""
        now = asyncio.get_running_loop().time()
        self._ended = {k: t for k, t in self._ended.items() if now - t < self.grace_s}
        sending = {*self._held, *self._queues, *self._ended, key}
        if self._held[key] < math.ceil(self.slots / len(sending)):
            return True
        idle = [k for k in self._ended if k != key and k not in self._held and k not in self._queues]
        return spare and self.slots - self.in_flight > len(idle)

    def _next_turns(self) -> None:
        """Free slots go to the waiting keys in turn, each key's oldest request first, keys under their share
        before the others; a slot kept for a key within its grace is looked at again when the grace ends."""
        while self.in_flight < self.slots and self._queues:
            key = next((k for k in self._queues if self._may_take(k, spare=False)), None)
            if key is None:
                key = next((k for k in self._queues if self._may_take(k)), None)
            if key is None:
                self._recheck_later()
                return
            queue = self._queues[key]
            turn = queue.popleft()
            if queue:
                self._queues.move_to_end(key)
            else:
                del self._queues[key]
            self.waiting -= 1
            self.in_flight += 1
            self._held[key] += 1
            turn.set_result(None)

    def _recheck_later(self) -> None:
        if self._recheck is not None and not self._recheck.cancelled():
            self._recheck.cancel()
        loop = asyncio.get_running_loop()
        first_end = min(self._ended.values(), default=loop.time())
        self._recheck = loop.call_at(first_end + self.grace_s + 0.001, self._next_turns)

    def _forget(self, key: str, turn: asyncio.Future[None]) -> None:
        queue = self._queues.get(key)
        if queue is not None and turn in queue:
            queue.remove(turn)
            self.waiting -= 1
            if not queue:
                del self._queues[key]

    def _make_room(self, key: str) -> None:
        """Full: the newest waiter of the key holding the most is refused, unless that is `key` itself
        (or holds about as much), in which case the newcomer is."""
        busiest = max(self._queues, key=self.held, default=None)
        if busiest is None or busiest == key or self.held(busiest) <= self.held(key) + 1:
            raise UnavailableError(BUSY)
        queue = self._queues[busiest]
        turn = queue.pop()
        self.waiting -= 1
        if not queue:
            del self._queues[busiest]
        turn.set_exception(UnavailableError(BUSY))
