"""Fair admission (frontend.admission): slots given round robin across keys, bounded waits, a full server,
and the transcription use case admitting per key (limits first, then its turn)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import cast

import pytest

from frontend.admission import Admission, Slot
from frontend.keys import Principal
from frontend.limits import KeyLimiter, KeyLimits
from frontend.transcription import Transcriptions
from frontend.triton import TritonClient
from whisper_triton.contract import DoneEvent, Event, TranscriptionRequest
from whisper_triton.errors import RateLimitError, UnavailableError


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def waiting(admission: Admission, key: str, order: list[str], tag: str) -> Slot:
    slot = await admission.admit(key)
    order.append(tag)
    return slot


async def test_below_the_slots_nothing_waits() -> None:
    admission = Admission(limit=10, slots=3)
    slots = [await admission.admit("a") for _ in range(3)]
    assert admission.in_flight == 3 and admission.waiting == 0
    for slot in slots:
        slot.release()
    assert admission.in_flight == 0


async def test_freed_slots_go_round_robin_across_keys() -> None:
    admission = Admission(limit=100, slots=1)
    slot = await admission.admit("a")
    order: list[str] = []
    # a floods with 5 requests, then b and c send one each
    tasks = {f"a{i}": asyncio.create_task(waiting(admission, "a", order, f"a{i}")) for i in range(5)}
    await settle()
    tasks |= {key: asyncio.create_task(waiting(admission, key, order, key)) for key in ("b", "c")}
    await settle()
    assert admission.waiting == 7 and admission.held("a") == 6 and order == []
    for _ in range(7):
        slot.release()
        await settle()
        slot = tasks[order[-1]].result()
        assert admission.in_flight == 1
    assert order == ["a0", "b", "c", "a1", "a2", "a3", "a4"]
    slot.release()
    assert admission.in_flight == 0 and admission.waiting == 0


async def test_a_key_that_keeps_flooding_alternates_with_one_that_sends_one_at_a_time() -> None:
    admission = Admission(limit=100, slots=1)
    order: list[str] = []
    slot = await admission.admit("a")
    flood = [asyncio.create_task(waiting(admission, "a", order, "a")) for _ in range(10)]
    await settle()
    single = asyncio.create_task(waiting(admission, "b", order, "b"))
    await settle()
    released = 0
    for _ in range(6):
        slot.release()
        await settle()
        if order[-1] == "b":  # b sends its next request as soon as its last one is through
            slot = single.result()
            single = asyncio.create_task(waiting(admission, "b", order, "b"))
            await settle()
        else:
            slot = flood[released].result()
            released += 1
    assert order == ["a", "b", "a", "b", "a", "b"]
    for task in [*flood, single]:
        task.cancel()
    await asyncio.gather(*flood, single, return_exceptions=True)
    slot.release()
    for task in flood[:released]:
        task.result().release()
    assert admission.waiting == 0


async def test_a_wait_is_bounded_then_503() -> None:
    admission = Admission(limit=10, slots=1, wait_s=0.05)
    slot = await admission.admit("a")
    with pytest.raises(UnavailableError):
        await admission.admit("b")
    assert admission.waiting == 0 and admission.in_flight == 1
    slot.release()
    (await admission.admit("b")).release()


async def test_a_waiter_that_leaves_gives_its_place_up() -> None:
    admission = Admission(limit=10, slots=1)
    slot = await admission.admit("a")
    gone = asyncio.create_task(admission.admit("b"))
    await settle()
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    assert admission.waiting == 0
    slot.release()
    assert admission.in_flight == 0


async def test_full_refuses_the_busiest_key_not_the_quiet_one() -> None:
    admission = Admission(limit=4, slots=1)
    slot = await admission.admit("a")
    flood = [asyncio.create_task(admission.admit("a")) for _ in range(3)]
    await settle()
    assert admission.in_flight + admission.waiting == 4
    with pytest.raises(UnavailableError):  # a itself, full: refused at once
        await admission.admit("a")
    quiet = [asyncio.create_task(admission.admit("b")) for _ in range(2)]  # b gets in: a's newest waiters go
    await settle()
    assert [t.done() for t in flood] == [False, True, True]
    assert all(isinstance(t.exception(), UnavailableError) for t in flood[1:])
    assert admission.held("a") == admission.held("b") == 2
    with pytest.raises(UnavailableError):  # now even: the newcomer is refused
        await admission.admit("b")
    slot.release()
    await settle()
    assert flood[0].done() and not any(t.done() for t in quiet)  # a's turn came first: b joined later
    flood[0].result().release()
    await settle()
    assert quiet[0].done() and not quiet[1].done()
    quiet[0].result().release()
    await settle()
    quiet[1].result().release()
    assert admission.in_flight == 0 and admission.waiting == 0


async def test_one_client_alone_is_served_in_order_up_to_the_limit() -> None:
    """A single client's behaviour is unchanged: FIFO, and 503 only past FRONTEND_MAX_CONCURRENT_REQUESTS."""
    admission = Admission(limit=5, slots=2)
    order: list[str] = []
    slots = [await admission.admit("") for _ in range(2)]
    waiters = [asyncio.create_task(waiting(admission, "", order, str(i))) for i in range(3)]
    await settle()
    with pytest.raises(UnavailableError):
        await admission.admit("")
    for slot in slots:
        slot.release()
    await settle()
    assert order == ["0", "1"]
    for task in waiters:
        task.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)


