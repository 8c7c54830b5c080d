"""Byte-level mutations of well-formed inputs: the fuzzers start from real files and break them."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

INTERESTING = (b"\x00", b"\xff", b"\x7f", b"\x80", b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff",
               b"\x00\x00\x00\x80", b"\r\n", b"\r\n\r\n", b"--")


def _flip(rng: random.Random, data: bytearray) -> None:
    for _ in range(rng.randint(1, 16)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)


def _interesting(rng: random.Random, data: bytearray) -> None:
    # Headers sit at the start: aim there more often than at the payload.
    end = len(data) if rng.random() < 0.3 else min(len(data), 512)
    at = rng.randrange(end)
    value = rng.choice(INTERESTING)
    data[at : at + len(value)] = value


def _truncate(rng: random.Random, data: bytearray) -> None:
    del data[rng.randrange(len(data)) :]


def _delete(rng: random.Random, data: bytearray) -> None:
    start = rng.randrange(len(data))
    del data[start : start + rng.randint(1, 4096)]


def _duplicate(rng: random.Random, data: bytearray) -> None:
    start = rng.randrange(len(data))
    piece = data[start : start + rng.randint(1, 4096)]
    at = rng.randrange(len(data))
    data[at:at] = piece * rng.randint(1, 4)


def _insert(rng: random.Random, data: bytearray) -> None:
    at = rng.randrange(len(data) + 1)
    data[at:at] = rng.randbytes(rng.randint(1, 256))


MUTATIONS: Sequence[Callable[[random.Random, bytearray], None]] = (
    _flip, _interesting, _truncate, _delete, _duplicate, _insert,
)


def mutate(rng: random.Random, seed: bytes, extra: Sequence[Callable[[random.Random, bytearray], None]] = ()) -> bytes:
    """`seed` with one to four random mutations applied."""
    data = bytearray(seed)
    for _ in range(rng.randint(1, 4)):
        if not data:
            break
        rng.choice([*MUTATIONS, *extra])(rng, data)
    return bytes(data)


def splice(rng: random.Random, a: bytes, b: bytes) -> bytes:
    """The start of one input glued to the rest of another (e.g. a FLAC header on MP3 frames)."""
    return a[: rng.randint(0, min(len(a), 2048))] + b[rng.randint(0, len(b)) :]
