"""Resolution of WHISPER_MODEL: embedded models, local directories, Hugging Face conversion."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from whisper_triton import models
from whisper_triton.ctranslate2_engine import CTranslate2Engine
from whisper_triton.models import (
    BASE_SIZE,
    ModelError,
    ModelInfo,
    model_id,
    read_model_info,
    resolve_model,
)


@pytest.fixture(scope="module")
def base_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache holding the assembled 'base' model, shared by the tests that only read it."""
    cache = tmp_path_factory.mktemp("cache")
    resolve_model("base", cache)
    return cache


def test_tiny_en_is_embedded() -> None:
    resolved = resolve_model("tiny.en")
    assert resolved.name == "tiny.en"
    assert (resolved.path / "model.bin").is_file()
    assert (resolved.path / "tokenizer.json").is_file()
    assert resolve_model("  tiny.en ") == resolved


def test_base_is_assembled_once(tmp_path: Path) -> None:
    resolved = resolve_model("base", tmp_path)
    model_bin = resolved.path / "model.bin"

    assert resolved.name == "base"
    assert resolved.path == tmp_path / "embedded" / "base"
    assert model_bin.stat().st_size == BASE_SIZE
    assert {p.name for p in resolved.path.iterdir()} == {
        "model.bin", "config.json", "tokenizer.json", "vocabulary.txt", ".verified",
    }  # fmt: skip
    before = model_bin.stat().st_mtime_ns

    assert resolve_model("base", tmp_path) == resolved
    assert model_bin.stat().st_mtime_ns == before


def test_base_is_reassembled_when_not_verified(tmp_path: Path) -> None:
    resolved = resolve_model("base", tmp_path)
    (resolved.path / ".verified").unlink()
    (resolved.path / "model.bin").write_bytes(b"half written")

    assert resolve_model("base", tmp_path) == resolved
    assert (resolved.path / "model.bin").stat().st_size == BASE_SIZE
    assert (resolved.path / ".verified").is_file()


def test_a_corrupt_base_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "BASE_SHA256", "0" * 64)
    with pytest.raises(ModelError, match="corrupt"):
        resolve_model("base", tmp_path)
    # Nothing half-made is left to be taken for a model later.
    assert list((tmp_path / "embedded" / "base").iterdir()) == []


def test_a_ctranslate2_directory_is_used_as_is(tmp_path: Path) -> None:
    source = resolve_model("tiny.en").path
    local = tmp_path / "my-whisper"
    local.mkdir()
    for file in source.iterdir():
        (local / file.name).symlink_to(file)

    resolved = resolve_model(str(local), tmp_path / "cache")
    assert resolved.path == local.resolve()
    assert resolved.name == "my-whisper"
    assert model_id(str(local)) == "my-whisper"
    assert not (tmp_path / "cache").exists()


def test_a_ctranslate2_directory_needs_a_tokenizer(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"\0")
    with pytest.raises(ModelError, match=r"tokenizer\.json"):
        resolve_model(str(tmp_path), tmp_path / "cache")


def test_a_directory_that_is_no_model_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ModelError, match="neither"):
        resolve_model(str(tmp_path), tmp_path / "cache")


def test_a_checkpoint_without_tokenizer_is_rejected(tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text('{"model_type": "whisper"}')
    with pytest.raises(ModelError, match=r"tokenizer\.json"):
        resolve_model(str(checkpoint), tmp_path / "cache")


@pytest.mark.parametrize("spec", ["no-such-model", "large-v9", "", "   "])
def test_unknown_names_are_rejected(spec: str, tmp_path: Path) -> None:
    with pytest.raises(ModelError):
        resolve_model(spec, tmp_path)


def test_model_ids() -> None:
    assert model_id("large-v3") == "large-v3"
    assert model_id("openai/whisper-small") == "openai/whisper-small"


def test_model_info_of_tiny_en() -> None:
    assert read_model_info(resolve_model("tiny.en").path) == ModelInfo(
        n_mels=80, multilingual=False, num_languages=1
    )


def test_model_info_of_base(base_cache: Path) -> None:
    info = read_model_info(resolve_model("base", base_cache).path)
    assert info == ModelInfo(n_mels=80, multilingual=True, num_languages=99)


def test_model_info_reads_the_mel_count_of_the_preprocessor(tmp_path: Path) -> None:
    shutil.copyfile(resolve_model("tiny.en").path / "tokenizer.json", tmp_path / "tokenizer.json")
    (tmp_path / "preprocessor_config.json").write_text('{"feature_size": 128}')
    assert read_model_info(tmp_path).n_mels == 128


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, base_cache: Path) -> Path:
    """A tiny randomly initialised Hugging Face Whisper with the base model's tokenizer."""
    transformers = pytest.importorskip("transformers")
    config = transformers.WhisperConfig(
        d_model=64,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        vocab_size=51865,
        num_mel_bins=80,
        max_source_positions=1500,
        max_target_positions=448,
    )
    directory = tmp_path_factory.mktemp("hf") / "tiny-random-whisper"
    transformers.WhisperForConditionalGeneration(config).save_pretrained(directory)
    shutil.copyfile(resolve_model("base", base_cache).path / "tokenizer.json", directory / "tokenizer.json")
    return directory


def test_a_hugging_face_checkpoint_is_converted_once(checkpoint: Path, tmp_path: Path) -> None:
    resolved = resolve_model(str(checkpoint), tmp_path)

    assert resolved.name == "tiny-random-whisper"
    assert resolved.path.parent == tmp_path / "converted"
    assert resolved.path.name.startswith("tiny-random-whisper-")
    model_bin = resolved.path / "model.bin"
    assert model_bin.is_file()
    assert (resolved.path / "tokenizer.json").read_bytes() == (checkpoint / "tokenizer.json").read_bytes()
    # No staging directory is left behind.
    assert [p.name for p in (tmp_path / "converted").iterdir()] == [resolved.path.name]
    before = model_bin.stat().st_mtime_ns

    assert resolve_model(str(checkpoint), tmp_path) == resolved
    assert model_bin.stat().st_mtime_ns == before

    engine = CTranslate2Engine(resolved.path)
    assert (engine.n_mels, engine.is_multilingual, engine.num_languages) == (80, True, 99)
    assert read_model_info(resolved.path) == ModelInfo(n_mels=80, multilingual=True, num_languages=99)
