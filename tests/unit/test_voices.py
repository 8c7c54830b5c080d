"""Known speakers of a request: checks, reference clips, and their way through the transcriber."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import pytest

from harness.assets import jfk_wav, wav_bytes
from tests.unit.test_transcriber import one_by_one
from whisper_triton.contract import TranscriptionRequest
from whisper_triton.decoding import Segment, WindowResult
from whisper_triton.errors import InvalidAudioError, InvalidRequestError
from whisper_triton.models import ModelInfo
from whisper_triton.speakers import KnownSpeaker
from whisper_triton.transcriber import SpeakerCount, Transcriber, WindowCall
from whisper_triton.voices import MAX_KNOWN_SPEAKERS, KnownVoices, check_voices, voice_samples
from whisper_triton.words import Word

INFO = ModelInfo(n_mels=80, multilingual=False, num_languages=1)


def _tone(seconds: float) -> bytes:
    t = np.arange(int(seconds * 16000)) / 16000
    return wav_bytes((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))


@pytest.mark.parametrize(
    "voices",
    [
        KnownVoices(("a", "b"), (b"clip",)),  # a name without a voice
        KnownVoices(("a",), (b"clip", b"clip")),
        KnownVoices(("a", "a"), (b"clip", b"clip")),
        KnownVoices(("",), (b"clip",)),
        KnownVoices(("x" * 65,), (b"clip",)),
        KnownVoices(("tab\there",), (b"clip",)),
        KnownVoices(tuple(f"n{i}" for i in range(MAX_KNOWN_SPEAKERS + 1)),
                    embeddings=tuple(np.ones(4) for _ in range(MAX_KNOWN_SPEAKERS + 1))),
    ],
)
def test_bad_known_voices(voices: KnownVoices) -> None:
    with pytest.raises(InvalidRequestError) as error:
        check_voices(voices)
    assert error.value.param == "known_speaker_names"


def test_voice_clips_must_be_one_to_thirty_seconds() -> None:
    assert len(voice_samples(_tone(2.0))) == 32000
    for seconds in (0.5, 31.0):
        with pytest.raises(InvalidAudioError, match="s long") as error:
            voice_samples(_tone(seconds), "known_speaker_references", "Reference 1")
        assert error.value.param == "known_speaker_references"
    with pytest.raises(InvalidAudioError, match=r"^Reference 1: ") as error:
        voice_samples(b"not audio", "known_speaker_references", "Reference 1")
    assert error.value.param == "known_speaker_references"


async def _decode(job: WindowCall) -> WindowResult:
    words = [Word(" hello", 1.0, 2.0, 0.9, [1])]
    return WindowResult("en", 1.0, [Segment(1.0, 2.0, " hello", [1], 0.0, -0.1, 1.0, 0.0, words)])


async def test_references_are_embedded_and_stored_voices_follow_in_order() -> None:
    embedded: list[int] = []
    seen: list[list[KnownSpeaker]] = []

    async def embed(samples: np.ndarray) -> tuple[np.ndarray, str]:
        embedded.append(len(samples))
        return np.full(3, len(embedded), dtype=np.float32), "fake-3"

    async def diarize(samples: np.ndarray, speakers: SpeakerCount, known: list[KnownSpeaker]) -> list[dict[str, Any]]:
        seen.append(known)
        return [{"start": 0.0, "end": 11.0, "speaker": "agent"}]

    transcriber = Transcriber(INFO, one_by_one(_decode), diarize=diarize, embed=embed)
    request = TranscriptionRequest(diarize=True, known_speaker_names=("agent", "customer", "stored"),
                                   known_speaker_references=(_tone(2.0), _tone(3.0)),
                                   known_speaker_embeddings=((9.0, 9.0, 9.0),))
    events = [msgspec.to_builtins(e) async for e in transcriber.events(jfk_wav().read_bytes(), request)]
    assert embedded == [32000, 48000]
    assert [(k.name, float(k.embedding[0])) for k in seen[0]] == [("agent", 1.0), ("customer", 2.0), ("stored", 9.0)]
    assert events[-1]["segments"][0]["speaker"] == "agent"

    voice = [msgspec.to_builtins(e) async for e in transcriber.voice(_tone(2.5))]
    assert voice == [{"type": "done", "task": "embed", "language": None, "duration": 2.5, "text": "", "segments": [],
                      "embedding": [3.0, 3.0, 3.0], "embedding_model": "fake-3"}]


async def test_known_voices_need_diarization_and_valid_clips() -> None:
    async def embed(samples: np.ndarray) -> tuple[np.ndarray, str]:
        raise AssertionError("nothing is embedded for a refused request")

    async def diarize(samples: np.ndarray, speakers: SpeakerCount, known: list[KnownSpeaker]) -> list[dict[str, Any]]:
        raise AssertionError("nothing is diarized for a refused request")

    transcriber = Transcriber(INFO, one_by_one(_decode), diarize=diarize, embed=embed)
    plain = TranscriptionRequest(known_speaker_names=("a",), known_speaker_references=(_tone(2.0),))
    with pytest.raises(InvalidRequestError, match="need diarization"):
        [e async for e in transcriber.events(jfk_wav().read_bytes(), plain)]
    short = TranscriptionRequest(diarize=True, known_speaker_names=("a",), known_speaker_references=(_tone(0.3),))
    with pytest.raises(InvalidAudioError) as error:
        [e async for e in transcriber.events(jfk_wav().read_bytes(), short)]
    assert error.value.param == "known_speaker_references"
    with pytest.raises(InvalidRequestError, match="not enabled"):
        [e async for e in Transcriber(INFO, one_by_one(_decode)).voice(_tone(2.0))]
