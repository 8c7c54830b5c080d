"""Speaker diarization through Triton: the openai SDK gets diarized_json for a two-speaker call."""

from __future__ import annotations

import base64
import importlib.util
import os
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from harness.assets import jfk_wav, wav_bytes
from harness.stack import Served
from whisper_triton.audio import decode_audio

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
pytest.importorskip("pyannote.audio", reason="pyannote.audio is part of the lock; without it there is no diarization")

# Measured (docs/diarization.md): speaker turns 1-3 %; transcript segments 7.7 % (their bounds are
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
        # The first 20 s, for speed: the second voice says 5 s there (in the first 12 s only 1.9 s, in
        # turns under 1.2 s, which the subsegment clustering gives to the first voice).
        short = decode_audio(wav.read_bytes()).samples[: 16000 * 20]
        only = client.post("/service/diarize", files={"file": ("start.wav", wav_bytes(short))})
        diarized = wait_task(client, only.json()["identifier"], timeout=600)
        assert diarized["status"] == "completed" and diarized["result"]["segments"] == []
        assert len({t["speaker"] for t in diarized["result"]["speakers"]}) == 2


def _reference_turns(rttm: Path) -> list[tuple[float, float, str]]:
    turns = []
    for line in rttm.read_text().splitlines():
        fields = line.split()
        turns.append((float(fields[3]), float(fields[3]) + float(fields[4]), fields[7]))
    return turns


def _clip(wav: Path, rttm: Path, speaker: str, which: int = 0, seconds: float = 6.0) -> bytes:
    """WAV bytes of one of the speaker's long turns (`which`: 0 = the longest, 1 = the next, ...)."""
    samples = decode_audio(wav.read_bytes()).samples
    turns = sorted((t for t in _reference_turns(rttm) if t[2] == speaker), key=lambda t: t[0] - t[1])
    start, end, _ = turns[which]
    return wav_bytes(samples[int(start * 16000) : int(min(end, start + seconds) * 16000)])


def _data_url(clip: bytes) -> str:
    return "data:audio/wav;base64," + base64.b64encode(clip).decode()


def _named_correctly(segments: list[dict[str, Any]], rttm: Path, names: dict[str, str]) -> None:
    """Each name covers (mostly) the reference speaker whose clip it was given."""
    reference = _reference_turns(rttm)
    for speaker, name in names.items():
        own = other = 0.0
        for segment in (s for s in segments if s["speaker"] == name):
            for start, end, who in reference:
                shared = max(0.0, min(end, segment["end"]) - max(start, segment["start"]))
                own, other = (own + shared, other) if who == speaker else (own, other + shared)
        assert own > 3 * other, (name, own, other)


def test_known_speaker_references_name_the_speakers(served: Served) -> None:
    """OpenAI's known_speaker_names[] + known_speaker_references[] (data URLs), through the openai SDK."""
    wav, rttm = _sample()
    speakers = sorted({t[2] for t in _reference_turns(rttm)})
    names = dict(zip(speakers, ("agent", "customer"), strict=True))
    sdk = openai.OpenAI(base_url=f"{served.base_url}/v1", api_key="unused", max_retries=0, timeout=600)
    result = sdk.audio.transcriptions.create(
        model="gpt-4o-transcribe-diarize", file=wav.open("rb"), response_format="diarized_json",
        chunking_strategy="auto", known_speaker_names=list(names.values()),
        known_speaker_references=[_data_url(_clip(wav, rttm, s)) for s in speakers],
    )
    segments = result.model_dump()["segments"]
    assert {s["speaker"] for s in segments} == {"agent", "customer"}
    assert all(line.startswith(("agent: ", "customer: ")) for line in result.text.split("\n"))
    _named_correctly(segments, rttm, names)
    assert _der(segments, rttm) < SEGMENTS_DER_BOUND


