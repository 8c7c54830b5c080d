"""Diarization error rate and CPU cost of the embedded diarizer on audio with known speaker turns.

    python -m bench.der [--threads N]

Recordings: the two-speaker phone call shipped in the pyannote.audio wheel (reference RTTM included), and
dialogues synthesised with Debian's flite voices, whose turns are known exactly. Each is diarized with and
without the true number of speakers. DER is reported with a 0.25 s collar and overlapped speech skipped
(the usual "fair" setting) and strictly (no collar, overlap scored).
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whisper_triton.audio import SAMPLE_RATE, decode_audio
from whisper_triton.diarization import Diarizer, Turn

SENTENCES = (
    "Good morning, did you have a chance to look at the budget for next year?",
    "Yes, I read it last night and I think the travel costs are far too high.",
    "We could hold more of the meetings online and save a lot of money.",
    "That works for the small meetings, but customers like to see us in person.",
    "Then let us keep the customer visits and cut the internal trips instead.",
    "I agree, and we should also ask the suppliers for better prices.",
    "The printer on the second floor has been broken for a week now.",
    "I called the repair service on Monday and they promised to come today.",
    "While we wait, the printer in the library still works fine.",
    "Did anyone book the room for the training session on Thursday?",
    "I did, the large room on the ground floor is ours from nine until noon.",
    "Perfect, I will send the invitation to the whole team this afternoon.",
    "Please remind everyone to bring their laptops and the new handbook.",
    "The coffee machine in the kitchen makes a strange noise again.",
    "It always does that in the morning, it stops after the first cup.",
    "Let us meet again next week to see how far we got with the plan.",
)
TWO_VOICES = ("slt", "awb")
THREE_VOICES = ("slt", "rms", "awb")
FOUR_VOICES = ("slt", "rms", "awb", "kal")
_TRIM_THRESHOLD = 0.02  # frame RMS counted as sound when cutting flite's leading and trailing silence


@dataclass(frozen=True)
class Recording:
    name: str
    samples: np.ndarray  # float32, 16 kHz mono
    turns: list[Turn]  # reference

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    @property
    def speakers(self) -> int:
        return len({turn.speaker for turn in self.turns})


def flite(voice: str, text: str) -> np.ndarray:
    """`text` spoken by a flite voice, 16 kHz float32, leading and trailing silence cut."""
    with tempfile.TemporaryDirectory(prefix="flite-") as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True, capture_output=True)
        samples = decode_audio(path.read_bytes()).samples
    return _trim(samples)


def flite_dialogue(voices: Sequence[str], lines: int, seed: int = 7, name: str | None = None) -> Recording:
    """`lines` sentences in turn by `voices` (round robin, then shuffled speakers) with 0.3-1.2 s pauses."""
    rng = random.Random(seed)
    order = [voices[i % len(voices)] for i in range(lines)]
    rng.shuffle(order)
    parts = [np.zeros(SAMPLE_RATE // 2, dtype=np.float32)]
    offset = len(parts[0])
    turns = []
    for index, voice in enumerate(order):
        speech = flite(voice, SENTENCES[index % len(SENTENCES)])
        turns.append(Turn(offset / SAMPLE_RATE, (offset + len(speech)) / SAMPLE_RATE, voice))
        pause = np.zeros(round(rng.uniform(0.3, 1.2) * SAMPLE_RATE), dtype=np.float32)
        parts += [speech, pause]
        offset += len(speech) + len(pause)
    return Recording(name or f"flite, {len(voices)} voices", np.concatenate(parts), turns)


def sample_call() -> Recording:
    """The 30 s two-speaker call in the pyannote.audio wheel, with its reference turns."""
    spec = importlib.util.find_spec("pyannote.audio")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pyannote.audio is not installed")
    folder = Path(next(iter(spec.submodule_search_locations))) / "sample"
    samples = decode_audio((folder / "sample.wav").read_bytes()).samples
    turns = []
    for line in (folder / "sample.rttm").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == "SPEAKER":
            start, length = float(fields[3]), float(fields[4])
            turns.append(Turn(start, start + length, fields[7]))
    return Recording("pyannote sample call", samples, turns)


def diarization_error_rate(
    reference: Sequence[Turn], hypothesis: Sequence[Turn], collar: float = 0.25, skip_overlap: bool = True
) -> float:
    """pyannote.metrics' DER (optimal speaker mapping) of `hypothesis` against `reference`."""
    from pyannote.core import Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    metric = DiarizationErrorRate(collar=collar, skip_overlap=skip_overlap)
    end = max(turn.end for turn in [*reference, *hypothesis])
    scored = Timeline([Segment(0.0, end)])  # the whole recording, so silence counts as such
    return float(metric(_annotation(reference), _annotation(hypothesis), uem=scored))


def _annotation(turns: Sequence[Turn]) -> object:
    from pyannote.core import Annotation, Segment

    annotation = Annotation(uri="audio")
    for index, turn in enumerate(turns):
        annotation[Segment(turn.start, turn.end), index] = turn.speaker
    return annotation


def _trim(samples: np.ndarray) -> np.ndarray:
    frame = SAMPLE_RATE // 100
    count = len(samples) // frame
    rms = np.sqrt((samples[: count * frame].reshape(count, frame) ** 2).mean(axis=1))
    loud = np.flatnonzero(rms > _TRIM_THRESHOLD)
    if len(loud) == 0:
        return samples
    return samples[loud[0] * frame : (loud[-1] + 1) * frame]


def recordings() -> list[Recording]:
    return [
        sample_call(),
        flite_dialogue(TWO_VOICES, lines=12, name="flite, 2 voices"),
        flite_dialogue(FOUR_VOICES, lines=16, seed=11, name="flite, 4 voices"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    started = time.perf_counter()
    diarizer = Diarizer(threads=args.threads)
    import torch

    print(f"pipeline loaded in {time.perf_counter() - started:.1f} s, {torch.get_num_threads()} torch threads")
    header = f"{'recording':<22} {'length':>7} {'speakers':>8} {'given':>5} {'found':>5} {'DER fair':>8} "
    header += f"{'DER strict':>10} {'CPU s/min':>9} {'wall/audio':>10}"
    print(header)
    print("-" * len(header))
    for recording in recordings():
        for given in (None, recording.speakers):
            cpu, wall = time.process_time(), time.perf_counter()
            turns = diarizer(recording.samples, num_speakers=given)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            fair = diarization_error_rate(recording.turns, turns)
            strict = diarization_error_rate(recording.turns, turns, collar=0.0, skip_overlap=False)
            found = len({turn.speaker for turn in turns})
            print(
                f"{recording.name:<22} {recording.duration:>6.1f}s {recording.speakers:>8} {given or '-':>5} "
                f"{found:>5} {fair:>8.1%} {strict:>10.1%} {cpu / recording.duration * 60:>9.1f} "
                f"{wall / recording.duration:>10.2f}"
            )


if __name__ == "__main__":
    main()
