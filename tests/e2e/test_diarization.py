"""Speaker diarization through Triton: the openai SDK gets diarized_json for a two-speaker call."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.assets import wav_bytes
from tests.conftest import Served
from whisper_triton.audio import decode_audio

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
pytest.importorskip("pyannote.audio", reason="pyannote.audio is part of the lock; without it there is no diarization")

# Measured (README, Diarization): speaker turns 1-3 %; transcript segments 7.7 % (their bounds are
# Whisper's word timings, not the turns). Bounds leave room for run-to-run variation.
TURNS_DER_BOUND = 0.10
SEGMENTS_DER_BOUND = 0.15


def _sample() -> tuple[Path, Path]:
    spec = importlib.util.find_spec("pyannote.audio")
    assert spec is not None and spec.origin is not None
    folder = Path(spec.origin).parent / "sample"
    return folder / "sample.wav", folder / "sample.rttm"


def _der(segments: list[dict[str, Any]], rttm: Path) -> float:
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    reference = Annotation()
    for line in rttm.read_text().splitlines():
        fields = line.split()
        start, duration, speaker = float(fields[3]), float(fields[4]), fields[7]
        reference[Segment(start, start + duration)] = speaker
    hypothesis = Annotation()
    for segment in segments:
        hypothesis[Segment(segment["start"], segment["end"])] = segment["speaker"]
    return float(DiarizationErrorRate(collar=0.5, skip_overlap=True)(reference, hypothesis))


def test_diarized_json_for_the_two_speaker_call(served: Served) -> None:
    wav, rttm = _sample()
    sdk = openai.OpenAI(base_url=f"{served.base_url}/v1", api_key="unused", max_retries=0, timeout=600)
    result = sdk.audio.transcriptions.create(model="gpt-4o-transcribe-diarize", file=wav.open("rb"),
                                             response_format="diarized_json", chunking_strategy="auto")
    body = result.model_dump()
    segments = body["segments"]
    assert {s["speaker"] for s in segments} == {"A", "B"}
    assert all(s["type"] == "transcript.text.segment" and s["id"].startswith("seg_") for s in segments)
    lines = body["text"].split("\n")
    assert len(lines) >= 2 and all(line.startswith(("A: ", "B: ")) for line in lines)
    assert _der(segments, rttm) < SEGMENTS_DER_BOUND


def test_diarization_in_the_task_apis(served: Served) -> None:
    """Speaker turns with a transcript (diarize=true), turns alone (/service/diarize), /service/combine."""
    from tests.e2e.test_tasks import wait_task

    wav, rttm = _sample()
    with httpx.Client(base_url=served.base_url, timeout=120) as client:
        queued = client.post("/speech-to-text", files={"file": ("call.wav", wav.read_bytes())},
                             data={"diarize": "true", "min_speakers": "2", "max_speakers": "2"})
        task = wait_task(client, queued.json()["identifier"], timeout=600)
        assert task["status"] == "completed", task
        turns = task["result"]["speakers"]
        assert len({t["speaker"] for t in turns}) == 2 and _der(turns, rttm) < TURNS_DER_BOUND
        assert {s["speaker"] for s in task["result"]["segments"]} == {t["speaker"] for t in turns}
        combined = client.post("/service/combine", json={"transcript": task["result"], "diarization": turns})
        assert combined.status_code == 200 and all(s["speaker"] for s in combined.json()["segments"])
        short = decode_audio(wav.read_bytes()).samples[: 16000 * 12]  # the first exchange, for speed
        only = client.post("/service/diarize", files={"file": ("start.wav", wav_bytes(short))})
        diarized = wait_task(client, only.json()["identifier"], timeout=600)
        assert diarized["status"] == "completed" and diarized["result"]["segments"] == []
        assert len({t["speaker"] for t in diarized["result"]["speakers"]}) == 2
