"""`python -m build_engines build`: golden trtllm-build command lines, idempotent and resumable steps, and
clear errors without the tool or a GPU. A fake `trtllm-build` and `nvidia-smi` on PATH stand in for the real ones.
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from build_engines.__main__ import checkpoint_source, engine_subdir, main
from build_engines.build import (
    MANIFEST,
    BuildError,
    BuildOptions,
    build_engines,
    decoder_command,
    encoder_command,
)

CK = Path("/work/checkpoint")
OUT = Path("/engines/large-v3-turbo")

FAKE_TRTLLM_BUILD = """#!{python}
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
with open(os.environ["FAKE_TRTLLM_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
checkpoint = Path(args[args.index("--checkpoint_dir") + 1])
if os.environ.get("FAKE_TRTLLM_FAIL") == checkpoint.name:
    print("[TRT-LLM] [E] out of memory", file=sys.stderr)
    sys.exit(3)
out = Path(args[args.index("--output_dir") + 1])
# Like trtllm-build (TensorRT-LLM 1.0, commands/build.py): the timing cache goes to --output_timing_cache,
# default model.cache in the working directory, and is written before the engine is saved.
cache = Path(dict(zip(args[::2], args[1::2])).get("--output_timing_cache", "model.cache")).resolve()
readonly = os.environ.get("FAKE_TRTLLM_READONLY")  # tests run as root: a folder marked unwritable
if readonly and cache.is_relative_to(Path(readonly).resolve()):
    print(f"PermissionError: [Errno 13] Permission denied: '{{cache}}'", file=sys.stderr)
    sys.exit(1)
cache.write_bytes(b"timing")
out.mkdir(parents=True, exist_ok=True)
pretrained = json.loads((checkpoint / "config.json").read_text())
flags = dict(zip(args[::2], args[1::2]))
build = {{key[2:]: int(value) for key, value in flags.items() if key.startswith("--max_") and value.isdigit()}}
(out / "config.json").write_text(json.dumps({{"pretrained_config": pretrained, "build_config": build}}))
(out / "rank0.engine").write_bytes(b"engine")
"""

FAKE_NVIDIA_SMI = """#!/bin/sh
if [ -n "$FAKE_SMI_FAIL" ]; then
  echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver." >&2
  exit 9
fi
echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1234)"
"""


def fp16(**changes: object) -> BuildOptions:
    return BuildOptions(**{"max_batch_size": 64, "max_beam_width": 4, "dtype": "float16", **changes})  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# Golden command lines


def test_encoder_command_float16() -> None:
    assert encoder_command(CK, OUT / "encoder", fp16()) == [
        "trtllm-build",
        "--checkpoint_dir", "/work/checkpoint/encoder",
        "--output_dir", "/engines/large-v3-turbo/encoder",
        "--input_timing_cache", "/engines/large-v3-turbo/trtllm-timing.cache",
        "--output_timing_cache", "/engines/large-v3-turbo/trtllm-timing.cache",
        "--moe_plugin", "disable",
        "--max_batch_size", "64",
        "--gemm_plugin", "disable",
        "--bert_attention_plugin", "float16",
        "--max_input_len", "3000",
        "--max_seq_len", "3000",
        "--max_num_tokens", "192000",
    ]  # fmt: skip


def test_decoder_command_float16_beam_4() -> None:
    assert decoder_command(CK, OUT / "decoder", fp16()) == [
        "trtllm-build",
        "--checkpoint_dir", "/work/checkpoint/decoder",
        "--output_dir", "/engines/large-v3-turbo/decoder",
        "--input_timing_cache", "/engines/large-v3-turbo/trtllm-timing.cache",
        "--output_timing_cache", "/engines/large-v3-turbo/trtllm-timing.cache",
        "--moe_plugin", "disable",
        "--max_beam_width", "4",
        "--max_batch_size", "64",
        "--max_seq_len", "448",
        "--max_input_len", "225",
        "--max_encoder_input_len", "3000",
        "--gemm_plugin", "float16",
        "--bert_attention_plugin", "float16",
        "--gpt_attention_plugin", "float16",
        "--kv_cache_type", "paged",
        "--remove_input_padding", "enable",
    ]  # fmt: skip


def test_the_timing_cache_is_written_beside_the_engines_not_in_the_working_directory() -> None:
    # trtllm-build's default, model.cache in the working directory, is not writable in the GPU image.
    for command in (encoder_command, decoder_command):
        cache = flags(command(CK, OUT / ".encoder.partial", fp16()))
        assert cache["--output_timing_cache"] == cache["--input_timing_cache"] == str(OUT / "trtllm-timing.cache")


def flags(argv: list[str]) -> dict[str, str]:
    return dict(zip(argv[1::2], argv[2::2], strict=True))


def test_bfloat16_sets_every_plugin() -> None:
    options = fp16(dtype="bfloat16", max_batch_size=16, max_beam_width=1)
    encoder = flags(encoder_command(CK, OUT / "encoder", options))
    assert (encoder["--bert_attention_plugin"], encoder["--gemm_plugin"], encoder["--max_batch_size"]) == (
        "bfloat16", "disable", "16")
    assert encoder["--max_num_tokens"] == str(16 * 3000)  # every window of a full batch in one pass
    decoder = flags(decoder_command(CK, OUT / "decoder", options))
    assert [decoder[f"--{name}_plugin"] for name in ("gemm", "bert_attention", "gpt_attention")] == ["bfloat16"] * 3
    assert (decoder["--max_beam_width"], decoder["--max_batch_size"]) == ("1", "16")


@pytest.mark.parametrize("beam", [1, 2, 5])
def test_beam_width_only_changes_the_decoder(beam: int) -> None:
    assert encoder_command(CK, OUT, fp16(max_beam_width=beam)) == encoder_command(CK, OUT, fp16())
    assert flags(decoder_command(CK, OUT, fp16(max_beam_width=beam)))["--max_beam_width"] == str(beam)


@pytest.mark.parametrize("option", [{"dtype": "float32"}, {"weight_only": "int2"}, {"max_batch_size": 0}])
def test_bad_options_are_refused(option: dict[str, object]) -> None:
    with pytest.raises(BuildError):
        fp16(**option).validate()


# --------------------------------------------------------------------------------------------------
# Runs with a fake trtllm-build and nvidia-smi


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH holding only the fake tools, and a `tensorrt_llm` package with its `builder` module (what the engine
    route needs: trtllm-build and tensorrt_llm.builder); returns the log of trtllm-build's command lines."""
    package = tmp_path / "site" / "tensorrt_llm"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "builder.py").write_text("")
    monkeypatch.syspath_prepend(str(package.parent))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "trtllm-build").write_text(FAKE_TRTLLM_BUILD.format(python=sys.executable))
    (bin_dir / "nvidia-smi").write_text(FAKE_NVIDIA_SMI)
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/bin{os.pathsep}/usr/bin")
    log = tmp_path / "trtllm-build.log"
    monkeypatch.setenv("FAKE_TRTLLM_LOG", str(log))
    return log


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def parts(log: Path) -> list[str]:
    return [Path(args[args.index("--checkpoint_dir") + 1]).name for args in calls(log)]


