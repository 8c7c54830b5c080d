"""Live audio as clients send it, to 16 kHz float32 as it arrives: raw 16-bit PCM at any rate (OpenAI's
Realtime API sends 24 kHz), and G.711 µ-law and A-law (8 kHz telephone audio). No container, no header:
the bytes of each append continue those of the one before (a 16-bit sample may be split between two)."""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np

from whisper_triton.audio import SAMPLE_RATE
from whisper_triton.errors import InvalidRequestError
from whisper_triton.live_contract import OPENAI_NAMES

__all__ = ["ENCODINGS", "LiveDecoder", "LiveFormat", "alaw_to_linear", "ulaw_to_linear"]

ENCODINGS = ("pcm16", "pcmu", "pcma")
G711_RATE = 8000
MIN_RATE, MAX_RATE = 8000, 48000


@dataclass(frozen=True)
class LiveFormat:
    encoding: str = "pcm16"  # one of ENCODINGS
    rate: int = 24_000  # samples per second (G.711: 8000)

    @classmethod
    def of(cls, name: str, rate: int | None = None) -> LiveFormat:
        """The format a client names (ours or OpenAI's); InvalidRequestError for one we cannot read."""
        encoding = OPENAI_NAMES.get(name, name)
        if encoding not in ENCODINGS:
            raise InvalidRequestError(f"Unsupported audio format {name[:40]!r}: use audio/pcm (16-bit, 24 kHz), "
                                      "audio/pcmu or audio/pcma.", param="format", code="invalid_value")
        if encoding != "pcm16":
            return cls(encoding, G711_RATE)
        rate = 24_000 if rate is None else rate
        if not MIN_RATE <= rate <= MAX_RATE:
            raise InvalidRequestError(f"Unsupported sample rate {rate}: {MIN_RATE} to {MAX_RATE} Hz.",
                                      param="rate", code="invalid_value")
        return cls(encoding, rate)

    @property
    def bytes_per_second(self) -> int:
        return self.rate * (2 if self.encoding == "pcm16" else 1)


def ulaw_to_linear(data: bytes | np.ndarray) -> np.ndarray:
    """G.711 µ-law bytes as 16-bit linear samples (int16), as ITU-T G.711 and Python's audioop decode them."""
    return _ULAW[np.frombuffer(data, dtype=np.uint8)]


def alaw_to_linear(data: bytes | np.ndarray) -> np.ndarray:
    """G.711 A-law bytes as 16-bit linear samples (int16)."""
    return _ALAW[np.frombuffer(data, dtype=np.uint8)]


def _ulaw_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent, mantissa = (u >> 4) & 0x07, u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    exponent, mantissa = (a >> 4) & 0x07, a & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(a & 0x80, magnitude, -magnitude).astype(np.int16)


_ULAW, _ALAW = _ulaw_table(), _alaw_table()


class LiveDecoder:
    """One live stream's bytes to 16 kHz float32 samples, append after append (the resampler keeps its state)."""

    def __init__(self, fmt: LiveFormat) -> None:
        self.format = fmt
        self._odd = b""  # a 16-bit sample's first byte, waiting for its second
        self._resampler = (None if fmt.rate == SAMPLE_RATE
                           else av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE))
        self._pts = 0
        self.samples_in = 0  # samples received, at the stream's own rate

    def push(self, data: bytes) -> np.ndarray:
        if self.format.encoding == "pcm16":
            data, self._odd = self._odd + data, b""
            if len(data) % 2:
                data, self._odd = data[:-1], data[-1:]
            linear = np.frombuffer(data, dtype="<i2")
        else:
            linear = (ulaw_to_linear if self.format.encoding == "pcmu" else alaw_to_linear)(data)
        self.samples_in += len(linear)
        if not len(linear):
            return np.zeros(0, dtype=np.float32)
        if self._resampler is None:
            return linear.astype(np.float32) / 32768.0
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(linear, dtype=np.int16)[None, :], format="s16",
                                           layout="mono")
        frame.sample_rate, frame.pts = self.format.rate, self._pts
        self._pts += len(linear)
        return self._join(self._resampler.resample(frame))

    def flush(self) -> np.ndarray:
        """What the resampler still holds (the end of the stream)."""
        return self._join(self._resampler.resample(None)) if self._resampler is not None else np.zeros(0, np.float32)

    @staticmethod
    def _join(frames: list[av.AudioFrame]) -> np.ndarray:
        if not frames:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32, copy=False)