def test_stored_speakers_enrol_identify_label_and_delete(served: Served) -> None:
    """/v1/speakers keeps named voices; later requests name them without a clip."""
    wav, rttm = _sample()
    speakers = sorted({t[2] for t in _reference_turns(rttm)})
    with httpx.Client(base_url=f"{served.base_url}/v1", timeout=600) as client:
        for stale in client.get("/speakers").json()["data"]:
            client.delete(f"/speakers/{stale['id']}")
        created = client.post("/speakers", data={"name": "Dana Agent"},
                              files={"file": ("agent.wav", _clip(wav, rttm, speakers[0]))})
        assert created.status_code == 201, created.text
        dana = created.json()
        assert dana["object"] == "speaker" and dana["name"] == "Dana Agent" and dana["id"].startswith("spk_")
        assert dana["embedding_model"].startswith("campplus") and 1.0 <= dana["duration"] <= 6.5
        second = client.post("/speakers", json={"name": "Cal Customer",
                                                "reference": _data_url(_clip(wav, rttm, speakers[1]))})
        assert second.status_code == 201, second.text
        duplicate = client.post("/speakers", data={"name": "Dana Agent"},
                                files={"file": ("a.wav", _clip(wav, rttm, speakers[0]))})
        assert duplicate.status_code == 409 and duplicate.json()["error"]["code"] == "speaker_exists"
        assert [s["name"] for s in client.get("/speakers").json()["data"]] == ["Dana Agent", "Cal Customer"]

        # Another turn of the first caller is recognised as Dana, with the similarities ranked.
        probe = client.post("/speakers/identify", files={"file": ("probe.wav", _clip(wav, rttm, speakers[0], 1))})
        assert probe.status_code == 200, probe.text
        identified = probe.json()
        assert identified["speaker"]["name"] == "Dana Agent"
        assert [m["name"] for m in identified["matches"]] == ["Dana Agent", "Cal Customer"]
        assert identified["matches"][0]["similarity"] > identified["matches"][1]["similarity"]

        # A later transcription names the stored speakers (no reference clips).
        labelled = client.post("/audio/transcriptions", files={"file": ("call.wav", wav.read_bytes())},
                               data={"model": "whisper-1", "response_format": "diarized_json",
                                     "known_speaker_names[]": ["Dana Agent", "Cal Customer"]})
        assert labelled.status_code == 200, labelled.text
        segments = labelled.json()["segments"]
        assert {s["speaker"] for s in segments} == {"Dana Agent", "Cal Customer"}
        _named_correctly(segments, rttm, {speakers[0]: "Dana Agent", speakers[1]: "Cal Customer"})

        assert client.delete(f"/speakers/{dana['id']}").json() == {"id": dana["id"], "deleted": True,
                                                                    "object": "speaker.deleted"}
        assert client.get(f"/speakers/{dana['id']}").status_code == 404
        assert client.delete(f"/speakers/{dana['id']}").status_code == 404
        gone = client.post("/audio/transcriptions", files={"file": ("call.wav", wav.read_bytes())},
                           data={"model": "whisper-1", "response_format": "diarized_json",
                                 "known_speaker_names[]": ["Dana Agent"]})
        assert gone.status_code == 400 and gone.json()["error"]["param"] == "known_speaker_names"


@pytest.mark.parametrize(
    ("data", "param"),
    [
        ({"response_format": "json", "known_speaker_names[]": "agent"}, "known_speaker_names"),
        ({"response_format": "diarized_json", "known_speaker_references[]": "data:audio/wav;base64,AAAA"},
         "known_speaker_names"),
        ({"response_format": "diarized_json", "known_speaker_names[]": "agent",
          "known_speaker_references[]": "https://example.com/a.wav"}, "known_speaker_references"),
        ({"response_format": "diarized_json", "known_speaker_names[]": ["a", "a"],
          "known_speaker_references[]": [_data_url(b"x"), _data_url(b"y")]}, "known_speaker_names"),
        # Decodable, but 0.3 s: too little voice for an embedding (checked inside Triton).
        ({"response_format": "diarized_json", "known_speaker_names[]": "agent",
          "known_speaker_references[]": _data_url(wav_bytes(np.zeros(4800, dtype=np.float32)))},
         "known_speaker_references"),
        ({"response_format": "diarized_json", "known_speaker_names[]": "agent",
          "known_speaker_references[]": _data_url(b"not audio at all")}, "known_speaker_references"),
    ],
)
def test_bad_known_speakers_are_400(served: Served, data: dict[str, Any], param: str) -> None:
    with httpx.Client(base_url=f"{served.base_url}/v1", timeout=600) as client:
        response = client.post("/audio/transcriptions", files={"file": ("jfk.wav", jfk_wav().read_bytes())},
                               data={"model": "whisper-1", **data})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == param


