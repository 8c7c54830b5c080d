"""Whisper -> TensorRT-LLM checkpoint conversion.

The converted tensors are rebuilt into plain PyTorch forward passes, following TensorRT-LLM's Whisper encoder and
decoder (fused [query; key; value] rows, pre-layernorm blocks, tied lm_head), and must reproduce a small random
Hugging Face Whisper model. An OpenAI `.pt` of the same weights must convert to the same tensors.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import load_file
from transformers import WhisperForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput

from build_engines.checkpoint_layout import num_languages
from build_engines.convert import MANIFEST, ConversionError, convert_checkpoint
from harness.trtllm_reference import HEADS, LAYERS, WIDTH, Weights, random_whisper, trtllm_decoder, trtllm_encoder


@dataclass
class Converted:
    model: WhisperForConditionalGeneration
    hf_dir: Path
    output: Path
    messages: list[str]
    loaded: dict[str, Weights] = field(default_factory=dict)

    def weights(self, part: str) -> Weights:
        if part not in self.loaded:
            self.loaded[part] = load_file(self.output / part / "rank0.safetensors")
        return self.loaded[part]

    def config(self, part: str) -> dict[str, object]:
        return dict(json.loads((self.output / part / "config.json").read_text()))


@pytest.fixture(scope="module", params=[(51865, 80), (51864, 128)], ids=["multilingual-80mel", "english-128mel"])
def converted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Converted:
    model = random_whisper(*request.param)
    root = tmp_path_factory.mktemp("convert")
    model.save_pretrained(root / "hf")
    messages: list[str] = []
    output = convert_checkpoint(str(root / "hf"), root / "trtllm", "float32", messages.append)
    return Converted(model, root / "hf", output, messages)


# --- the converted checkpoint computes what the Hugging Face model computes ----------------------------------------


def test_the_encoder_reproduces_the_hugging_face_encoder(converted: Converted) -> None:
    n_mels = converted.model.config.num_mel_bins
    mel = torch.randn(1, n_mels, 3000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = converted.model.model.encoder(mel).last_hidden_state
        actual = trtllm_encoder(converted.weights("encoder"), converted.config("encoder"), mel)
    assert actual.shape == (1, 1500, WIDTH)
    torch.testing.assert_close(actual, expected, atol=2e-4, rtol=1e-4)


def test_the_decoder_reproduces_the_hugging_face_logits(converted: Converted) -> None:
    generator = torch.Generator().manual_seed(2)
    audio = torch.randn(2, 40, WIDTH, generator=generator)
    ids = torch.randint(0, converted.model.config.vocab_size, (2, 7), generator=generator)
    with torch.no_grad():
        expected = converted.model(encoder_outputs=BaseModelOutput(last_hidden_state=audio), decoder_input_ids=ids)
        actual = trtllm_decoder(converted.weights("decoder"), converted.config("decoder"), ids, audio)
    assert actual.shape == (2, 7, converted.model.config.vocab_size)
    torch.testing.assert_close(actual, expected.logits, atol=2e-4, rtol=1e-4)


def test_fused_qkv_biases_carry_a_zero_key_bias(converted: Converted) -> None:
    hf = converted.model.state_dict()
    decoder_attentions = {"self_attention": "self_attn", "cross_attention": "encoder_attn"}
    for part, attentions in (("encoder", {"attention": "self_attn"}), ("decoder", decoder_attentions)):
        weights = converted.weights(part)
        for i in range(LAYERS):
            for trt_name, hf_name in attentions.items():
                bias = weights[f"transformer.layers.{i}.{trt_name}.qkv.bias"]
                assert bias.shape == (3 * WIDTH,)
                hf_prefix = f"model.{part}.layers.{i}.{hf_name}"
                torch.testing.assert_close(bias[:WIDTH], hf[f"{hf_prefix}.q_proj.bias"], rtol=0, atol=0)
                assert not bias[WIDTH : 2 * WIDTH].any()
                torch.testing.assert_close(bias[2 * WIDTH :], hf[f"{hf_prefix}.v_proj.bias"], rtol=0, atol=0)


def test_lm_head_is_the_token_embedding_and_encoder_positions_are_sinusoids(converted: Converted) -> None:
    decoder, encoder = converted.weights("decoder"), converted.weights("encoder")
    torch.testing.assert_close(decoder["lm_head.weight"], decoder["transformer.vocab_embedding.weight"])
    hf_positions = converted.model.model.encoder.embed_positions.weight
    torch.testing.assert_close(encoder["transformer.position_embedding.weight"], hf_positions, rtol=0, atol=1e-6)
    assert encoder["transformer.conv1.weight"].shape == (WIDTH, converted.model.config.num_mel_bins, 3, 1)


def test_configs_carry_tensorrt_llm_fields(converted: Converted) -> None:
    config = converted.model.config
    assert converted.config("encoder") == {
        "architecture": "WhisperEncoder", "dtype": "float32", "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "hidden_size": WIDTH, "max_position_embeddings": 1500,
        "has_position_embedding": True, "n_mels": config.num_mel_bins, "vocab_size": config.vocab_size,
        "hidden_act": "gelu", "num_languages": 99, "quantization": {"quant_algo": None},
    }  # fmt: skip
    assert converted.config("decoder") == {
        "architecture": "DecoderModel", "dtype": "float32", "logits_dtype": "float32", "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "hidden_size": WIDTH, "norm_epsilon": 1e-5, "vocab_size": config.vocab_size,
        "hidden_act": "gelu", "use_parallel_embedding": False, "embedding_sharding_dim": 0,
        "max_position_embeddings": 448, "use_prompt_tuning": False, "head_size": WIDTH // HEADS,
        "has_position_embedding": True, "layernorm_type": 0, "has_attention_qkvo_bias": True, "has_mlp_bias": True,
        "has_model_final_layernorm": True, "has_embedding_layernorm": False, "has_embedding_scale": False,
        "ffn_hidden_size": 4 * WIDTH, "q_scaling": 1.0, "layernorm_position": 0, "relative_attention": False,
        "max_distance": 0, "num_buckets": 0, "model_type": "whisper", "rescale_before_lm_head": False,
        "encoder_hidden_size": WIDTH, "encoder_num_heads": HEADS, "encoder_head_size": None, "skip_cross_kv": False,
        "quantization": {"quant_algo": None},
    }  # fmt: skip
    assert any("Converting the encoder" in line for line in converted.messages)


@pytest.mark.parametrize(("vocab_size", "languages"), [(51864, 99), (51865, 99), (51866, 100)])
def test_the_number_of_languages_follows_the_vocabulary(vocab_size: int, languages: int) -> None:
    assert num_languages(vocab_size) == languages


# --- OpenAI .pt sources --------------------------------------------------------------------------------------------

_OPENAI_LAYER_PARTS = [
    ("self_attn.q_proj", "attn.query"), ("self_attn.k_proj", "attn.key"), ("self_attn.v_proj", "attn.value"),
    ("self_attn.out_proj", "attn.out"), ("self_attn_layer_norm", "attn_ln"),
    ("encoder_attn.q_proj", "cross_attn.query"), ("encoder_attn.k_proj", "cross_attn.key"),
    ("encoder_attn.v_proj", "cross_attn.value"),
    ("encoder_attn.out_proj", "cross_attn.out"), ("encoder_attn_layer_norm", "cross_attn_ln"),
    ("fc1", "mlp.0"), ("fc2", "mlp.2"), ("final_layer_norm", "mlp_ln"),
]  # fmt: skip
_OPENAI_TOP = {
    "encoder.embed_positions.weight": "encoder.positional_embedding", "encoder.layer_norm": "encoder.ln_post",
    "decoder.embed_tokens": "decoder.token_embedding", "decoder.embed_positions.weight": "decoder.positional_embedding",
    "decoder.layer_norm": "decoder.ln", "encoder.conv1": "encoder.conv1", "encoder.conv2": "encoder.conv2",
}  # fmt: skip


def openai_checkpoint(model: WhisperForConditionalGeneration) -> dict[str, Any]:
    """The model as openai-whisper saves it: `dims` and `model_state_dict` in OpenAI's names."""
    state = {}
    for name, tensor in model.state_dict().items():
        name = name.removeprefix("model.")
        for hf, openai in _OPENAI_TOP.items():
            if name.startswith(hf):
                state[openai + name.removeprefix(hf)] = tensor.clone()
        side, _, rest = name.partition(".layers.")
        if rest:
            index, _, tail = rest.partition(".")
            for hf, openai in _OPENAI_LAYER_PARTS:
                if tail.startswith(hf + "."):
                    state[f"{side}.blocks.{index}.{openai}{tail.removeprefix(hf)}"] = tensor.clone()
    config = model.config
    dims = {
        "n_mels": config.num_mel_bins, "n_vocab": config.vocab_size, "n_audio_ctx": config.max_source_positions,
        "n_audio_state": config.d_model, "n_audio_head": config.encoder_attention_heads,
        "n_audio_layer": config.encoder_layers, "n_text_ctx": config.max_target_positions,
        "n_text_state": config.d_model, "n_text_head": config.decoder_attention_heads,
        "n_text_layer": config.decoder_layers,
    }  # fmt: skip
    return {"dims": dims, "model_state_dict": state}


