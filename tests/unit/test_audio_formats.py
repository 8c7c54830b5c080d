"""decode_audio on every supported container/codec, on non-audio input, and the long test recording."""

from __future__ import annotations

import itertools
import struct
import subprocess
import wave
import zlib
from pathlib import Path

import av
import numpy as np
import pytest

from harness.assets import FORMATS, JFK_DURATION, VIDEO_FORMATS, encoded, long_recording, video_without_audio
from whisper_triton import audio
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


# --------------------------------------------------------------------------------------------------
# PCM WAV, read with numpy: every case against ffmpeg's command line (what decode_audio did through
# PyAV before, and what OpenAI's Whisper runs) and against decode_audio's own PyAV path.

SUBTYPE_TAIL = bytes.fromhex("000000001000800000aa00389b71")
KINDS = {"u8": (1, 8), "s16": (1, 16), "s24": (1, 24), "s32": (1, 32), "f32": (3, 32), "f64": (3, 64)}


def signal(rate: int, channels: int, seconds: float = 0.5, seed: int = 0) -> np.ndarray:
    """(channels, n) in [-0.9, 0.9]: a different tone per channel, content above 8 kHz, a little noise."""
    t = np.arange(int(rate * seconds)) / rate
    noise = np.random.default_rng(seed).standard_normal((channels, len(t)))
    rows = [0.5 * np.sin(2 * np.pi * 220 * (c + 1) * t + c) + 0.3 * np.sin(2 * np.pi * min(11_000, rate * 0.45) * t)
            for c in range(channels)]
    return np.clip(np.array(rows) + 0.05 * noise, -0.9, 0.9)


def pcm(samples: np.ndarray, kind: str) -> bytes:
    interleaved = samples.T.reshape(-1)
    if kind == "u8":
        return np.round(interleaved * 127 + 128).astype("u1").tobytes()
    if kind in ("s16", "s24", "s32"):
        bits = KINDS[kind][1]
        ints = np.round(interleaved * (2 ** (bits - 1) - 1)).astype("<i4")
        return ints.astype("<i2").tobytes() if bits == 16 else ints.view("u1").reshape(-1, 4)[:, : bits // 8].tobytes()
    return interleaved.astype("<f4" if kind == "f32" else "<f8").tobytes()


def chunk(tag: bytes, body: bytes, size: int | None = None) -> bytes:
    return tag + struct.pack("<I", len(body) if size is None else size) + body + b"\0" * (len(body) & 1)


def fmt_chunk(kind: str, channels: int, rate: int, mask: int | None = None, cb_size: bool = False) -> bytes:
    tag, bits = KINDS[kind]
    block = channels * bits // 8
    body = struct.pack("<HHIIHH", 0xFFFE if mask is not None else tag, channels, rate, rate * block, block, bits)
    if mask is not None:
        body += struct.pack("<HHIH", 22, bits, mask, tag) + SUBTYPE_TAIL
    elif cb_size:
        body += struct.pack("<H", 0)
    return chunk(b"fmt ", body)


def riff(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def wav_of(samples: np.ndarray, rate: int, kind: str = "s16", mask: int | None = None) -> bytes:
    return riff(fmt_chunk(kind, len(samples), rate, mask), chunk(b"data", pcm(samples, kind)))


def ffmpeg_reference(data: bytes, tmp_path: Path) -> np.ndarray:
    """`ffmpeg -ac 1 -ar 16000` on a (seekable) file, clipped as decode_audio clips."""
    path = tmp_path / f"input-{zlib.crc32(data):08x}"
    path.write_bytes(data)
    out = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1", "-ar",
         str(SAMPLE_RATE), "-f", "f32le", "pipe:"], capture_output=True, check=True).stdout
    return np.clip(np.frombuffer(out, dtype="<f4"), -1.0, 1.0)


def through_pyav(data: bytes, monkeypatch: pytest.MonkeyPatch) -> np.ndarray:
    """decode_audio with its WAV reader switched off: FFmpeg (PyAV) decodes the same bytes."""
    with monkeypatch.context() as patch:
        patch.setattr(audio, "_parse_wav", lambda data: None)
        return decode_audio(data).samples


