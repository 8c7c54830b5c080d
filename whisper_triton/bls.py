"""Decoupled BLS calls from our Python-backend models, read so that Triton 2.51's stub cannot corrupt its heap.

`request.exec(decoupled=True)` returns a response iterator that the stub also keeps in a map of its own. When the
last response has been read, the iterator asks the stub's messaging thread to drop it from that map, and that
thread does so without holding the GIL (python_backend's `Stub::SendCleanupId`, still so upstream in 2026).
If our thread let go of the iterator first, the map held the last reference: the iterator, its responses and
the NumPy arrays of their tensors were freed on that thread without the GIL, racing every Python thread of the
process. That is how the entry model's process died under load with clients leaving (heap corruption:
"malloc(): unaligned tcache chunk detected", or a SIGSEGV in `deserialize_bytes_tensor`).

`responses(request)` reads a call to its end and then holds the finished iterator for `HOLD_S` seconds, far
longer than the messaging thread takes to drop its own reference, so that ours is the last one and is let go
by a thread that holds the GIL (the next call that reads a stream releases the iterators held long enough).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import Executor
from typing import Any, TypeVar

import numpy as np

from whisper_triton import contract

T = TypeVar("T")

HOLD_S = 10.0


class HeldStreams:
    """Finished response iterators, each held until `hold_s` after it ended; released by the next `hold`."""

    def __init__(self, hold_s: float = HOLD_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.hold_s = hold_s
        self._clock = clock
        self._held: deque[tuple[float, Any]] = deque()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, stream: Any) -> None:
        now = self._clock()
        released = []
        with self._lock:
            while self._held and self._held[0][0] <= now:
                released.append(self._held.popleft()[1])
            self._held.append((now + self.hold_s, stream))
        del released  # let go here, outside the lock, by a thread that holds the GIL

    def clear(self) -> None:
        with self._lock:
            self._held.clear()


HELD = HeldStreams()


def responses(request: Any, held: HeldStreams = HELD) -> Iterator[Any]:
    """The responses of one decoupled BLS call (`request.exec(decoupled=True)`), read in the calling thread.
    A caller that stops early still leaves the call read to its end (what the stub's iterator would do when
    freed), so the iterator is always finished when it is held."""
    stream: Iterable[Any] = request.exec(decoupled=True)
    finished = False
    try:
        yield from stream
        finished = True
    finally:
        if not finished:  # the caller stopped early: read the rest (iterating again resumes where it stopped)
            with contextlib.suppress(Exception):
                for _ in stream:
                    pass
        held.hold(stream)


async def cancel_at_engine(pb_utils: Any, engine: str, request_id: str, executor: Executor) -> None:
    """Drops the windows of `request_id` still queued at the engine model `engine` (a CANCEL request; best
    effort: the engine may be gone). `pb_utils` is the Triton module of the calling model."""
    inputs = [pb_utils.Tensor(contract.CANCEL, np.array([request_id.encode()], dtype=object))]

    def call() -> None:
        request = pb_utils.InferenceRequest(model_name=engine, inputs=inputs, requested_output_names=[contract.RESULT])
        for _ in responses(request):
            pass

    with contextlib.suppress(Exception):
        await asyncio.get_running_loop().run_in_executor(executor, call)


async def in_thread(produce: Callable[[], Iterator[T]], executor: Executor,
                    running: set[asyncio.Future[None]] | None = None) -> AsyncIterator[T]:
    """The items of `produce()`, a generator run in a thread of `executor` (it blocks on BLS calls), as they come
    to the event loop; its exception is raised here after the items before it. A caller that stops early leaves
    the thread to finish on its own: it is in `running` (when given) until then."""
    loop = asyncio.get_running_loop()
    arrived: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()
    end = object()

    def run() -> None:
        try:
            for item in produce():
                loop.call_soon_threadsafe(arrived.put_nowait, (True, item))
        except Exception as exc:
            loop.call_soon_threadsafe(arrived.put_nowait, (False, exc))
        finally:
            loop.call_soon_threadsafe(arrived.put_nowait, (False, end))

    thread = loop.run_in_executor(executor, run)
    if running is not None:
        running.add(thread)
        thread.add_done_callback(running.discard)
    while True:
        ok, item = await arrived.get()
        if ok:
            yield item
        elif item is end:
            return
        else:
            raise item
