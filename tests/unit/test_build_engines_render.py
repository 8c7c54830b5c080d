"""`python -m build_engines render`: the GPU model repository, golden, with no `${...}` left."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from build_engines.__main__ import main
from build_engines.build import BuildError
from build_engines.render import (
    SOURCE_REPOSITORY,
    RenderOptions,
    find_engines,
    io_block,
    render_engine_config,
    render_repository,
)
from whisper_triton.repository import build_repository
from whisper_triton.settings import model_settings

CPU_CONFIG = (SOURCE_REPOSITORY / "whisper_engine" / "config.pbtxt").read_text()

GOLDEN = '''\
# Whisper engine, GPU variant, rendered by `python -m build_engines render` for the TensorRT-LLM engines in
# /engines. The tensors are those of model_repository/whisper_engine/config.pbtxt. The windows of
# all in-flight requests queue in the model's scheduler; its workers hand batches of up to 64
# to one TensorRT-LLM C++ executor per instance (in-flight batching), which holds its own copy of the engines
# and its own KV cache.
name: "whisper_engine"
backend: "python"
max_batch_size: 0
model_transaction_policy {{ decoupled: true }}
{io}instance_group [ {{ count: 1 kind: KIND_GPU }} ]
parameters {{ key: "WHISPER_ENGINE_MAX_BATCH" value {{ string_value: "64" }} }}
parameters {{ key: "WHISPER_ENGINE_WORKERS" value {{ string_value: "2" }} }}
parameters {{ key: "WHISPER_ENGINE" value {{ string_value: "tensorrt_llm" }} }}
parameters {{ key: "WHISPER_TRTLLM_ROUTE" value {{ string_value: "engine" }} }}
parameters {{ key: "WHISPER_TRTLLM_ENGINE_DIR" value {{ string_value: "/engines" }} }}
parameters {{ key: "WHISPER_TRTLLM_MAX_BATCH_SIZE" value {{ string_value: "64" }} }}
parameters {{ key: "WHISPER_TRTLLM_KV_CACHE_FRACTION" value {{ string_value: "0.5" }} }}
parameters {{ key: "WHISPER_TRTLLM_CROSS_KV_CACHE_FRACTION" value {{ string_value: "0.5" }} }}
parameters {{ key: "WHISPER_BEAM_SIZE" value {{ string_value: "1" }} }}
'''


def engines(root: Path, max_batch_size: int = 64, max_beam_width: int = 4) -> Path:
    for part in ("encoder", "decoder"):
        (root / part).mkdir(parents=True, exist_ok=True)
        build = {"max_batch_size": max_batch_size, "max_beam_width": max_beam_width}
        (root / part / "config.json").write_text(json.dumps({"pretrained_config": {}, "build_config": build}))
        (root / part / "rank0.engine").write_bytes(b"engine")
    return root


def test_golden_gpu_engine_config() -> None:
    rendered = render_engine_config(CPU_CONFIG, Path("/engines"), RenderOptions(), 64)
    assert rendered == GOLDEN.format(io=io_block(CPU_CONFIG))
    assert "${" not in rendered


def test_the_gpu_config_declares_the_cpu_configs_tensors() -> None:
    rendered = render_engine_config(CPU_CONFIG, Path("/engines"), RenderOptions(), 64)
    tensors = re.compile(r'\{ name: "(\w+)" data_type: (\w+) dims: \[([^\]]*)\](?: optional: true)? \}')
    assert tensors.findall(rendered) == tensors.findall(CPU_CONFIG)
    assert [name for name, _, _ in tensors.findall(rendered)] == ["SAMPLES", "LENGTHS", "OPTIONS", "CANCEL", "RESULT"]


def test_options_reach_the_config() -> None:
    options = RenderOptions(instances=2, workers=3, kv_cache_fraction=0.8,
                            cross_kv_cache_fraction=0.4, beam_size=4)
    rendered = render_engine_config(CPU_CONFIG, Path('/data/my "engines"'), options, 32)
    assert "max_batch_size: 0\n" in rendered and "decoupled: true" in rendered
    assert 'key: "WHISPER_ENGINE_MAX_BATCH" value { string_value: "32" }' in rendered
    assert 'key: "WHISPER_ENGINE_WORKERS" value { string_value: "3" }' in rendered
    assert "instance_group [ { count: 2 kind: KIND_GPU } ]" in rendered
    assert 'string_value: "/data/my \\"engines\\""' in rendered
    assert '"WHISPER_TRTLLM_KV_CACHE_FRACTION" value { string_value: "0.8" }' in rendered
    assert '"WHISPER_TRTLLM_CROSS_KV_CACHE_FRACTION" value { string_value: "0.4" }' in rendered
    assert '"WHISPER_BEAM_SIZE" value { string_value: "4" }' in rendered


def test_the_repository_links_the_other_models_and_writes_serve_env(tmp_path: Path) -> None:
    engines(tmp_path / "engines" / "large-v3-turbo", max_batch_size=64)
    engines(tmp_path / "engines" / "tiny", max_batch_size=32)
    (tmp_path / "engines" / "tiny" / "checkpoint" / "encoder").mkdir(parents=True)  # not an engine
    repository = render_repository(tmp_path / "engines", tmp_path / "repo", RenderOptions())
    config = (repository / "whisper_engine" / "config.pbtxt").read_text()
    assert 'WHISPER_ENGINE_MAX_BATCH" value { string_value: "32"' in config  # the smallest engine's maximum
    assert "${" not in config
    model = repository / "whisper_engine" / "1" / "model.py"
    assert model.resolve() == (SOURCE_REPOSITORY / "whisper_engine" / "1" / "model.py").resolve()
    for name in ("whisper", "diarization"):
        assert (repository / name).resolve() == (SOURCE_REPOSITORY / name).resolve()
    engines_dir = tmp_path / "engines"
    assert (repository / "serve.env").read_text() == (
        f"# Serve the TensorRT-LLM engines of {engines_dir}: set -a; . {repository}/serve.env; set +a; make serve\n"
        f"TRITON_MODEL_REPOSITORY={repository}\n"
        "WHISPER_ENGINE=tensorrt_llm\n"
        "WHISPER_TRTLLM_ROUTE=engine\n"
        f"WHISPER_TRTLLM_ENGINE_DIR={engines_dir}\n"
        "WHISPER_MODELS=large-v3-turbo,tiny\n"
        "WHISPER_MAX_WINDOWS_IN_FLIGHT=32\n"
        "WHISPER_BLS_THREADS=64\n"
    )


def test_rendering_again_replaces_the_repository(tmp_path: Path) -> None:
    engines(tmp_path / "engines")
    render_repository(tmp_path / "engines", tmp_path / "repo", RenderOptions(instances=1))
    render_repository(tmp_path / "engines", tmp_path / "repo", RenderOptions(instances=3), models=["turbo"])
    assert "count: 3 kind: KIND_GPU" in (tmp_path / "repo" / "whisper_engine" / "config.pbtxt").read_text()
    assert "WHISPER_MODELS=turbo\n" in (tmp_path / "repo" / "serve.env").read_text()
    assert not list(tmp_path.glob(".repo.partial"))


def test_served_repository_keeps_the_gpu_parameters_per_model(tmp_path: Path) -> None:
    engines(tmp_path / "engines" / "large-v3-turbo")
    source = render_repository(tmp_path / "engines", tmp_path / "repo", RenderOptions())
    (name,) = build_repository(source, tmp_path / "served", ["large-v3-turbo"], diarization=False)
    config = (tmp_path / "served" / name / "config.pbtxt").read_text()
    assert config.startswith("# Whisper engine, GPU variant")
    assert f'name: "{name}"' in config and "kind: KIND_GPU" in config
    parameters = dict(re.findall(r'key: "(\w+)" value \{ string_value: "([^"]*)" \}', config))
    assert parameters["WHISPER_MODEL"] == "large-v3-turbo"
    settings = model_settings({"WHISPER_ENGINE": "ctranslate2", **parameters})  # the engine model's reading
    assert (settings.engine, settings.trtllm_engine_dir) == ("tensorrt_llm", str(tmp_path / "engines"))


def test_engines_are_found_alone_or_per_model(tmp_path: Path) -> None:
    assert find_engines(engines(tmp_path / "one")) == {"": tmp_path / "one"}
    engines(tmp_path / "many" / "openai" / "whisper-small")
    assert find_engines(tmp_path / "many") == {"openai/whisper-small": tmp_path / "many" / "openai" / "whisper-small"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (RenderOptions(max_batch_size=128), "larger than the engines' maximum"),
        (RenderOptions(beam_size=8), "larger than the engines' maximum beam width"),
        (RenderOptions(cross_kv_cache_fraction=1.0), "--cross-kv-cache-fraction must be between 0 and 1"),
        (RenderOptions(instances=0), "--instances must be at least 1"),
    ],
)
def test_impossible_options_are_refused(tmp_path: Path, options: RenderOptions, message: str) -> None:
    engines(tmp_path / "engines")
    with pytest.raises(BuildError, match=message):
        render_repository(tmp_path / "engines", tmp_path / "repo", options)


def test_no_engines_is_an_error_from_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "--engines", str(tmp_path), "--repository", str(tmp_path / "repo")]) == 2
    assert "no engines under" in capsys.readouterr().err


def test_the_cli_renders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    engines(tmp_path / "engines")
    assert main(["render", "--engines", str(tmp_path / "engines"), "--repository", str(tmp_path / "repo"),
                 "--instances", "2", "--max-batch-size", "16", "--models", "large-v3-turbo"]) == 0
    config = (tmp_path / "repo" / "whisper_engine" / "config.pbtxt").read_text()
    assert 'WHISPER_ENGINE_MAX_BATCH" value { string_value: "16"' in config and "count: 2" in config
    assert "serve it with: set -a;" in capsys.readouterr().out
