"""Fuzzing `whisper_triton.audio.decode_audio` with broken real containers.

Starts from the JFK clip as wav, mp3, flac, ogg, opus, m4a and webm, plus float, 8-channel 192 kHz
and video-only files, and mutates them (bit flips, truncation, spliced headers, ...). Every input
must decode or fail with `InvalidAudioError` (the documented error), within a time limit: decoding
runs in a worker process that is killed and replaced when it hangs or dies (a crash in FFmpeg).

`make test` runs it briefly; `FUZZ_SECONDS=600` runs it longer (`make fuzz`). `FUZZ_SEED` replays a
run. Failing inputs are written to the test's temporary directory.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import random
import struct
import subprocess
import time
import wave
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.assets import encoded, jfk_wav, video_without_audio
from harness.profiles import fuzz_seconds
from tests.fuzz.mutate import mutate, splice

FORMATS = ("wav", "mp3", "flac", "ogg", "opus", "m4a", "webm")
CASE_TIMEOUT_S = 20.0  # one decode of a mutated 11 s clip takes milliseconds
MAX_SECONDS = 600.0  # a mutated header may claim hours of audio; this bounds the decoder's memory


def float_wav(samples: np.ndarray, rate: int = 16_000) -> bytes:
    """IEEE float WAV (format 3), which the `wave` module cannot write."""
    data = samples.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    return (b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE" + b"fmt " + struct.pack("<I", 16)
            + fmt + b"data" + struct.pack("<I", len(data)) + data)


def multichannel_wav(channels: int = 8, rate: int = 192_000, seconds: float = 0.25) -> bytes:
    tone = (np.sin(np.arange(int(rate * seconds)) * 440 * 2 * np.pi / rate) * 8000).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.repeat(tone, channels).tobytes())
    return buffer.getvalue()


def seeds() -> list[bytes]:
    corpus = [jfk_wav().read_bytes(), *(encoded(name).read_bytes() for name in FORMATS[1:])]
    nan = (np.sin(np.arange(16_000) / 5) * 0.3).astype(np.float32)
    nan[::7] = np.nan
    nan[::11] = np.inf
    return [*corpus, float_wav(nan), multichannel_wav(), video_without_audio().read_bytes()]


def _worker(connection: Connection) -> None:
    from whisper_triton.audio import decode_audio
    from whisper_triton.errors import InvalidAudioError

    while True:
        data = connection.recv_bytes()
        try:
            decoded = decode_audio(data, MAX_SECONDS)
            ok = decoded.samples.dtype == np.float32 and bool(np.isfinite(decoded.samples).all())
            connection.send(("ok" if ok else "bad samples", ""))
        except InvalidAudioError as exc:
            connection.send(("invalid", exc.message))
        except BaseException as exc:  # anything else is what we are looking for
            connection.send((type(exc).__name__, str(exc)[:500]))


class Decoder:
    """A decode_audio worker process, replaced when it hangs or dies."""

    def __init__(self) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._start()

    def _start(self) -> None:
        self.connection, child = self._context.Pipe()
        self.process = self._context.Process(target=_worker, args=(child,), daemon=True)
        self.process.start()
        child.close()

    def decode(self, data: bytes) -> tuple[str, str]:
        self.connection.send_bytes(data)
        try:
            if self.connection.poll(CASE_TIMEOUT_S):
                result: tuple[str, str] = self.connection.recv()
                return result
            outcome = ("hang", f"no answer within {CASE_TIMEOUT_S:g} s")
        except EOFError:
            outcome = ("crash", f"the decoder process died (exit code {self.process.exitcode})")
        self.close()
        self._start()
        return outcome

    def close(self) -> None:
        self.process.kill()
        self.process.join()


@pytest.fixture(scope="module")
def decoder() -> Any:
    worker = Decoder()
    worker.decode(b"")  # wait for the imports, outside the time budget
    yield worker
    worker.close()


def test_seeds_decode(decoder: Decoder) -> None:
    outcomes = [decoder.decode(seed)[0] for seed in seeds()]
    assert outcomes == ["ok"] * (len(outcomes) - 1) + ["invalid"]  # the video has no audio track


def test_regression_audio_stream_without_a_decoder_is_invalid_audio() -> None:
    from whisper_triton.audio import decode_audio
    from whisper_triton.errors import InvalidAudioError

    data = bytes(3200)
    fmt = struct.pack("<HHIIHH", 0x7777, 1, 16_000, 32_000, 2, 16)  # a WAV format tag no decoder knows
    wav = (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data"
           + struct.pack("<I", len(data)) + data)
    with pytest.raises(InvalidAudioError):
        decode_audio(wav)


def test_regression_channel_layout_changing_mid_stream_decodes() -> None:
    """Concatenated MP3s, mono then stereo then mono: one resampler setup refused the second part."""
    from whisper_triton.audio import decode_audio

    def mp3(channels: int) -> bytes:
        return subprocess.run(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
             "sine=frequency=300:sample_rate=16000:duration=1", "-ac", str(channels), "-c:a", "libmp3lame",
             "-write_xing", "0", "-id3v2_version", "0", "-f", "mp3", "-"],
            capture_output=True, check=True).stdout

    assert decode_audio(mp3(1) + mp3(2) + mp3(1)).duration == pytest.approx(3.0, abs=0.3)


def test_mutated_containers_decode_or_fail_cleanly(decoder: Decoder, tmp_path: Path) -> None:
    seed = int(os.environ.get("FUZZ_SEED") or time.time_ns() % 2**32)
    rng = random.Random(seed)
    corpus = seeds()
    deadline = time.monotonic() + fuzz_seconds(10.0)
    failures: list[str] = []
    counts: dict[str, int] = {}
    cases = 0
    while time.monotonic() < deadline and len(failures) < 5:
        if rng.random() < 0.1:
            data = splice(rng, rng.choice(corpus), rng.choice(corpus))
        else:
            data = mutate(rng, rng.choice(corpus))
        outcome, detail = decoder.decode(data)
        counts[outcome] = counts.get(outcome, 0) + 1
        if outcome not in ("ok", "invalid"):
            path = tmp_path / f"case-{cases}.bin"
            path.write_bytes(data)
            failures.append(f"{outcome}: {detail} (input saved as {path})")
        cases += 1
    print(f"audio fuzz: seed {seed}, {cases} cases, outcomes {counts}")
    assert not failures, f"FUZZ_SEED={seed}:\n" + "\n".join(failures)
    assert cases > 0
