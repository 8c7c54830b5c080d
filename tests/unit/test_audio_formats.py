"""decode_audio on every supported container/codec, on non-audio input, and the long test recording."""

from __future__ import annotations

import itertools
import struct
import wave
import zlib

import numpy as np
import pytest

from tests.assets import FORMATS, JFK_DURATION, VIDEO_FORMATS, encoded, long_recording, video_without_audio
from whisper_triton.audio import SAMPLE_RATE, decode_audio
from whisper_triton.errors import InvalidAudioError


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_format_decodes_to_16k_mono_float32(name: str) -> None:
    path = encoded(name)
    decoded = decode_audio(path.read_bytes())  # bytes only: the file name is never seen
    samples = decoded.samples
    assert samples.dtype == np.float32
    assert samples.ndim == 1
    assert len(samples) / SAMPLE_RATE == pytest.approx(JFK_DURATION, abs=0.3), name
    assert decoded.duration == pytest.approx(JFK_DURATION, abs=0.3)
    assert float(np.sqrt(np.mean(samples**2))) > 0.01, name
    assert float(np.abs(samples).max()) <= 1.0


def test_video_formats_really_carry_video() -> None:
    import av

    for name in sorted(VIDEO_FORMATS):
        with av.open(str(encoded(name))) as container:
            assert container.streams.video and container.streams.audio, name


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)  # 8x8 RGB
    pixels = zlib.compress(b"".join(b"\x00" + b"\x80\x40\x20" * 8 for _ in range(8)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


NOT_AUDIO = {
    "empty": lambda: b"",
    "random": lambda: np.random.default_rng(7).integers(0, 256, 50_000, dtype=np.uint8).tobytes(),
    "text": lambda: b"Hello, this is a plain text file and not audio at all.\n" * 200,
    "png": _png,
    "video_without_audio": lambda: video_without_audio().read_bytes(),
}


@pytest.mark.parametrize("kind", sorted(NOT_AUDIO))
def test_non_audio_is_rejected(kind: str) -> None:
    with pytest.raises(InvalidAudioError):
        decode_audio(NOT_AUDIO[kind]())


def test_long_recording_pieces_are_ordered_and_inside_the_file() -> None:
    recording = long_recording(1.0)
    with wave.open(str(recording.path), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (SAMPLE_RATE, 1, 2)
        assert wav.getnframes() / SAMPLE_RATE == pytest.approx(recording.duration, abs=1e-6)
    assert 55.0 <= recording.duration <= 80.0
    pieces = recording.pieces
    assert len(pieces) >= 4
    assert all(0.0 <= p.start < p.end <= recording.duration for p in pieces)
    for before, after in itertools.pairwise(pieces):
        assert after.start - before.end >= 0.39, (before, after)
    assert recording.text == " ".join(p.text for p in pieces)
    assert not any(ch.isdigit() for ch in recording.text)
    assert long_recording(1.0) == recording  # cached and deterministic
