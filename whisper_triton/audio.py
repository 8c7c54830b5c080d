"""Decoding of any container FFmpeg can read into 16 kHz mono float32 samples.

The bytes are sniffed by FFmpeg (through PyAV); file names and content types are never trusted.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np

from whisper_triton.errors import InvalidAudioError

SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # float32, mono, SAMPLE_RATE
    container: str

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def decode_audio(data: bytes, max_seconds: float | None = None) -> DecodedAudio:
    """Decodes the first audio stream of `data`, resampled to 16 kHz mono float32.

    Raises InvalidAudioError for empty input, input FFmpeg cannot read, input without an audio
    stream, and audio longer than `max_seconds`.
    """
    if not data:
        raise InvalidAudioError("The audio file is empty.")
    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidAudioError(
            "The file could not be decoded as audio or video: it is not a supported media format."
        ) from exc
    with container:
        if not container.streams.audio:
            raise InvalidAudioError("The file has no audio track.")
        stream = container.streams.audio[0]
        if stream.codec_context is None:  # an audio stream FFmpeg has no decoder for
            raise InvalidAudioError("The audio stream could not be decoded: its codec is not supported.")
        stream.codec_context.thread_type = "AUTO"
        resampler = _Resampler()
        max_samples = None if max_seconds is None else int(max_seconds * SAMPLE_RATE)
        chunks: list[np.ndarray] = []
        total = 0
        try:
            for frame in container.decode(stream):
                frame.pts = None  # let the resampler follow the samples, not broken timestamps
                for out in resampler.resample(frame):
                    total += _append(chunks, out)
                if max_samples is not None and total > max_samples:
                    raise InvalidAudioError(
                        f"The audio is longer than the maximum of {max_seconds:.0f} seconds."
                    )
            for out in resampler.flush():
                total += _append(chunks, out)
        except av.FFmpegError as exc:
            if total == 0:
                raise InvalidAudioError("The audio stream could not be decoded.") from exc
            # A truncated file: keep what decoded cleanly, as ffmpeg's command line does.
        fmt = container.format.name
    samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    # NaN/Inf in float PCM would poison the log-mel features of the whole window.
    samples = np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0)
    np.clip(samples, -1.0, 1.0, out=samples)
    return DecodedAudio(samples=samples.astype(np.float32, copy=False), container=fmt)


class _Resampler:
    """To 16 kHz mono float, set up again when the input's format, layout or rate changes mid-stream
    (as it may in MP3 and ADTS, or in a damaged file), which one AudioResampler refuses."""

    def __init__(self) -> None:
        self._resampler: av.AudioResampler | None = None
        self._input: tuple[str, str, int] | None = None

    def resample(self, frame: av.AudioFrame) -> list[av.AudioFrame]:
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        flushed = self.flush() if self._input is not None and key != self._input else []
        if self._resampler is None:
            self._resampler, self._input = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE), key
        return [*flushed, *self._resampler.resample(frame)]

    def flush(self) -> list[av.AudioFrame]:
        frames = self._resampler.resample(None) if self._resampler is not None else []
        self._resampler = self._input = None
        return list(frames)


def _append(chunks: list[np.ndarray], frame: av.AudioFrame) -> int:
    array = frame.to_ndarray().reshape(-1)
    chunks.append(array)
    return len(array)
