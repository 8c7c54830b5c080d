"""Decoding of any container FFmpeg can read into 16 kHz mono float32 samples.

The bytes are sniffed (by their magic bytes here, else by FFmpeg through PyAV); file names and content
types are never trusted. Plain PCM WAV, the most common upload, is read with numpy: through PyAV, the
per-packet and per-frame work cost some fifty times what the conversion needs. Everything else goes
through PyAV, with decoded frames gathered in a FIFO so that conversion and resampling run once per
block, not once per frame. Both paths downmix and resample with FFmpeg's own rules (swresample's
coefficients and filters), so a file decodes to the same samples whichever path reads it, and to what
`ffmpeg -ac 1 -ar 16000` gives.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from whisper_triton.errors import InvalidAudioError

SAMPLE_RATE = 16_000
# Input samples converted per call: large enough that per-call overhead vanishes, small enough to keep
# the temporaries in cache and the memory bounded.
_BLOCK = 1 << 17
# swresample's stereo-to-mono matrix (each channel times sqrt(1/2), not the mean), as ffmpeg -ac 1.
_GAIN = np.float32(np.sqrt(0.5))


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
    max_samples = None if max_seconds is None else int(max_seconds * SAMPLE_RATE)
    pcm = _parse_wav(data)
    if pcm is not None:
        if max_samples is not None and pcm.frames * SAMPLE_RATE > max_samples * pcm.rate:
            raise _too_long(max_seconds)
        if pcm.frames == 0 and pcm.available:  # less than one sample: FFmpeg's decoder refuses it
            raise InvalidAudioError("The audio stream could not be decoded.")
        try:
            return DecodedAudio(samples=_pcm_samples(data, pcm), container="wav")
        except av.FFmpegError:
            pass  # a layout swresample refuses (such as 9 unnamed channels): FFmpeg's path has its say
    return _decode_with_ffmpeg(data, max_seconds, max_samples)


def _too_long(max_seconds: float | None) -> InvalidAudioError:
    return InvalidAudioError(f"The audio is longer than the maximum of {max_seconds or 0:.0f} seconds.")


# --------------------------------------------------------------------------------------------------
# PCM WAV


@dataclass(frozen=True)
class _Pcm:
    """Where the samples of a plain PCM WAV lie and how to read them."""

    dtype: str  # numpy dtype of one sample; "<i3" stands for packed 24-bit
    channels: int
    rate: int
    layout: str  # as FFmpeg names it, for swresample's downmix
    offset: int
    frames: int  # whole sample frames present
    available: int  # bytes of sample data present


# The GUID of KSDATAFORMAT_SUBTYPE_PCM / _IEEE_FLOAT after its leading 16-bit format tag.
_SUBTYPE_TAIL = bytes.fromhex("000000001000800000aa00389b71")
_DTYPES = {(1, 8): "u1", (1, 16): "<i2", (1, 24): "<i3", (1, 32): "<i4", (3, 32): "<f4", (3, 64): "<f8"}
# Chunks FFmpeg's WAV demuxer interprets (video in SMV0, other codecs, metadata it may refuse): left to it.
_FFMPEG_CHUNKS = frozenset({b"bext", b"SMV0", b"XMA2", b"ID3 ", b"id3 "})
# IEC 61937 (S/PDIF) and DTS sync words: FFmpeg decodes such "PCM" as the compressed stream it carries.
_BITSTREAM_SYNCS = (b"\x72\xf8\x1f\x4e", b"\xff\x1f\x00\xe8", b"\xfe\x7f\x01\x80")
_MAX_CHUNKS = 1000


def _parse_wav(data: bytes) -> _Pcm | None:
    """The layout of a RIFF/RF64 WAVE file of integer or float PCM, or None to leave it to FFmpeg.

    Follows FFmpeg's WAV demuxer where files bend the rules (chunks padded to even offsets, a data
    size of 0 or 0xFFFFFFFF meaning "to the end", a size past the end meaning a truncated file).
    """
    if not isinstance(data, bytes) or len(data) <= 32:  # other buffers (memoryview, bytearray): FFmpeg reads them
        return None
    if data[8:12] != b"WAVE" or data[:4] not in (b"RIFF", b"RF64"):
        return None
    chunks = _chunks(data)
    if chunks is None:
        return None
    fmt, (offset, size) = chunks
    end = min(len(data), offset + size)
    if end < len(data) and data.find(b"data", end) >= 0:
        return None  # a second data chunk: FFmpeg's reading of those is its own
    if _starts_with_bitstream(data, offset, end):
        return None
    return _pcm_format(fmt, offset, end - offset)


def _starts_with_bitstream(data: bytes, offset: int, end: int) -> bool:
    """Whether the samples are an S/PDIF or DTS stream (FFmpeg decodes those): such a stream opens with
    its sync word, after zeros at most. A sync word's bytes further in are a chance in ordinary audio
    (about one in a few seconds of speech), which must not send a file to the slow path."""
    start = offset
    while start < min(end, offset + 65_536) and data[start] == 0:
        start += 1
    start -= start % 2  # a sync word starts on a sample boundary
    return any(data.startswith(sync, start) for sync in _BITSTREAM_SYNCS)


def _chunks(data: bytes) -> tuple[bytes, tuple[int, int]] | None:
    """The first fmt chunk's body and the data chunk's (offset, size); None when either is missing."""
    pos, fmt, found = 12, None, None
    rf64_size = None
    if data[:4] == b"RF64":
        if data[12:16] != b"ds64" or len(data) < 36 or struct.unpack_from("<I", data, 16)[0] < 24:
            return None
        rf64_size = struct.unpack_from("<Q", data, 28)[0]
    for _ in range(_MAX_CHUNKS):
        if pos + 8 > len(data):
            break
        tag, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if tag in _FFMPEG_CHUNKS or (tag == b"LIST" and size < 4):
            return None
        if tag == b"fmt " and fmt is None:
            if body + size > len(data):
                return None
            fmt = data[body : body + size]
        elif tag == b"data":
            if found is not None:
                return None
            if rf64_size is not None:
                size = rf64_size
            elif size in (0, 0xFFFFFFFF):  # streamed: the samples run to the end of the file
                found = (body, len(data) - body)
                break
            found = (body, size)
        pos = body + size + ((body + size) & 1)
        if pos >= len(data):
            break
    if fmt is None or found is None:
        return None
    return fmt, found


def _pcm_format(fmt: bytes, offset: int, available: int) -> _Pcm | None:
    if len(fmt) < 16:
        return None
    tag, channels, rate, _, block_align, bits = struct.unpack_from("<HHIIHH", fmt)
    extra = struct.unpack_from("<H", fmt, 16)[0] if len(fmt) >= 18 else 0  # cbSize
    layout = f"{channels} channels"
    if tag == 0xFFFE:  # WAVE_FORMAT_EXTENSIBLE: the real tag is in the subformat GUID
        if len(fmt) < 40 or extra < 22 or fmt[26:40] != _SUBTYPE_TAIL:
            return None
        valid_bits, mask = struct.unpack_from("<HI", fmt, 18)
        tag = struct.unpack_from("<H", fmt, 24)[0]
        if valid_bits not in (0, bits) or (mask and mask.bit_count() != channels):
            return None
        layout = av.AudioLayout(f"0x{mask:x}").name if mask else layout
    elif extra:
        return None  # extra format bytes on plain PCM: FFmpeg may read them as another codec (F16)
    dtype = _DTYPES.get((tag, bits))
    if dtype is None or not 1 <= channels <= 64 or not 1_000 <= rate <= 768_000:
        return None
    if block_align != channels * bits // 8:
        return None
    return _Pcm(dtype, channels, rate, layout, offset, available // block_align, available)


def _pcm_samples(data: bytes, pcm: _Pcm) -> np.ndarray:
    """The samples as 16 kHz mono float32."""
    frame_bytes = int(pcm.dtype[-1]) * pcm.channels
    raw = memoryview(data)[pcm.offset :][: pcm.frames * frame_bytes]
    if pcm.channels == 1 and pcm.rate == SAMPLE_RATE and pcm.dtype[1] != "f":
        return _to_float(raw, pcm.dtype)  # the common case: nothing to mix, nothing out of range
    mixer = _Mixer(pcm.layout, pcm.rate)
    blocks: list[np.ndarray] = []
    for start in range(0, pcm.frames, _BLOCK):
        count = min(_BLOCK, pcm.frames - start)
        block = raw[start * frame_bytes : (start + count) * frame_bytes]
        if not mixer.in_numpy:
            blocks += mixer.resample_interleaved(_to_float(block, pcm.dtype))
        elif pcm.dtype in _INT_SCALES:  # mixed as integers, scaled once
            blocks += mixer.mix(_channels(np.frombuffer(block, pcm.dtype), pcm.channels), _INT_SCALES[pcm.dtype])
        else:
            blocks += mixer.mix(_channels(_to_float(block, pcm.dtype), pcm.channels), 1.0)
    return _join([*blocks, *mixer.flush()])


_INT_SCALES = {"<i2": 2.0**-15, "<i4": 2.0**-31}


def _channels(interleaved: np.ndarray, channels: int) -> list[np.ndarray]:
    return [interleaved[channel::channels] for channel in range(channels)]


def _to_float(raw: memoryview, dtype: str) -> np.ndarray:
    """Samples scaled to [-1, 1] as FFmpeg's PCM decoders and swresample scale them."""
    if dtype == "<i3":  # no numpy type: widen to the top three bytes of an int32, as FFmpeg does
        wide = np.zeros((len(raw) // 3, 4), dtype=np.uint8)
        wide[:, 1:] = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        return np.multiply(wide.view("<i4").reshape(-1), np.float32(2.0**-31), dtype=np.float32)
    samples = np.frombuffer(raw, dtype=dtype)
    if dtype == "u1":
        return np.subtract(samples, 128, dtype=np.float32) * np.float32(1 / 128)
    if dtype[1] == "f":  # mapped before resampling, which would spread a NaN over its neighbours
        with np.errstate(over="ignore"):
            return np.nan_to_num(samples.astype(np.float32), copy=False, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.multiply(samples, np.float32(2.0 ** (1 - 8 * samples.itemsize)), dtype=np.float32)


# --------------------------------------------------------------------------------------------------
# Everything else: FFmpeg through PyAV


def _decode_with_ffmpeg(data: bytes, max_seconds: float | None, max_samples: int | None) -> DecodedAudio:
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
        # Decoder threads are left off: frame threads cost FLAC a third more CPU time for its latency.
        blocks: list[np.ndarray] = []
        converter: _FrameConverter | None = None
        seconds = 0.0  # decoded by earlier converters, before resampling
        try:
            for frame in container.decode(stream):
                if converter is None or not converter.accepts(frame):
                    if converter is not None:
                        blocks += converter.flush()
                        seconds += converter.seconds
                    converter = _FrameConverter(frame)
                blocks += converter.push(frame)
                # Checked on what was decoded, not on what was resampled: long input is refused early.
                if max_samples is not None and (seconds + converter.seconds) * SAMPLE_RATE > max_samples:
                    raise _too_long(max_seconds)
            blocks += converter.flush() if converter is not None else []
        except av.FFmpegError as exc:  # from the decoder, or from swresample refusing the decoded format
            blocks += _salvage(converter)
            if not any(len(block) for block in blocks):
                raise InvalidAudioError("The audio stream could not be decoded.") from exc
            # A truncated file: keep what decoded cleanly, as ffmpeg's command line does.
        fmt = container.format.name
    return DecodedAudio(samples=_join(blocks), container=fmt)


def _salvage(converter: _FrameConverter | None) -> list[np.ndarray]:
    """What the converter still holds, after an error; nothing if converting it fails too."""
    try:
        return converter.flush() if converter is not None else []
    except av.FFmpegError:
        return []


class _FrameConverter:
    """Gathers decoded frames of one format, layout and rate in a FIFO and converts them a block at a
    time. A new one is set up when these change mid-stream (as they may in MP3 and ADTS, or in a
    damaged file)."""

    def __init__(self, frame: av.AudioFrame) -> None:
        self._key = _frame_key(frame)
        self._fifo = av.AudioFifo()
        self._mixer = _Mixer(frame.layout.name, frame.sample_rate)
        # A frame without channels or rate holds no audio (and would not fit in a FIFO).
        self._usable = frame.sample_rate > 0 and frame.layout.nb_channels > 0

    @property
    def seconds(self) -> float:
        return self._fifo.samples_written / self._key[2] if self._usable else 0.0

    def accepts(self, frame: av.AudioFrame) -> bool:
        return _frame_key(frame) == self._key

    def push(self, frame: av.AudioFrame) -> list[np.ndarray]:
        if not self._usable:
            return []
        frame.pts = None  # let the FIFO follow the samples, not broken timestamps
        self._fifo.write(frame)
        return self._drain() if self._fifo.samples >= _BLOCK else []

    def flush(self) -> list[np.ndarray]:
        return [*self._drain(), *self._mixer.flush()]

    def _drain(self) -> list[np.ndarray]:
        frame = self._fifo.read()
        if frame is None:
            return []
        sample_format = _FRAME_FORMATS.get(frame.format.name)
        if sample_format is None or not self._mixer.in_numpy:
            return self._mixer.resample(frame)
        dtype, scale = sample_format
        if frame.format.is_planar:
            channels = [np.frombuffer(memoryview(plane), dtype, count=frame.samples) for plane in frame.planes]
        else:
            count = frame.samples * len(frame.layout.channels)
            packed = np.frombuffer(memoryview(frame.planes[0]), dtype, count=count)
            channels = _channels(packed, len(frame.layout.channels))
        return self._mixer.mix(channels, scale)


def _frame_key(frame: av.AudioFrame) -> tuple[str, str, int]:
    return frame.format.name, frame.layout.name, frame.sample_rate


# Decoded sample formats numpy mixes directly (most decoders give one of these); others go to swresample.
_FRAME_FORMATS: dict[str, tuple[type[np.number[Any]], float]] = {
    "flt": (np.float32, 1.0), "fltp": (np.float32, 1.0),
    "s16": (np.int16, 2.0**-15), "s16p": (np.int16, 2.0**-15),
    "s32": (np.int32, 2.0**-31), "s32p": (np.int32, 2.0**-31),
}


# --------------------------------------------------------------------------------------------------
# Conversion to 16 kHz mono

# Layouts numpy downmixes with swresample's coefficients; FFmpeg leaves a WAV's channels unnamed.
_NUMPY_LAYOUTS = frozenset({"mono", "1 channels", "stereo", "2 channels"})


class _Mixer:
    """Downmix and resampling of one input layout and rate to 16 kHz mono float32, block by block.

    Mono and stereo are downmixed in numpy with swresample's coefficients (swresample itself took
    longer for the downmix of stereo than for the resampling); other layouts, and every change of
    rate, go through swresample, once per block.
    """

    def __init__(self, layout: str, rate: int) -> None:
        self._layout = layout
        self._rate = rate
        self._resampler: av.AudioResampler | None = None
        self.in_numpy = layout in _NUMPY_LAYOUTS

    def mix(self, channels: list[np.ndarray], scale: float) -> list[np.ndarray]:
        """One or two channels (any numeric dtype) times `scale`: float in [-1, 1] but for NaN/Inf."""
        with np.errstate(over="ignore", invalid="ignore"):  # NaN/Inf are mapped at the end
            if len(channels) == 1:
                mono = np.multiply(channels[0], np.float32(scale), dtype=np.float32)
            else:
                mono = np.add(channels[0], channels[1], dtype=np.float32)
                mono *= np.float32(scale) * _GAIN
        if self._rate == SAMPLE_RATE:
            return [mono]
        return self.resample(av.AudioFrame.from_ndarray(mono.reshape(1, -1), format="flt", layout="mono"))

    def resample_interleaved(self, interleaved: np.ndarray) -> list[np.ndarray]:
        """Float32 samples, channels interleaved, of this mixer's layout."""
        return self.resample(av.AudioFrame.from_ndarray(interleaved.reshape(1, -1), format="flt", layout=self._layout))

    def resample(self, frame: av.AudioFrame) -> list[np.ndarray]:
        """Through swresample; all frames given to one mixer must share format and layout."""
        frame.sample_rate = self._rate
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        return [out.to_ndarray().reshape(-1) for out in self._resampler.resample(frame)]

    def flush(self) -> list[np.ndarray]:
        if self._resampler is None:
            return []
        return [out.to_ndarray().reshape(-1) for out in self._resampler.resample(None)]


def _join(blocks: list[np.ndarray]) -> np.ndarray:
    """One float32 array, with NaN/Inf mapped and samples clipped to [-1, 1]: NaN/Inf in float PCM
    would poison the log-mel features of the whole window."""
    samples = np.concatenate(blocks, dtype=np.float32) if blocks else np.zeros(0, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        finite = np.isfinite(samples.sum())  # a cheap test first: finite samples have a finite sum
    if not finite:
        np.nan_to_num(samples, copy=False, nan=0.0, posinf=1.0, neginf=-1.0)
    np.clip(samples, -1.0, 1.0, out=samples)
    return samples