def checkpoint(root: Path, dtype: str = "float16", quant_algo: str | None = None) -> Path:
    """A small TensorRT-LLM Whisper checkpoint: the files `convert` writes."""
    for part in ("encoder", "decoder"):
        folder = root / part
        folder.mkdir(parents=True, exist_ok=True)
        config = {"architecture": "WhisperEncoder" if part == "encoder" else "DecoderModel", "dtype": dtype,
                  "n_mels": 128, "vocab_size": 51866, "quantization": {"quant_algo": quant_algo}}
        (folder / "config.json").write_text(json.dumps(config))
        weights = {"transformer.layers.0.attention.qkv.weight": torch.ones(6, 4, dtype=torch.float16),
                   "transformer.ln_f.weight": torch.ones(4, dtype=torch.float16)}
        save_file(weights, str(folder / "rank0.safetensors"))
    return root


def test_build_writes_both_engines_and_a_manifest(tools: Path, tmp_path: Path) -> None:
    messages: list[str] = []
    out = build_engines(checkpoint(tmp_path / "ck"), tmp_path / "out", fp16(), progress=messages.append)
    assert parts(tools) == ["encoder", "decoder"]
    for part in ("encoder", "decoder"):
        config = json.loads((out / part / "config.json").read_text())
        assert (out / part / "rank0.engine").is_file()
        assert config["build_config"]["max_batch_size"] == 64
    assert json.loads((out / "decoder" / "config.json").read_text())["build_config"]["max_seq_len"] == 448
    manifest = json.loads((out / MANIFEST).read_text())
    assert set(manifest["steps"]) == {"encoder", "decoder"}
    assert not [p for p in out.iterdir() if p.name.endswith(".partial")]
    assert any("NVIDIA H100 80GB HBM3" in m for m in messages)
    # trtllm-build wrote into a hidden partial directory, renamed into place afterwards
    assert calls(tools)[0][calls(tools)[0].index("--output_dir") + 1] == str(out / ".encoder.partial")


