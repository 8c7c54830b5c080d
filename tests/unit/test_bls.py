"""whisper_triton.bls: a finished BLS response stream is held, then let go by a thread of ours."""

import asyncio
import gc
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

from whisper_triton.bls import HeldStreams, cancel_at_engine, in_thread, responses


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Stream:
    """Like the stub's response iterator: iterating again resumes where the last iteration stopped."""

    freed_on: ClassVar[list] = []  # (name, thread id) of each stream freed

    def __init__(self, name, count):
        self.name, self.items, self.read = name, list(range(count)), 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.read == len(self.items):
            raise StopIteration
        self.read += 1
        return self.items[self.read - 1]

    def __del__(self):
        Stream.freed_on.append((self.name, threading.get_ident()))


class Request:
    def __init__(self, stream):
        self.stream = stream

    def exec(self, decoupled):
        assert decoupled
        stream, self.stream = self.stream, None  # the caller's reference is the only one left
        return stream


def read(request, held):
    return list(responses(request, held))


def test_a_finished_stream_is_held_for_the_hold_time_then_let_go_by_the_next_call():
    Stream.freed_on.clear()
    clock = Clock()
    held = HeldStreams(hold_s=10.0, clock=clock)
    assert read(Request(Stream("first", 3)), held) == [0, 1, 2]
    gc.collect()
    assert Stream.freed_on == [] and len(held) == 1  # held after the caller let go

    clock.now += 9.9
    read(Request(Stream("second", 1)), held)
    gc.collect()
    assert Stream.freed_on == [] and len(held) == 2  # not yet 10 s

    clock.now += 0.2
    done = threading.Event()
    worker = threading.Thread(target=lambda: (read(Request(Stream("third", 0)), held), done.set()))
    worker.start()
    worker.join()
    assert done.is_set()
    assert Stream.freed_on == [("first", worker.ident)]  # freed by the thread that held the third
    assert len(held) == 2

    held.clear()
    assert [name for name, _ in Stream.freed_on] == ["first", "second", "third"]


def test_a_caller_that_stops_early_leaves_the_stream_read_to_its_end():
    Stream.freed_on.clear()
    held = HeldStreams(hold_s=10.0, clock=Clock())
    stream = Stream("partly read", 5)
    reader = responses(Request(stream), held)
    assert next(reader) == 0
    reader.close()
    assert stream.read == 5 and len(held) == 1


def test_a_stream_that_fails_is_held_too():
    class Failing(Stream):
        def __next__(self):
            raise RuntimeError("engine gone")

    held = HeldStreams(hold_s=10.0, clock=Clock())
    try:
        read(Request(Failing("failing", 2)), held)
    except RuntimeError as exc:
        assert str(exc) == "engine gone"
    else:
        raise AssertionError("the stream's failure was swallowed")
    assert len(held) == 1


def test_in_thread_hands_the_items_to_the_loop_then_raises_the_failure():
    threads = set()

    def produce():
        threads.add(threading.get_ident())
        yield 1
        yield 2
        raise ValueError("the call failed")

    async def collect():
        got = []
        try:
            async for item in in_thread(produce, pool):
                got.append(item)
        except ValueError as exc:
            got.append(str(exc))
        return got

    with ThreadPoolExecutor(1) as pool:
        assert asyncio.run(collect()) == [1, 2, "the call failed"]
    assert threads and threading.get_ident() not in threads


def test_in_thread_leaves_a_thread_whose_caller_stopped_early_running_until_it_ends():
    release, ended = threading.Event(), threading.Event()

    def produce():
        yield "first"
        release.wait(5)
        yield "second"
        ended.set()

    async def first_only(running):
        async for item in in_thread(produce, pool, running):
            assert item == "first"
            break
        assert len(running) == 1 and not ended.is_set()  # still reading, not awaited
        release.set()
        await asyncio.gather(*running)
        return ended.is_set()

    with ThreadPoolExecutor(1) as pool:
        assert asyncio.run(first_only(set()))


def test_every_decoupled_bls_call_goes_through_responses():
    """A model that iterates `request.exec(decoupled=True)` itself brings the stub's crash back."""
    root = Path(__file__).resolve().parents[2]
    sources = [*root.glob("model_repository/*/1/*.py"), *root.glob("whisper_triton/**/*.py")]
    direct = [f"{path.relative_to(root)}:{number}" for path in sources if path.name != "bls.py"
              for number, line in enumerate(path.read_text().splitlines(), 1)
              if re.search(r"\.exec\(\s*decoupled\s*=\s*True", line)]
    assert sources and direct == []


class Answers(Stream):
    """A stream left in the module's `HELD` until the process ends: nothing to record when freed then."""

    def __init__(self, count):
        super().__init__("cancel", count)

    def __del__(self):
        pass


class FakeTriton:
    """What `cancel_at_engine` uses of `triton_python_backend_utils`: tensors and requests that record themselves."""

    def __init__(self, fail=False):
        self.requests, self.fail = [], fail
        outer = self

        class Tensor:
            def __init__(self, name, value):
                self.name, self.value = name, value

        class InferenceRequest:
            def __init__(self, model_name, inputs, requested_output_names):
                self.model_name, self.inputs, self.outputs = model_name, inputs, requested_output_names
                outer.requests.append(self)
                self.stream = Answers(2)

            def exec(self, decoupled):
                if outer.fail:
                    raise RuntimeError("the engine is gone")
                assert decoupled
                return self.stream

        self.Tensor, self.InferenceRequest = Tensor, InferenceRequest


def test_cancel_at_engine_sends_the_request_id_and_reads_the_answer_to_its_end():
    triton = FakeTriton()
    with ThreadPoolExecutor(1) as pool:
        asyncio.run(cancel_at_engine(triton, "whisper_engine__base", "req-7", pool))
        (request,) = triton.requests
        assert request.model_name == "whisper_engine__base" and request.outputs == ["RESULT"]
        (tensor,) = request.inputs
        assert tensor.name == "CANCEL" and list(tensor.value) == [b"req-7"]
        assert request.stream.read == 2  # drained, so the stream is held and let go by a thread of ours
        # best effort: an engine that is gone is no error for the caller
        asyncio.run(cancel_at_engine(FakeTriton(fail=True), "whisper_engine__base", "req-8", pool))
