"""TensorRT-LLM's PyTorch route on a real GPU: the Hugging Face checkpoint of tiny fetched by `python -m build_engines
all --route pytorch` (nothing built), served through the LLM API under the shared decoding code.

What the CPU tests could only assume from TensorRT-LLM's sources is checked here: that our input processor
replaces TensorRT-LLM's and the encoder takes our log-mel, that the per-request logits processor runs in this
process at the start-of-transcript position (no-speech probability, languages), and that the returned
log-probabilities are those of the logits the rules left, untempered (forced tokens count 0).
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.assets import JFK_TEXT, jfk_wav
from harness.stack import REPO
from harness.text import wer
from tests.gpu.conftest import missing_route
from whisper_triton.audio import decode_audio
from whisper_triton.decoding import DecodeOptions, WindowJob, decode_windows
from whisper_triton.features import window_features
from whisper_triton.models import read_model_info, resolve_model
from whisper_triton.settings import ModelSettings
from whisper_triton.text import WhisperTokenizer
from whisper_triton.trtllm_torch_engine import TensorRTLLMTorchEngine, create_engine

pytestmark = pytest.mark.gpu

MODEL = "tiny"


@pytest.fixture(scope="module", autouse=True)
def pytorch_route() -> None:
    reason = missing_route("pytorch")
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def engine(engines_root: Path) -> Iterator[tuple[TensorRTLLMTorchEngine, WhisperTokenizer]]:
    root = engines_root / "pytorch-route"
    command = [sys.executable, "-m", "build_engines", "all", "--model", MODEL, "--workdir", str(root),
               "--route", "pytorch"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    resolved = resolve_model(MODEL)
    info = read_model_info(resolved.path)
    tokenizer = WhisperTokenizer(resolved.path / "tokenizer.json", info.multilingual, info.num_languages)
    settings = ModelSettings(engine="tensorrt_llm", trtllm_route="pytorch", trtllm_engine_dir=str(root),
                             trtllm_max_batch_size=16)
    instance = create_engine(settings, resolved, info, tokenizer)
    yield instance, tokenizer
    instance.close()


def jfk_job(n_mels: int, **options: object) -> WindowJob:
    samples = decode_audio(jfk_wav().read_bytes()).samples
    features, frames = window_features(samples, n_mels)
    return WindowJob(features, frames, DecodeOptions(**options))  # type: ignore[arg-type]


def test_transcribes_with_language_timestamps_and_words(
    engine: tuple[TensorRTLLMTorchEngine, WhisperTokenizer],
) -> None:
    instance, tokenizer = engine
    (result,) = decode_windows(instance, tokenizer, [jfk_job(instance.n_mels, word_timestamps=True, logprobs=True)])
    assert result.language == "en" and result.language_probability > 0.5
    assert wer(JFK_TEXT, "".join(s.text for s in result.segments)) < 0.25
    assert all(0 <= s.start < s.end <= 11.01 for s in result.segments)
    words = [w for s in result.segments for w in s.words]
    assert len(words) >= 20 and all(a.start <= b.start for a, b in itertools.pairwise(words))
    assert all(s.no_speech_prob < 0.5 and -1 < s.avg_logprob <= 0 for s in result.segments)
    # Token log-probabilities come from the same alignment pass as the words (the CTranslate2 CUDA aligner).
    assert all("".join(t.token for t in s.logprobs) == s.text and all(t.logprob <= 0 for t in s.logprobs)
               for s in result.segments)


def test_log_probabilities_are_those_the_rules_left_untempered(
    engine: tuple[TensorRTLLMTorchEngine, WhisperTokenizer],
) -> None:
    instance, tokenizer = engine
    encoded = instance.encode(jfk_job(instance.n_mels).features[None])
    prompt = tokenizer.sot_sequence("en", "transcribe")
    greedy = instance.generate(encoded, [prompt], 0.0, 1, 448)[0]
    # A nearly greedy sample gives the same text; untempered log-probabilities then give the same mean.
    cold = instance.generate(encoded, [prompt], 0.01, 1, 448)[0]
    assert cold.tokens == greedy.tokens
    assert cold.avg_logprob == pytest.approx(greedy.avg_logprob, abs=0.02)


def test_a_batch_of_16_windows_decodes_in_flight(engine: tuple[TensorRTLLMTorchEngine, WhisperTokenizer]) -> None:
    instance, tokenizer = engine
    results = decode_windows(instance, tokenizer, [jfk_job(instance.n_mels, language="en")] * 16)
    texts = {"".join(s.text for s in r.segments) for r in results}
    assert len(results) == 16 and all(wer(JFK_TEXT, text) < 0.25 for text in texts)