def test_a_working_directory_the_builder_cannot_write_does_not_stop_the_build(
    tools: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GPU image runs as user 10001 in a WORKDIR it cannot write; trtllm-build's default timing cache
    (model.cache there) made every build fail with PermissionError."""
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("FAKE_TRTLLM_READONLY", str(workdir))
    out = build_engines(checkpoint(tmp_path / "ck"), tmp_path / "out", fp16(), progress=lambda _: None)
    assert (out / "encoder" / "rank0.engine").is_file() and (out / "decoder" / "rank0.engine").is_file()
    assert (tmp_path / "out" / "trtllm-timing.cache").is_file() and not list(workdir.iterdir())


def test_a_second_run_builds_nothing(tools: Path, tmp_path: Path) -> None:
    ck = checkpoint(tmp_path / "ck")
    build_engines(ck, tmp_path / "out", fp16())
    messages: list[str] = []
    build_engines(ck, tmp_path / "out", fp16(), progress=messages.append)
    assert parts(tools) == ["encoder", "decoder"]
    assert sum("up to date" in m for m in messages) == 2


def test_changed_options_or_checkpoint_rebuild_what_they_touch(tools: Path, tmp_path: Path) -> None:
    ck = checkpoint(tmp_path / "ck")
    build_engines(ck, tmp_path / "out", fp16())
    build_engines(ck, tmp_path / "out", fp16(max_beam_width=2))  # the encoder does not depend on beams
    assert parts(tools) == ["encoder", "decoder", "decoder"]
    (ck / "encoder" / "config.json").write_text((ck / "encoder" / "config.json").read_text() + " ")
    build_engines(ck, tmp_path / "out", fp16(max_beam_width=2))
    assert parts(tools) == ["encoder", "decoder", "decoder", "encoder"]


def test_a_failed_decoder_build_resumes_after_the_encoder(
    tools: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ck = checkpoint(tmp_path / "ck")
    monkeypatch.setenv("FAKE_TRTLLM_FAIL", "decoder")
    with pytest.raises(BuildError, match=r"trtllm-build failed for the decoder \(exit code 3\)"):
        build_engines(ck, tmp_path / "out", fp16())
    out = tmp_path / "out"
    assert (out / "encoder" / "rank0.engine").is_file() and not (out / "decoder").exists()
    assert not (out / ".decoder.partial").exists()
    monkeypatch.delenv("FAKE_TRTLLM_FAIL")
    build_engines(ck, out, fp16())
    assert parts(tools) == ["encoder", "decoder", "decoder"]


def test_an_interrupted_build_leaves_no_engine_behind(tools: Path, tmp_path: Path) -> None:
    ck = checkpoint(tmp_path / "ck")
    out = tmp_path / "out"
    (out / ".encoder.partial").mkdir(parents=True)  # a build killed half-way
    (out / ".encoder.partial" / "config.json").write_text("{}")
    build_engines(ck, out, fp16())
    assert parts(tools) == ["encoder", "decoder"] and not (out / ".encoder.partial").exists()


def test_weight_only_quantizes_the_checkpoint_first(
    tools: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []

    def weight_only_quantize_dict(weights: dict[str, torch.Tensor], quant_algo: str,
                                  plugin: bool = True) -> dict[str, torch.Tensor]:
        seen.append(quant_algo)
        assert plugin
        name = "transformer.layers.0.attention.qkv.weight"
        weights[name.replace(".weight", ".per_channel_scale")] = torch.ones(6, dtype=torch.float16)
        weights[name] = weights[name].to(torch.int8)
        return weights

    convert_utils = types.ModuleType("tensorrt_llm.models.convert_utils")
    convert_utils.weight_only_quantize_dict = weight_only_quantize_dict  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt_llm", types.ModuleType("tensorrt_llm"))
    monkeypatch.setitem(sys.modules, "tensorrt_llm.models", types.ModuleType("tensorrt_llm.models"))
    monkeypatch.setitem(sys.modules, "tensorrt_llm.models.convert_utils", convert_utils)
    ck = checkpoint(tmp_path / "ck")
    out = build_engines(ck, tmp_path / "out", fp16(weight_only="int8"))
    assert seen == ["W8A16", "W8A16"]
    quantized = out / "checkpoint-int8"
    assert json.loads((quantized / "decoder" / "config.json").read_text())["quantization"]["quant_algo"] == "W8A16"
    assert load_file(str(quantized / "encoder" / "rank0.safetensors"))[
        "transformer.layers.0.attention.qkv.weight"].dtype == torch.int8
    assert [args[args.index("--checkpoint_dir") + 1] for args in calls(tools)] == [
        str(quantized / "encoder"), str(quantized / "decoder")]
    build_engines(ck, tmp_path / "out", fp16(weight_only="int8"))
    assert seen == ["W8A16", "W8A16"] and len(calls(tools)) == 2
    build_engines(ck, tmp_path / "int4", fp16(weight_only="int4"))
    assert seen[-2:] == ["W4A16", "W4A16"]


def test_a_checkpoint_quantized_at_conversion_is_used_as_is(tools: Path, tmp_path: Path) -> None:
    ck = checkpoint(tmp_path / "ck", quant_algo="W4A16")
    build_engines(ck, tmp_path / "out", fp16(weight_only="int4"))
    assert [Path(a[a.index("--checkpoint_dir") + 1]).parent for a in calls(tools)] == [ck, ck]
    with pytest.raises(BuildError, match="already quantized"):
        build_engines(ck, tmp_path / "out", fp16(weight_only="int8"))


def test_dtype_must_match_the_checkpoint(tools: Path, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="the checkpoint is bfloat16 but --dtype is float16"):
        build_engines(checkpoint(tmp_path / "ck", dtype="bfloat16"), tmp_path / "out", fp16())


# --------------------------------------------------------------------------------------------------
# Clear errors


def test_missing_trtllm_build_is_named(tools: Path, tmp_path: Path) -> None:
    (tools.parent / "bin" / "trtllm-build").unlink()
    with pytest.raises(BuildError, match=r"trtllm-build is not on PATH.*tritonserver:<yy.mm>-trtllm-python-py3"):
        build_engines(checkpoint(tmp_path / "ck"), tmp_path / "out", fp16())


def test_missing_gpu_is_named(tools: Path, tmp_path: Path) -> None:
    (tools.parent / "bin" / "nvidia-smi").unlink()
    with pytest.raises(BuildError, match="No NVIDIA GPU: nvidia-smi is not on PATH"):
        build_engines(checkpoint(tmp_path / "ck"), tmp_path / "out", fp16())
    assert calls(tools) == []


def test_a_gpu_without_a_driver_is_named(tools: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SMI_FAIL", "1")
    with pytest.raises(BuildError, match="couldn't communicate with the NVIDIA driver"):
        build_engines(checkpoint(tmp_path / "ck"), tmp_path / "out", fp16())


def test_a_directory_that_is_not_a_checkpoint_is_named(tools: Path, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"not a TensorRT-LLM Whisper checkpoint.*build_engines convert"):
        build_engines(tmp_path, tmp_path / "out", fp16())


def test_the_cli_reports_errors_without_a_traceback(
    tools: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tools.parent / "bin" / "nvidia-smi").unlink()
    code = main(["build", "--checkpoint", str(checkpoint(tmp_path / "ck")), "--output", str(tmp_path / "out")])
    assert code == 2
    assert capsys.readouterr().err.startswith("error: No NVIDIA GPU")


def test_the_cli_builds_with_the_checkpoint_dtype(tools: Path, tmp_path: Path) -> None:
    ck = checkpoint(tmp_path / "ck", dtype="bfloat16")
    assert main(["build", "--checkpoint", str(ck), "--output", str(tmp_path / "out"), "--max-batch-size", "8",
                 "--max-beam-width", "1"]) == 0
    encoder, decoder = calls(tools)
    assert encoder[encoder.index("--bert_attention_plugin") + 1] == "bfloat16"
    assert decoder[decoder.index("--max_batch_size") + 1] == "8"


# --------------------------------------------------------------------------------------------------
# convert + build + render in one go


def test_model_names_map_to_hugging_face_checkpoints() -> None:
    assert checkpoint_source("large-v3-turbo") == "openai/whisper-large-v3-turbo"
    assert checkpoint_source("tiny") == "openai/whisper-tiny"
    assert checkpoint_source("distil-large-v3") == "distil-whisper/distil-large-v3"
    assert checkpoint_source("someone/whisper-fine-tune") == "someone/whisper-fine-tune"
    assert checkpoint_source("/models/large-v3.pt") == "/models/large-v3.pt"
    assert engine_subdir("large-v3-turbo") == "large-v3-turbo"


def test_all_converts_builds_and_renders(tools: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import build_engines.convert as convert

    converted: list[tuple[str, Path, str]] = []

    def convert_checkpoint(source: str, output: Path, dtype: str = "float16", progress: object = print) -> Path:
        converted.append((source, output, dtype))
        return output if output.exists() else checkpoint(output, dtype)  # skips when done, as the real one

    monkeypatch.setattr(convert, "convert_checkpoint", convert_checkpoint)
    workdir = tmp_path / "engines"
    assert main(["all", "--model", "tiny.en", "--workdir", str(workdir), "--max-batch-size", "16",
                 "--instances", "2"]) == 0
    assert converted[0] == ("openai/whisper-tiny.en", workdir / "tiny.en" / "checkpoint", "float16")
    assert (workdir / "tiny.en" / "decoder" / "rank0.engine").is_file()
    config = (workdir / "model_repository" / "whisper_engine" / "config.pbtxt").read_text()
    assert 'WHISPER_ENGINE_MAX_BATCH" value { string_value: "16"' in config and "count: 2 kind: KIND_GPU" in config
    assert f'string_value: "{workdir}"' in config
    environment = (workdir / "model_repository" / "serve.env").read_text()
    assert "WHISPER_MODELS=tiny.en\n" in environment and "WHISPER_ENGINE=tensorrt_llm\n" in environment
    assert main(["all", "--model", "tiny.en", "--workdir", str(workdir), "--max-batch-size", "16"]) == 0
    assert parts(tools) == ["encoder", "decoder"]  # the second run rebuilt nothing
