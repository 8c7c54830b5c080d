"""The audio every system transcribes, with reference texts, and the phases it is sent in.

The long recording is tests.assets.long_recording (the JFK clip alternating with flite sentences,
silences between them); the clip set is cut from it at the silences between pieces, so every clip
has an exact reference, plus the JFK clip itself. Clips are cached next to the test assets.
"""

from __future__ import annotations

import wave
from collections.abc import Sequence
from pathlib import Path

import msgspec
import numpy as np

from tests import assets

# Clip lengths cut from the 10-minute recording (seconds, approximate: cuts fall in silences).
FULL_CLIP_SECONDS = (45, 40, 35, 30, 30, 25, 25, 20, 20, 15, 15)
QUICK_CLIP_SECONDS = (25, 15)
FULL_JFK_REPEATS = 5
QUICK_JFK_REPEATS = 2


class Clip(msgspec.Struct, frozen=True):
    name: str
    path: str
    duration: float  # seconds
    reference: str


class Phase(msgspec.Struct, frozen=True):
    """One table row per system: `clips` sent by `concurrency` clients pulling from one queue."""

    name: str  # long | jfk | clips
    concurrency: int
    clips: list[Clip]

    @property
    def audio_seconds(self) -> float:
        return sum(clip.duration for clip in self.clips)


class Workload(msgspec.Struct, frozen=True):
    long: Clip
    jfk: Clip
    clips: list[Clip]
    phases: list[Phase]


def plan_clips(pieces: Sequence[assets.Piece], duration: float, targets: Sequence[float]) -> list[assets.Piece]:
    """Consecutive cuts of about `targets` seconds, each cut in the middle of a silence.

    Returns one Piece per cut (start, end in the recording; text of the whole pieces inside). A cut
    takes at least one piece, then more while that brings it closer to its target; cuts stop when
    the recording runs out.
    """
    cuts: list[assets.Piece] = []
    index = 0
    start = 0.0
    for target in targets:
        if index >= len(pieces):
            break
        taken = [pieces[index]]
        index += 1
        while index < len(pieces) and (abs(_cut_after(pieces, index, duration) - start - target)
                                       < abs(_cut_after(pieces, index - 1, duration) - start - target)):
            taken.append(pieces[index])
            index += 1
        end = _cut_after(pieces, index - 1, duration)
        cuts.append(assets.Piece(start, end, " ".join(piece.text for piece in taken)))
        start = end
    return cuts


def _cut_after(pieces: Sequence[assets.Piece], index: int, duration: float) -> float:
    """The middle of the silence after pieces[index] (the end of the recording after the last)."""
    if index + 1 >= len(pieces):
        return duration
    return (pieces[index].end + pieces[index + 1].start) / 2


def _read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as inp:
        if (inp.getframerate(), inp.getnchannels(), inp.getsampwidth()) != (assets.SAMPLE_RATE, 1, 2):
            raise ValueError(f"{path} is not 16 kHz mono 16-bit WAV")
        return np.frombuffer(inp.readframes(inp.getnframes()), dtype="<i2")


def _cut_clips(recording: assets.Recording, targets: Sequence[float]) -> list[Clip]:
    samples = _read_wav(recording.path)
    clips = []
    for number, cut in enumerate(plan_clips(recording.pieces, recording.duration, targets)):
        first, last = round(cut.start * assets.SAMPLE_RATE), round(cut.end * assets.SAMPLE_RATE)
        name = f"bench_{recording.path.stem}_{first}_{last}.wav"
        path = assets.assets_dir() / name
        if not path.exists():
            tmp = path.with_name(f".tmp-{path.name}")
            tmp.write_bytes(assets.wav_bytes(samples[first:last]))
            tmp.replace(path)
        clips.append(Clip(f"clip{number + 1:02d}", str(path), (last - first) / assets.SAMPLE_RATE, cut.text))
    return clips


def build_workload(quick: bool, concurrency: Sequence[int]) -> Workload:
    """Generates (or reuses) the audio and lays out the phases.

    long: the whole recording once, one client (the "single long file" row).
    jfk: the 11 s JFK clip a few times in a row, one client (latency of a short request).
    clips: at each concurrency N, the same clip set (longest first, so the tail is short) sent by
    N clients; every system transcribes exactly the same audio in every row.
    """
    recording = assets.long_recording(1.0 if quick else 10.0)
    long = Clip("long", str(recording.path), recording.duration, recording.text)
    jfk = Clip("jfk", str(assets.jfk_wav()), assets.JFK_DURATION, assets.JFK_TEXT)
    clips = _cut_clips(recording, QUICK_CLIP_SECONDS if quick else FULL_CLIP_SECONDS)
    clip_set = sorted([*clips, jfk], key=lambda clip: -clip.duration)
    repeats = QUICK_JFK_REPEATS if quick else FULL_JFK_REPEATS
    phases = [Phase("long", 1, [long]), Phase("jfk", 1, [jfk] * repeats)]
    phases += [Phase("clips", n, clip_set) for n in concurrency]
    return Workload(long=long, jfk=jfk, clips=clips, phases=phases)


def describe(workload: Workload) -> str:
    clip_set = next((phase for phase in workload.phases if phase.name == "clips"), None)
    jfk_runs = next(len(phase.clips) for phase in workload.phases if phase.name == "jfk")
    lines = [
        f"long:  one {workload.long.duration / 60:.1f}-minute recording (JFK alternating with flite "
        "sentences), 1 client",
        f"jfk:   the {workload.jfk.duration:.0f} s JFK clip {jfk_runs} times in a row, 1 client",
    ]
    if clip_set is not None:
        lines.append(
            f"clips: {len(clip_set.clips)} clips ({min(c.duration for c in clip_set.clips):.0f}-"
            f"{max(c.duration for c in clip_set.clips):.0f} s, {clip_set.audio_seconds:.0f} s in all; cut from the "
            "recording at silences, plus JFK), longest first, pulled by N clients from one queue"
        )
    lines.append("Each system gets one untimed JFK request first (warm-up); RTFx = audio seconds / wall seconds "
                 "of the whole phase; latency from submission to the full transcript.")
    return "\n".join(lines)