@pytest.fixture(scope="module")
def openai_pt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, WhisperForConditionalGeneration]]:
    model = random_whisper(51866, 128)
    path = tmp_path_factory.mktemp("openai") / "large-v3-like.pt"
    torch.save(openai_checkpoint(model), path)
    yield path, model


def test_an_openai_checkpoint_converts_to_the_same_tensors(converted: Converted, tmp_path: Path) -> None:
    pt = tmp_path / "model.pt"
    checkpoint = openai_checkpoint(converted.model)
    assert len(checkpoint["model_state_dict"]) == len(converted.model.state_dict()) - 1  # all but proj_out (tied)
    torch.save(checkpoint, pt)
    output = convert_checkpoint(str(pt), tmp_path / "out", "float32", progress=lambda line: None)
    for part in ("encoder", "decoder"):
        assert json.loads((output / part / "config.json").read_text()) == converted.config(part)
        ours, reference = load_file(output / part / "rank0.safetensors"), converted.weights(part)
        assert ours.keys() == reference.keys()
        for name, tensor in reference.items():
            torch.testing.assert_close(ours[name], tensor, rtol=0, atol=0, msg=name)


def test_a_large_v3_vocabulary_has_100_languages(openai_pt: tuple[Path, object], tmp_path: Path) -> None:
    output = convert_checkpoint(str(openai_pt[0]), tmp_path / "out", "float32", progress=lambda line: None)
    config = json.loads((output / "encoder" / "config.json").read_text())
    assert (config["num_languages"], config["n_mels"], config["vocab_size"]) == (100, 128, 51866)


