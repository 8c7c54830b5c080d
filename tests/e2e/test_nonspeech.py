"""Nothing invented where nobody speaks, through the real stack: every kind of non-speech at every length
gives no text in every response format, in streams and in tasks; speech after a long silence, a single
word and quiet speech are still transcribed."""

from __future__ import annotations

import re

import httpx
import numpy as np
import openai
import pytest

from harness.assets import JFK_TEXT, jfk_wav, wav_bytes
from harness.grpc_calls import bool_input, bytes_input, call_entry, engine_calls
from harness.nonspeech import KINDS, nonspeech
from harness.speech import speech_clips
from harness.stack import Served
from harness.text import english_normalize, wer
from tests.e2e.test_tasks import TINY_ENGINE, upload, wait_task
from whisper_triton import contract
from whisper_triton.audio import decode_audio

LENGTHS = (0.1, 1.0, 8.0, 40.0)


@pytest.fixture(scope="module")
def sdk(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.base_url}/v1", api_key="unused", max_retries=0, timeout=300)


def no_words(body: str) -> bool:
    """A subtitle or text body with nothing but its frame (WEBVTT, times, numbers, arrows)."""
    return re.sub(r"WEBVTT|[\d:.,\->\s]", "", body) == ""


@pytest.mark.parametrize("kind", KINDS)
def test_no_text_where_nobody_speaks_at_any_length_in_any_format(sdk: openai.OpenAI, kind: str) -> None:
    for length in LENGTHS:
        audio = wav_bytes(nonspeech(kind, length, seed=11))
        result = sdk.audio.transcriptions.create(model="whisper-1", file=("a.wav", audio))
        assert result.text == "", (kind, length, result.text)
        verbose = sdk.audio.transcriptions.create(model="whisper-1", file=("a.wav", audio),
                                                  response_format="verbose_json",
                                                  timestamp_granularities=["word", "segment"])
        assert verbose.text == "" and not verbose.segments and not verbose.words, (kind, length, verbose.text)
        assert verbose.duration == pytest.approx(length, abs=0.01)
        for response_format in ("text", "srt", "vtt"):
            body = sdk.audio.transcriptions.create(model="whisper-1", file=("a.wav", audio),
                                                   response_format=response_format)
            assert no_words(str(body)), (kind, length, response_format, body)
    audio = wav_bytes(nonspeech(kind, 8.0, seed=12))
    events = list(sdk.audio.transcriptions.create(model="whisper-1", file=("a.wav", audio), stream=True))
    assert [e.type for e in events] == ["transcript.text.done"] and events[0].text == "", events


def test_no_text_in_tasks_of_either_dialect(served: Served) -> None:
    with httpx.Client(base_url=served.base_url, timeout=60) as client:
        ids = [upload(client, wav_bytes(nonspeech(kind, 6.0, seed=13))) for kind in ("silence", "music", "hum")]
        for task_id in ids:
            task = wait_task(client, task_id)
            assert task["status"] == "completed" and task["result"]["text"] == "", task
            assert task["result"]["segments"] == []
        queued = client.post("/service/transcribe", files={"file": ("a.wav", wav_bytes(nonspeech("white_noise", 6.0)))})
        assert queued.status_code == 200, queued.text
        ids.append(queued.json()["identifier"])
        assert wait_task(client, ids[-1])["result"]["text"] == ""
        for task_id in ids:  # the other dialect's view of the same tasks
            status = client.get(f"/status/{task_id}").json()
            assert status["status"] == "completed" and status["output"]["text"] == "", status


def test_nan_samples_are_silence_not_you(sdk: openai.OpenAI) -> None:
    samples = np.full(16000, np.nan, dtype="<f4")  # one second of NaN, as an IEEE float WAV
    header = (b"RIFF" + (36 + samples.nbytes).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
              + (3).to_bytes(2, "little") + (1).to_bytes(2, "little") + (16000).to_bytes(4, "little")
              + (64000).to_bytes(4, "little") + (4).to_bytes(2, "little") + (32).to_bytes(2, "little")
              + b"data" + samples.nbytes.to_bytes(4, "little"))
    result = sdk.audio.transcriptions.create(model="whisper-1", file=("nan.wav", header + samples.tobytes()))
    assert result.text == ""


