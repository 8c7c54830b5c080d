"""The audio every system transcribes, with reference texts, and the phases it is sent in.

Real human speech (`harness.speech`): the "report" corpus, Debian's Asterisk prompts (one studio speaker,
25 minutes), joined in a seeded random order with natural pauses over a noise floor. No setting of ours
was tuned on it (the "tune" corpus is for that). Long files loop over the corpus in new orders.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from harness.assets import Recording
from harness.speech import long_speech, speech_clip_set

CORPUS = "report"
LONG_MINUTES = 10.0
QUICK_LONG_MINUTES = 1.0
# The load phase: clips of 10-60 s (their lengths are spread over that range), sent by 8 clients at once.
LOAD_CLIP_SECONDS = (60, 55, 50, 45, 40, 35, 30, 25, 20, 15, 10, 58, 42, 33, 27, 12)
QUICK_LOAD_CLIP_SECONDS = (40, 20, 12, 30)
LOAD_CLIENTS = 8
PIPELINE_MINUTES = (60.0, 239.5)  # one hour and (just under WHISPER_MAX_AUDIO_SECONDS) four hours
QUICK_PIPELINE_MINUTES = (10.0,)


class Clip(msgspec.Struct, frozen=True):
    name: str
    path: str
    duration: float  # seconds
    reference: str


class Phase(msgspec.Struct, frozen=True):
    """One table row per system: `clips` sent by `concurrency` clients pulling from one queue."""

    name: str  # long | load | hours
    concurrency: int
    clips: list[Clip]

    @property
    def audio_seconds(self) -> float:
        return sum(clip.duration for clip in self.clips)


class Workload(msgspec.Struct, frozen=True):
    long: Clip
    load: list[Clip]
    hours: list[Clip]  # for the pipeline harness (and --scaling)
    warm: Clip  # an untimed first request for every system

    def long_phase(self, repeats: int = 1) -> Phase:
        """The long file `repeats` times in a row: the median of the runs is less at the mercy of a noisy
        machine than one run."""
        return Phase("long", 1, [self.long] * repeats)

    @property
    def load_phase(self) -> Phase:
        return Phase("load", LOAD_CLIENTS, sorted(self.load, key=lambda clip: -clip.duration))


def _clip(name: str, recording: Recording) -> Clip:
    return Clip(name, str(recording.path), recording.duration, recording.text)


def build_workload(quick: bool = False, hours: Sequence[float] | None = None) -> Workload:
    """Generates (or reuses, cached with the test assets) the audio of every phase."""
    long = _clip("long", long_speech(CORPUS, QUICK_LONG_MINUTES if quick else LONG_MINUTES, seed=11))
    durations = QUICK_LOAD_CLIP_SECONDS if quick else LOAD_CLIP_SECONDS
    load = [_clip(f"clip{n + 1:02d}", r) for n, r in enumerate(speech_clip_set(CORPUS, durations, seed=12))]
    minutes = hours if hours is not None else (QUICK_PIPELINE_MINUTES if quick else PIPELINE_MINUTES)
    long_files = [_clip(f"{m:g}min", long_speech(CORPUS, m, seed=13)) for m in minutes]
    (warm,) = speech_clip_set(CORPUS, (8,), seed=14)
    return Workload(long=long, load=load, hours=long_files, warm=_clip("warm", warm))


def describe(workload: Workload) -> str:
    load = workload.load_phase
    return "\n".join([
        f"long:  one {workload.long.duration / 60:.1f}-minute recording of real read speech (Asterisk prompts, "
        "one speaker, joined with 0.2-1 s pauses over a -60 dBFS noise floor), 1 client",
        f"load:  {len(load.clips)} recordings of {min(c.duration for c in load.clips):.0f}-"
        f"{max(c.duration for c in load.clips):.0f} s ({load.audio_seconds:.0f} s in all, same speech), "
        f"longest first, pulled by {load.concurrency} clients from one queue",
        "Each system gets one untimed request first (warm-up); RTFx = audio seconds / wall seconds of the phase; "
        "latency from submission to the full transcript; WER after Whisper's English normaliser.",
    ])