# --- reruns, dtypes, interruptions ----------------------------------------------------------------------------------


def _mtimes(output: Path) -> dict[str, int]:
    return {str(path.relative_to(output)): path.stat().st_mtime_ns for path in output.rglob("*") if path.is_file()}


def test_a_second_run_with_the_same_inputs_skips(openai_pt: tuple[Path, object], tmp_path: Path) -> None:
    output = convert_checkpoint(str(openai_pt[0]), tmp_path / "out", "float32", progress=lambda line: None)
    before = _mtimes(output)
    assert set(before) == {MANIFEST, "encoder/config.json", "encoder/rank0.safetensors", "decoder/config.json",
                           "decoder/rank0.safetensors"}  # fmt: skip
    messages: list[str] = []
    assert convert_checkpoint(str(openai_pt[0]), output, "float32", messages.append) == output
    assert any("skipping" in line for line in messages)
    assert not any("Converting" in line for line in messages)
    assert _mtimes(output) == before


@pytest.mark.parametrize(("dtype", "torch_dtype"), [("float16", torch.float16), ("bfloat16", torch.bfloat16)])
def test_another_dtype_converts_again(
    openai_pt: tuple[Path, WhisperForConditionalGeneration], tmp_path: Path, dtype: str, torch_dtype: torch.dtype
) -> None:
    output = convert_checkpoint(str(openai_pt[0]), tmp_path / "out", "float32", progress=lambda line: None)
    messages: list[str] = []
    convert_checkpoint(str(openai_pt[0]), output, dtype, messages.append)
    assert any("Converting the decoder" in line for line in messages)
    for part in ("encoder", "decoder"):
        assert json.loads((output / part / "config.json").read_text())["dtype"] == dtype
        assert {tensor.dtype for tensor in load_file(output / part / "rank0.safetensors").values()} == {torch_dtype}
    assert json.loads((output / MANIFEST).read_text())["inputs"]["dtype"] == dtype
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]


def test_an_interrupted_run_leaves_no_output_and_the_next_run_completes(
    openai_pt: tuple[Path, object], tmp_path: Path
) -> None:
    class Interrupted(Exception):
        pass

    def interrupt(line: str) -> None:
        if "Converting the decoder" in line:
            raise Interrupted

    with pytest.raises(Interrupted):
        convert_checkpoint(str(openai_pt[0]), tmp_path / "out", "float32", interrupt)
    assert not (tmp_path / "out").exists()
    assert (tmp_path / ".out.partial" / "encoder" / "rank0.safetensors").is_file()
    messages: list[str] = []
    output = convert_checkpoint(str(openai_pt[0]), tmp_path / "out", "float32", messages.append)
    assert (output / "decoder" / "rank0.safetensors").is_file()
    assert not (tmp_path / ".out.partial").exists()
    assert any("Wrote" in line for line in messages)


# --- bad input ------------------------------------------------------------------------------------------------------


def test_bad_dtypes_are_refused(openai_pt: tuple[Path, object], tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match=r"unknown dtype 'int8'.*float16, bfloat16, float32"):
        convert_checkpoint(str(openai_pt[0]), tmp_path / "out", "int8")
    with pytest.raises(ConversionError, match="unknown logits dtype"):
        convert_checkpoint(str(openai_pt[0]), tmp_path / "out", "float16", logits_dtype="bfloat16")
    assert not (tmp_path / "out").exists()