def assert_decodes_as_ffmpeg(data: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, atol: float) -> None:
    samples = decode_audio(data).samples
    assert samples.dtype == np.float32
    for name, expected in (("ffmpeg", ffmpeg_reference(data, tmp_path)), ("pyav", through_pyav(data, monkeypatch))):
        assert len(samples) == len(expected), name
        np.testing.assert_allclose(samples, expected, rtol=0, atol=atol, err_msg=name)


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_pcm_wav_of_every_sample_format(kind: str, channels: int, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    data = wav_of(signal(SAMPLE_RATE, channels), SAMPLE_RATE, kind)
    assert_decodes_as_ffmpeg(data, tmp_path, monkeypatch, atol=1e-6)


@pytest.mark.parametrize("rate", [8_000, 22_050, 44_100, 48_000])
@pytest.mark.parametrize(("channels", "mask"), [(1, None), (2, None), (2, 0x3), (3, None), (6, 0x3F), (8, None)])
def test_pcm_wav_of_other_rates_and_layouts(rate: int, channels: int, mask: int | None, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    data = wav_of(signal(rate, channels, seed=rate + channels), rate, "s16", mask)
    assert_decodes_as_ffmpeg(data, tmp_path, monkeypatch, atol=2e-5)


SAMPLES = pcm(signal(SAMPLE_RATE, 1, seconds=0.3), "s16")
FMT = fmt_chunk("s16", 1, SAMPLE_RATE)
ODD_LIST = chunk(b"LIST", b"INFOIART\x03\0\0\0ab\0")  # 15 bytes and a pad byte
CHUNK_LAYOUTS = {
    "odd LIST chunk, padded, before data": riff(FMT, ODD_LIST, chunk(b"data", SAMPLES)),
    "fmt after data": riff(chunk(b"data", SAMPLES), FMT),
    "fact before and LIST after data": riff(FMT, chunk(b"fact", struct.pack("<I", 4800)), chunk(b"data", SAMPLES),
                                            chunk(b"LIST", b"INFO")),
    "fmt with an empty extension": riff(fmt_chunk("s16", 1, SAMPLE_RATE, cb_size=True), chunk(b"data", SAMPLES)),
    "JUNK before fmt": riff(chunk(b"JUNK", bytes(27)), FMT, chunk(b"data", SAMPLES)),
    "odd data chunk, then LIST": riff(FMT, chunk(b"data", SAMPLES + b"\x01"), chunk(b"LIST", b"INFO")),
    "streamed, data size 0": riff(FMT, chunk(b"data", SAMPLES, size=0)),
    "streamed, data size 0xFFFFFFFF": riff(FMT, chunk(b"data", SAMPLES, size=0xFFFFFFFF)),
    "truncated in a sample": riff(FMT, chunk(b"data", SAMPLES, size=2 * len(SAMPLES)))[:-3],
    "data size of 2 GB, 0.3 s present": riff(FMT, chunk(b"data", SAMPLES, size=0x7FFFFFF0)),
    "rf64": b"RF64" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + chunk(
        b"ds64", struct.pack("<QQQ", 0, len(SAMPLES), len(SAMPLES) // 2)) + FMT + chunk(b"data", SAMPLES, 0xFFFFFFFF),
}
LEFT_TO_FFMPEG = {
    "two data chunks": riff(FMT, chunk(b"data", SAMPLES[:3000]), chunk(b"data", SAMPLES[3000:])),
    "12-bit samples": riff(chunk(b"fmt ", struct.pack("<HHIIHH", 1, 1, SAMPLE_RATE, 2 * SAMPLE_RATE, 2, 12)),
                           chunk(b"data", SAMPLES)),
    "mask naming more channels than there are": wav_of(signal(SAMPLE_RATE, 2), SAMPLE_RATE, "s16", mask=0x7),
    "block align of 4 for 16-bit mono": riff(chunk(b"fmt ", struct.pack("<HHIIHH", 1, 1, SAMPLE_RATE, 64_000, 4, 16)),
                                             chunk(b"data", SAMPLES)),
}


@pytest.mark.parametrize("layout", sorted(CHUNK_LAYOUTS.keys() | LEFT_TO_FFMPEG.keys()))
def test_wav_chunk_layouts(layout: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = CHUNK_LAYOUTS.get(layout) or LEFT_TO_FFMPEG[layout]
    assert_decodes_as_ffmpeg(data, tmp_path, monkeypatch, atol=1e-6)


def test_plain_pcm_wav_is_read_without_ffmpeg(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("PCM WAV went through FFmpeg")

    monkeypatch.setattr(audio.av, "open", refuse)
    for rate, channels, kind in ((SAMPLE_RATE, 1, "s16"), (48_000, 2, "s24"), (44_100, 6, "f32")):
        decoded = decode_audio(wav_of(signal(rate, channels), rate, kind))
        assert decoded.container == "wav"
        assert decoded.duration == pytest.approx(0.5, abs=1e-3)
    for layout, data in CHUNK_LAYOUTS.items():
        assert decode_audio(data).container == "wav", layout


def test_a_sync_word_by_chance_in_speech_keeps_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ordinary speech holds the bytes of a DTS sync word now and then (a 1-hour recording did within its
    first second); only a stream that opens with one (after zeros at most) is left to FFmpeg."""
    samples = (signal(SAMPLE_RATE, 1)[0] * 30000).astype("<i2").tobytes()
    sync = b"\xff\x1f\x00\xe8"  # DTS 14-bit
    chance = riff(fmt_chunk("s16", 1, SAMPLE_RATE), chunk(b"data", samples[:200] + sync + samples[200:]))
    stream = riff(fmt_chunk("s16", 1, SAMPLE_RATE), chunk(b"data", bytes(16) + sync + samples))
    assert audio._parse_wav(chance) is not None
    assert audio._parse_wav(stream) is None


def test_wav_claiming_a_huge_data_size_decodes_what_is_there() -> None:
    decoded = decode_audio(CHUNK_LAYOUTS["data size of 2 GB, 0.3 s present"], max_seconds=10)
    assert decoded.duration == pytest.approx(0.3)


def test_wav_with_less_than_one_sample_is_invalid_and_an_empty_one_is_empty() -> None:
    with pytest.raises(InvalidAudioError, match="could not be decoded"):
        decode_audio(riff(FMT, chunk(b"data", b"\x01")))
    assert decode_audio(riff(FMT, chunk(b"data", b""))).duration == 0.0


@pytest.mark.parametrize(("rate", "channels"), [(SAMPLE_RATE, 1), (48_000, 2)])
def test_float_wav_nan_inf_and_overrange_are_mapped(rate: int, channels: int) -> None:
    samples = signal(rate, channels) * 0.5
    samples[:, 1000:1010] = np.nan
    samples[:, 2000] = np.inf
    samples[:, 3000] = -np.inf
    samples[:, 4000:4100] = 3.0
    for kind in ("f32", "f64"):
        decoded = decode_audio(wav_of(samples, rate, kind)).samples
        assert np.isfinite(decoded).all()
        assert float(np.abs(decoded).max()) <= 1.0
        if rate == SAMPLE_RATE:
            assert np.all(decoded[1000:1010] == 0.0)
            assert decoded[2000] == 1.0 and decoded[3000] == -1.0 and np.all(decoded[4000:4100] == 1.0)


def test_wav_longer_than_the_limit_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    data = riff(FMT, chunk(b"data", bytes(2 * SAMPLE_RATE * 20)))  # 20 s of silence
    assert decode_audio(data, max_seconds=20).duration == 20.0

    def refuse(*args: object) -> None:
        raise AssertionError("decoded before refusing")

    monkeypatch.setattr(audio, "_pcm_samples", refuse)
    with pytest.raises(InvalidAudioError, match="longer than the maximum of 10 seconds"):
        decode_audio(data, max_seconds=10)
    with pytest.raises(InvalidAudioError, match="longer than the maximum"):  # resampled input too
        decode_audio(wav_of(signal(48_000, 2, seconds=2.0), 48_000), max_seconds=1.5)


def test_compressed_audio_longer_than_the_limit_is_refused_early(monkeypatch: pytest.MonkeyPatch) -> None:
    mp3 = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=300:sample_rate=16000",
         "-t", "120", "-c:a", "libmp3lame", "-b:a", "32k", "-f", "mp3", "-"], capture_output=True, check=True).stdout
    pushed: list[int] = []
    push = audio._FrameConverter.push

    def counting(self: audio._FrameConverter, frame: av.AudioFrame) -> list[np.ndarray]:
        pushed.append(frame.samples)
        return push(self, frame)

    monkeypatch.setattr(audio._FrameConverter, "push", counting)
    with pytest.raises(InvalidAudioError, match="longer than the maximum of 10 seconds"):
        decode_audio(mp3, max_seconds=10)
    assert sum(pushed) < 11 * SAMPLE_RATE  # stopped within a frame of the limit, not after 120 s


@pytest.mark.parametrize("channels", [9, 64, 128])
def test_wav_with_channels_swresample_cannot_downmix_is_invalid_as_before(channels: int) -> None:
    """Unnamed channel counts without a default layout (9, 11, 13, 15, 17 and more) are refused by FFmpeg."""
    data = riff(fmt_chunk("f32", channels, SAMPLE_RATE), chunk(b"data", pcm(signal(SAMPLE_RATE, channels, 0.1), "f32")))
    with pytest.raises(InvalidAudioError, match="could not be decoded"):
        decode_audio(data)