def test_speech_after_a_long_silence_is_transcribed_in_full(sdk: openai.OpenAI) -> None:
    jfk = decode_audio(jfk_wav().read_bytes()).samples
    audio = wav_bytes(np.concatenate([nonspeech("room_tone", 45.0, seed=14), jfk, nonspeech("room_tone", 20.0)]))
    result = sdk.audio.transcriptions.create(model="whisper-1", file=("a.wav", audio), response_format="verbose_json",
                                             timestamp_granularities=["segment"])
    assert wer(JFK_TEXT, result.text) < 0.1, result.text
    segments = result.segments or []
    assert segments and segments[0].start >= 44.0 and segments[-1].end <= 57.5, segments


def test_a_short_answer_after_a_long_silence_keeps_its_words_and_their_times(sdk: openai.OpenAI) -> None:
    """A clip under 30 s that is mostly silence (a microphone opened, then a short answer): with word
    timings the words sit on the answer, not in the silence (where the VAD gate would drop them)."""
    clip = {clip.name: clip for clip in speech_clips("report")}["asterisk/queue-reporthold"]  # "Hold time"
    audio = wav_bytes(np.concatenate([nonspeech("room_tone", 25.0, seed=21), clip.samples,
                                      nonspeech("room_tone", 0.5, seed=22)]))
    result = sdk.audio.transcriptions.create(model="whisper-1", file=("a.wav", audio), response_format="verbose_json",
                                             timestamp_granularities=["word", "segment"])
    assert english_normalize(result.text) == english_normalize(clip.text), result.text
    words = result.words or []
    assert words and all(24.0 <= word.start <= word.end <= 26.7 for word in words), words


def test_single_words_and_quiet_speech_are_kept(sdk: openai.OpenAI) -> None:
    """Real one-word clips (Common Voice, Asterisk), and JFK 30 dB quieter (a far or quiet microphone:
    Silero VAD alone hears nothing in it)."""
    clips = {clip.name: clip for clip in speech_clips("tune") + speech_clips("report")}
    heard = []
    for name in ("mfa/common_voice_en_22058264", "mfa/common_voice_en_22058267", "asterisk/vm-goodbye",
                 "asterisk/minutes"):
        clip = clips[name]
        audio = wav_bytes(np.concatenate([nonspeech("room_tone", 0.5), clip.samples, nonspeech("room_tone", 0.5)]))
        text = sdk.audio.transcriptions.create(model="whisper-1", file=("a.wav", audio)).text
        heard.append((english_normalize(clip.text), english_normalize(text)))
    assert all(said in text.split() for said, text in heard), heard
    jfk = decode_audio(jfk_wav().read_bytes()).samples * 10 ** (-30 / 20)
    quiet = sdk.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav_bytes(jfk.astype(np.float32))))
    assert wer(JFK_TEXT, quiet.text) < 0.15, quiet.text


def test_a_grpc_client_can_turn_the_gate_off(served: Served) -> None:
    """`VAD` false: Whisper alone decides (for a client that does its own VAD): the engine gets the
    window, which it never does with the gate on."""
    audio = wav_bytes(nonspeech("silence", 3.0))
    before = engine_calls(served.grpc_url, TINY_ENGINE)
    [done] = call_entry(served.grpc_url, [bytes_input(contract.AUDIO, audio)])
    assert isinstance(done, dict) and done["type"] == "done" and done["text"] == ""
    assert engine_calls(served.grpc_url, TINY_ENGINE) == before
    events = call_entry(served.grpc_url, [bytes_input(contract.AUDIO, audio), bool_input(contract.VAD, False)])
    assert isinstance(events[-1], dict) and events[-1]["type"] == "done" and events[-1]["duration"] == 3.0
    assert engine_calls(served.grpc_url, TINY_ENGINE) == before + 1