def test_a_missing_source_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="not found"):
        convert_checkpoint(str(tmp_path / "nowhere" / "model.pt"), tmp_path / "out")
    with pytest.raises(ConversionError, match="not found"):
        convert_checkpoint(str(tmp_path / "missing-dir"), tmp_path / "out")


def test_a_non_whisper_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConversionError, match="'bert' checkpoint, not Whisper"):
        convert_checkpoint(str(tmp_path / "bert"), tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConversionError, match=r"no config\.json"):
        convert_checkpoint(str(tmp_path / "empty"), tmp_path / "out")


def test_a_non_whisper_pt_file_is_refused(tmp_path: Path) -> None:
    torch.save({"state_dict": {"weight": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(ConversionError, match="not an OpenAI Whisper checkpoint"):
        convert_checkpoint(str(tmp_path / "other.pt"), tmp_path / "out")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ConversionError, match="not a readable OpenAI Whisper checkpoint"):
        convert_checkpoint(str(tmp_path / "text.pt"), tmp_path / "out")


def test_tensors_unlike_the_dimensions_are_refused(
    openai_pt: tuple[Path, WhisperForConditionalGeneration], tmp_path: Path
) -> None:
    checkpoint = openai_checkpoint(openai_pt[1])
    checkpoint["dims"] = {**checkpoint["dims"], "n_audio_layer": 3, "n_mels": 80}
    torch.save(checkpoint, tmp_path / "bad.pt")
    shape_problem = r"encoder\.conv1\.weight has shape \(64, 128, 3\), expected \(64, 80, 3\)"
    with pytest.raises(ConversionError, match=shape_problem):
        convert_checkpoint(str(tmp_path / "bad.pt"), tmp_path / "out")
    with pytest.raises(ConversionError, match=r"encoder\.blocks\.2\.attn\.key\.weight is missing"):
        convert_checkpoint(str(tmp_path / "bad.pt"), tmp_path / "out")


def test_an_output_the_converter_did_not_write_is_left_alone(openai_pt: tuple[Path, object], tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(ConversionError, match="not written by this converter"):
        convert_checkpoint(str(openai_pt[0]), tmp_path / "out", "float32", progress=lambda line: None)
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_an_unreachable_hub_id_fails_clearly_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConversionError, match=r"cannot load 'example-org/no-such-whisper' from the Hugging Face hub"):
        convert_checkpoint("example-org/no-such-whisper", tmp_path / "out", progress=lambda line: None)


@pytest.mark.parametrize(("version", "keyword"), [("4.55.4", "torch_dtype"), ("4.56.0", "dtype"), ("5.17.0", "dtype"),
                                                  ("4.53.1", "torch_dtype"), ("not-a-version", "dtype")])
def test_the_dtype_keyword_matches_the_transformers_version(version: str, keyword: str) -> None:
    # transformers before 4.56 (NVIDIA's TensorRT-LLM images) passes `dtype=` on to the model constructor:
    # TypeError, and `build_engines all` ended in a traceback.
    from build_engines.checkpoint_sources import dtype_keyword

    assert dtype_keyword(version) == keyword


def test_the_old_from_pretrained_signature_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers before 4.56 takes `torch_dtype`; an unknown `dtype` goes on to the model constructor,
    which raises TypeError (that `build_engines all` did not catch)."""
    import transformers
    from transformers import WhisperForConditionalGeneration as Whisper

    real = Whisper.from_pretrained.__func__  # type: ignore[attr-defined]

    def old_signature(cls: type, source: str, *args: Any, torch_dtype: Any = None, **kwargs: Any) -> Any:
        if "dtype" in kwargs:
            raise TypeError("WhisperForConditionalGeneration.__init__() got an unexpected keyword argument 'dtype'")
        return real(cls, source, *args, dtype=torch_dtype, **kwargs)

    hf_dir = tmp_path / "hf"
    random_whisper(51865, 80).save_pretrained(hf_dir)
    monkeypatch.setattr(Whisper, "from_pretrained", classmethod(old_signature))
    monkeypatch.setattr(transformers, "__version__", "4.55.4")
    output = convert_checkpoint(str(hf_dir), tmp_path / "out", "float32", lambda _: None)
    assert (output / "encoder" / "config.json").is_file()
    # Any TypeError of the loader is a clear conversion error, not a traceback.
    monkeypatch.setattr(transformers, "__version__", "4.56.0")
    with pytest.raises(ConversionError, match="unexpected keyword"):
        convert_checkpoint(str(hf_dir), tmp_path / "again", "float32", lambda _: None)