class NoTriton:
    pass


async def test_the_use_case_checks_the_key_limits_before_its_turn_and_frees_both() -> None:
    alice, bob = Principal("a" * 16, "alice"), Principal("b" * 16, "bob")
    limiter = KeyLimiter(KeyLimits(max_concurrent=1))
    admission = Admission(limit=10, slots=1, wait_s=0.05)
    transcriptions = Transcriptions(cast(TritonClient, NoTriton()), admission, limiter=limiter)
    slot = await transcriptions.admit(alice)
    with pytest.raises(RateLimitError):  # alice's own limit: 429, not a place in the queue
        await transcriptions.admit(alice)
    with pytest.raises(UnavailableError):  # bob waits for the one slot, then gives up: his ticket is freed
        await transcriptions.admit(bob)
    assert limiter.headers(bob)["x-ratelimit-remaining-concurrent"] == "1"
    slot.release()
    assert admission.in_flight == 0 and limiter.headers(alice)["x-ratelimit-remaining-concurrent"] == "1"
    (await transcriptions.admit(bob)).release()


async def test_a_key_that_just_finished_keeps_a_slot_for_its_next_request_a_moment() -> None:
    admission = Admission(limit=100, slots=2, grace_s=0.2)
    flooding = await admission.admit("a")
    quiet = await admission.admit("b")
    flood = [asyncio.create_task(admission.admit("a")) for _ in range(3)]
    await settle()
    quiet.release()  # b's answer is on its way back; its next request comes in a moment
    await settle()
    assert not any(t.done() for t in flood) and admission.in_flight == 1
    quiet = await asyncio.wait_for(admission.admit("b"), 0.01)  # at once: the slot was kept for it
    quiet.release()
    await asyncio.sleep(0.3)  # b sends nothing more: after its grace, a gets the slot
    assert flood[0].done() and not flood[1].done()
    flooding.release()
    await settle()
    assert flood[1].done()
    for task in flood:
        task.cancel()
    await asyncio.gather(*flood, return_exceptions=True)


async def test_slots_nobody_keeps_are_all_used() -> None:
    admission = Admission(limit=100, slots=4, grace_s=10)
    held = [await admission.admit("a"), await admission.admit("a"), await admission.admit("b")]
    # a is at its share (2 of 4, two keys sending), but b does not want more: a gets the fourth slot at once
    held.append(await asyncio.wait_for(admission.admit("a"), 0.01))
    assert admission.in_flight == 4
    for slot in held:
        slot.release()


class DoneTriton:
    async def transcribe(self, audio: bytes, request: object) -> AsyncGenerator[Event, None]:
        yield DoneEvent(task="transcribe", language="en", duration=11.0, text="And so.", segments=[])


async def test_a_transcriptions_audio_counts_to_its_key_by_name() -> None:
    limiter = KeyLimiter(KeyLimits(audio_seconds_per_hour=15))
    seen: list[tuple[float, str, str]] = []
    transcriptions = Transcriptions(cast(TritonClient, DoneTriton()), Admission(limit=4), limiter=limiter,
                                    observe=lambda s, t, k: seen.append((s, t, k)),
                                    name_of={"a" * 16: "alice"}.get)  # type: ignore[arg-type]
    alice = transcriptions.owner("a" * 16)  # as the task runner sees a stored task's owner
    assert alice == Principal("a" * 16, "alice")
    for _ in range(2):
        await transcriptions.result(b"audio", TranscriptionRequest(), principal=alice)
    assert seen == [(11.0, "transcribe", "alice")] * 2
    with pytest.raises(RateLimitError):
        await transcriptions.admit(alice)
    (await transcriptions.admit(Principal("b" * 16, "bob"))).release()
