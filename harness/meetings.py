"""Real meeting audio with reference speaker turns: the AMI excerpts in pyannote.audio's test data.

The PyPI sdist of pyannote.audio 4.0.7 ships fourteen 30 s excerpts of AMI meetings (headset mix, 1-4
speakers, much overlap in some) under ``tests/data`` with their reference turns (``debug.*.rttm``),
split as pyannote's "Debug" protocol splits them: ten ``trn`` excerpts, which tune our diarization, and
``dev``/``tst`` (four excerpts) which report it and are never tuned on. Speakers carry AMI's global ids
(``MEE071``...), and several appear in two excerpts: ``dev00``/``dev01`` and ``tst00``/``tst01`` share all
their speakers, which tests recognising an enrolled voice in another recording.

The sdist is downloaded once (checked against its SHA-256) into ``assets_dir()/speech/``.
"""

from __future__ import annotations

import functools
import tarfile
from dataclasses import dataclass

import numpy as np

from harness.assets import SAMPLE_RATE, assets_dir
from harness.speech import _decode, _Download, _download
from whisper_triton.turns import Turn

TUNE = ("trn00", "trn01", "trn02", "trn03", "trn04", "trn05", "trn06", "trn07", "trn08", "trn09")
REPORT = ("dev00", "dev01", "tst00", "tst01")
SPLITS = {"tune": TUNE, "report": REPORT}

_PYANNOTE_SDIST = _Download(
    "pyannote_audio-4.0.7.tar.gz",
    "https://files.pythonhosted.org/packages/6d/d7/03b1d00d431c7be1d98635fefb99c2da64d9b84b4b8a06d5302666a96c88/"
    "pyannote_audio-4.0.7.tar.gz",
    "3a903dfb5ca711d134cc2522561c9158b186836f5d62e8a57c46c6648e8a8229",
)
_DATA = "pyannote_audio-4.0.7/tests/data"
_FILES = {"trn00": "trñ00.wav"}  # the sdist spells one file name with an ñ (a test of odd names)


@dataclass(frozen=True)
class Meeting:
    name: str  # "trn00", "dev01", ...
    samples: np.ndarray  # float32 mono 16 kHz
    turns: list[Turn]  # reference, speakers by AMI id; turns of different speakers overlap

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    @property
    def speakers(self) -> list[str]:
        return sorted({turn.speaker for turn in self.turns})

    def speech_of(self, speaker: str, alone: bool = True) -> np.ndarray:
        """The samples where `speaker` speaks (with `alone`: and nobody else), concatenated."""
        mask = np.zeros(len(self.samples), dtype=bool)
        for turn in self.turns:
            if turn.speaker == speaker:
                mask[round(turn.start * SAMPLE_RATE): round(turn.end * SAMPLE_RATE)] = True
        if alone:
            for turn in self.turns:
                if turn.speaker != speaker:
                    mask[round(turn.start * SAMPLE_RATE): round(turn.end * SAMPLE_RATE)] = False
        return self.samples[mask]


def meetings(split: str) -> list[Meeting]:
    """The excerpts of a split ("tune" or "report"), in name order."""
    return [_all(str(assets_dir()))[name] for name in SPLITS[split]]


@functools.cache
def _all(_assets: str) -> dict[str, Meeting]:
    members: dict[str, bytes] = {}
    with tarfile.open(_download(_PYANNOTE_SDIST), "r|gz") as tar:
        for member in tar:
            if member.name.startswith(f"{_DATA}/") and (file := tar.extractfile(member)) is not None:
                members[member.name.rsplit("/", 1)[1]] = file.read()
    turns: dict[str, list[Turn]] = {}
    for name, data in members.items():
        if name.startswith("debug.") and name.endswith(".rttm"):
            for line in data.decode().splitlines():
                fields = line.split()
                if fields and fields[0] == "SPEAKER":
                    start, length = float(fields[3]), float(fields[4])
                    turns.setdefault(fields[1], []).append(Turn(start, round(start + length, 3), fields[7]))
    return {
        name: Meeting(name, _decode(members[_FILES.get(name, f"{name}.wav")]), sorted(turns[name], key=_start))
        for name in (*TUNE, *REPORT)
    }


def _start(turn: Turn) -> tuple[float, float]:
    return turn.start, turn.end