def test_bad_speaker_clips_are_400(served: Served) -> None:
    with httpx.Client(base_url=f"{served.base_url}/v1", timeout=600) as client:
        short = client.post("/speakers", data={"name": "x"},
                            files={"file": ("s.wav", wav_bytes(np.zeros(8000, dtype=np.float32)))})
        assert short.status_code == 400 and short.json()["error"]["param"] == "file"
        nameless = client.post("/speakers", files={"file": ("a.wav", jfk_wav().read_bytes())})
        assert nameless.status_code == 400 and nameless.json()["error"]["param"] == "name"
        missing = client.post("/speakers/identify", files={"threshold": (None, "0.5")})
        assert missing.status_code == 400 and missing.json()["error"]["param"] == "file"


def test_grpc_clients_embed_voices_and_pass_known_speakers(served: Served) -> None:
    """The documented Triton contract: TASK=embed on the entry model, EMBED on `diarization`, and
    KNOWN_SPEAKER_NAMES + KNOWN_SPEAKER_EMBEDDINGS on a diarizing request."""
    import tritonclient.grpc as grpcclient

    from tests.triton.test_grpc_contract import _bool, _bytes, call_entry
    from whisper_triton import contract

    wav, rttm = _sample()
    speakers = sorted({t[2] for t in _reference_turns(rttm)})
    client = grpcclient.InferenceServerClient(served.grpc_url)
    client.load_model(contract.DIARIZATION_MODEL)  # the HTTP frontend does this on first use
    voices = []
    for speaker in speakers:
        events = call_entry(served.grpc_url, [_bytes(contract.AUDIO, _clip(wav, rttm, speaker)),
                                              _bytes(contract.TASK, b"embed")])
        done = events[-1]
        assert isinstance(done, dict) and done["task"] == "embed", done
        voices.append(np.array(done["embedding"], dtype=np.float32))
        assert voices[-1].shape == (192,) and abs(float(np.linalg.norm(voices[-1])) - 1) < 1e-3

    # The diarization model embeds the same way when called directly.
    clip = decode_audio(_clip(wav, rttm, speakers[0])).samples
    waveform = grpcclient.InferInput(contract.WAVEFORM, [len(clip)], "FP32")
    waveform.set_data_from_numpy(clip)
    direct = client.infer(contract.DIARIZATION_MODEL, [waveform, _bool(contract.EMBED, True)])
    assert float(np.dot(direct.as_numpy(contract.EMBEDDING), voices[0])) > 0.99
    assert direct.as_numpy(contract.EMBEDDING_MODEL)[0].decode().startswith("campplus")

    names = grpcclient.InferInput(contract.KNOWN_SPEAKER_NAMES, [2], "BYTES")
    names.set_data_from_numpy(np.array([b"first", b"second"], dtype=object))
    rows = grpcclient.InferInput(contract.KNOWN_SPEAKER_EMBEDDINGS, [2, 192], "FP32")
    rows.set_data_from_numpy(np.stack(voices))
    events = call_entry(served.grpc_url, [_bytes(contract.AUDIO, wav.read_bytes()), _bytes(contract.TASK, b"diarize"),
                                          names, rows])
    done = events[-1]
    assert isinstance(done, dict), done
    assert {t["speaker"] for t in done["speakers"]} == {"first", "second"}
    client.close()
