"""TensorRT-LLM's engine route on a real GPU: engines for tiny and large-v3-turbo built with `python -m build_engines
all --route engine`, the engine under the shared decoding code, and the served stack through the openai SDK."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from harness.assets import JFK_TEXT, jfk_wav
from harness.stack import REPO, Served, start_served
from harness.text import wer
from tests.gpu.conftest import missing_route
from whisper_triton.audio import decode_audio
from whisper_triton.decoding import DecodeOptions, WindowJob, decode_windows
from whisper_triton.features import window_features
from whisper_triton.models import read_model_info, resolve_model
from whisper_triton.settings import ModelSettings
from whisper_triton.text import WhisperTokenizer
from whisper_triton.trtllm_engine import TensorRTLLMEngine, create_engine

pytestmark = pytest.mark.gpu

MODELS = ("tiny", "large-v3-turbo")


@pytest.fixture(scope="module", autouse=True)
def engine_route() -> None:
    reason = missing_route("engine")
    if reason is not None:
        pytest.skip(reason)


def build_all(model: str, root: Path) -> str:
    command = [sys.executable, "-m", "build_engines", "all", "--model", model, "--workdir", str(root),
               "--route", "engine"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=3600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module", params=MODELS)
def built(request: pytest.FixtureRequest, engines_root: Path) -> tuple[str, Path]:
    build_all(request.param, engines_root)
    return request.param, engines_root


@pytest.fixture(scope="module")
def engine(built: tuple[str, Path]) -> Iterator[tuple[TensorRTLLMEngine, WhisperTokenizer]]:
    model, root = built
    resolved = resolve_model(model)
    info = read_model_info(resolved.path)
    tokenizer = WhisperTokenizer(resolved.path / "tokenizer.json", info.multilingual, info.num_languages)
    settings = ModelSettings(engine="tensorrt_llm", trtllm_route="engine", trtllm_engine_dir=str(root))
    instance = create_engine(settings, resolved, info, tokenizer)
    yield instance, tokenizer
    instance.close()


def jfk_job(n_mels: int, **options: object) -> WindowJob:
    samples = decode_audio(jfk_wav().read_bytes()).samples
    features, frames = window_features(samples, n_mels)
    return WindowJob(features, frames, DecodeOptions(**options))  # type: ignore[arg-type]


def test_a_second_build_is_a_no_op(built: tuple[str, Path]) -> None:
    model, root = built
    started = time.monotonic()
    output = build_all(model, root)
    assert output.count("up to date") >= 2
    assert time.monotonic() - started < 300  # conversion and engines are skipped


def test_engine_transcribes_with_language_timestamps_and_words(
    engine: tuple[TensorRTLLMEngine, WhisperTokenizer],
) -> None:
    instance, tokenizer = engine
    (result,) = decode_windows(instance, tokenizer, [jfk_job(instance.n_mels, word_timestamps=True, logprobs=True)])
    assert result.language == "en" and result.language_probability > 0.5
    text = "".join(s.text for s in result.segments)
    assert wer(JFK_TEXT, text) < 0.15
    assert all(0 <= s.start < s.end <= 11.01 for s in result.segments)
    words = [w for s in result.segments for w in s.words]
    assert len(words) >= 20 and all(a.start <= b.start for a, b in itertools.pairwise(words))
    assert all(s.no_speech_prob < 0.5 and s.avg_logprob > -1 for s in result.segments)
    # Token log-probabilities come from the same alignment pass as the words (the CTranslate2 CUDA aligner).
    assert all("".join(t.token for t in s.logprobs) == s.text and all(t.logprob <= 0 for t in s.logprobs)
               for s in result.segments)


def test_a_batch_of_64_windows_decodes_in_flight(engine: tuple[TensorRTLLMEngine, WhisperTokenizer]) -> None:
    instance, tokenizer = engine
    jobs = [jfk_job(instance.n_mels, language="en")] * 64
    results = decode_windows(instance, tokenizer, jobs)
    texts = {"".join(s.text for s in r.segments) for r in results}
    assert len(results) == 64 and all(wer(JFK_TEXT, text) < 0.15 for text in texts)


@pytest.fixture(scope="module")
def served_turbo(engines_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    build_all("large-v3-turbo", engines_root)
    instance = start_served(
        tmp_path_factory.mktemp("serve-gpu"),
        "large-v3-turbo",
        TRITON_MODEL_REPOSITORY=str(engines_root / "model_repository"),
        WHISPER_ENGINE="tensorrt_llm",
        WHISPER_TRTLLM_ROUTE="engine",
        WHISPER_TRTLLM_ENGINE_DIR=str(engines_root),
        WHISPER_DIARIZATION="off",
        WHISPER_MAX_WINDOWS_IN_FLIGHT="64",
        WHISPER_BLS_THREADS="128",
    )
    yield instance
    instance.stop()


def test_openai_sdk_end_to_end(served_turbo: Served) -> None:
    client = openai.OpenAI(base_url=f"{served_turbo.base_url}/v1", api_key="unused", max_retries=0, timeout=600)
    result = client.audio.transcriptions.create(
        model="whisper-1", file=jfk_wav().open("rb"), response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert wer(JFK_TEXT, result.text) < 0.15
    assert result.language == "english" or result.language == "en"
    assert result.segments and result.words and result.words[0].start < 1.5
    translated = client.audio.translations.create(model="whisper-1", file=jfk_wav().open("rb"))
    assert "country" in translated.text.lower()
