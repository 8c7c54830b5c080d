"""Several models in one Triton: chosen per request, loaded on first use, unloaded when idle."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai
import tritonclient.grpc as grpcclient

from harness.assets import JFK_TEXT, jfk_wav
from harness.stack import start_served
from harness.text import wer
from whisper_triton.repository import engine_model_name


def _ready(url: str, model: str) -> bool:
    client = grpcclient.InferenceServerClient(url)
    try:
        return bool(client.is_model_ready(engine_model_name(model)))
    finally:
        client.close()


def test_models_load_on_first_request_and_unload_when_idle(tmp_path: Path) -> None:
    served = start_served(tmp_path, "tiny.en", WHISPER_MODELS="tiny.en,base", TRITON_MODEL_LOAD="first_request",
                          UNLOAD_MODEL_AFTER_S="4")
    try:
        sdk = openai.OpenAI(base_url=f"{served.base_url}/v1", api_key="unused", max_retries=0, timeout=300)
        ids = [m.id for m in sdk.models.list()]
        assert ids[:2] == ["tiny.en", "base"] and "whisper-1" in ids
        assert not _ready(served.grpc_url, "base") and not _ready(served.grpc_url, "tiny.en")
        # VAD needs no Whisper engine: it neither waits for the default model's load nor loads it.
        speech = httpx.post(f"{served.base_url}/v1/audio/speech/timestamps", timeout=120,
                            files={"file": ("jfk.wav", jfk_wav().read_bytes(), "audio/wav")})
        assert speech.status_code == 200 and speech.json()[0]["start"] < 1000, speech.text
        assert not _ready(served.grpc_url, "tiny.en")
        verbose = sdk.audio.transcriptions.create(model="base", file=jfk_wav().open("rb"),
                                                  response_format="verbose_json")
        assert wer(JFK_TEXT, verbose.text) < 0.1 and verbose.language == "english"
        assert _ready(served.grpc_url, "base") and not _ready(served.grpc_url, "tiny.en")
        # Aliases mean the default (first) model.
        assert wer(JFK_TEXT, sdk.audio.transcriptions.create(model="whisper-1", file=jfk_wav().open("rb")).text) < 0.1
        assert _ready(served.grpc_url, "tiny.en")
        deadline = time.monotonic() + 60
        while _ready(served.grpc_url, "base") or _ready(served.grpc_url, "tiny.en"):
            assert time.monotonic() < deadline, "idle models were not unloaded"
            time.sleep(0.5)
        # Unloaded models come back on the next request.
        assert wer(JFK_TEXT, sdk.audio.transcriptions.create(model="base", file=jfk_wav().open("rb")).text) < 0.1
    finally:
        served.stop()
