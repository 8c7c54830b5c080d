"""docker/triton_entrypoint.py: engines built once per GPU and options, the GPU repository, tritonserver's flags.

No GPU here: the engine build (`python -m build_engines all`) is replaced by a fake that writes what it
would, and fake engine folders stand in for trtllm-build's output.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import msgspec
import pytest

from build_engines.build import BuildError
from harness.deployment import entrypoint
from whisper_triton.launcher import TritonSettings
from whisper_triton.settings import SettingsError


@pytest.fixture
def module() -> ModuleType:
    return entrypoint()


def fake_engines(folder: Path, max_batch_size: int = 64, max_beam_width: int = 4) -> Path:
    """What `build_engines build` leaves: encoder/ and decoder/ with config.json and rank0.engine."""
    for part in ("encoder", "decoder"):
        (folder / part).mkdir(parents=True, exist_ok=True)
        build = {"max_batch_size": max_batch_size, "max_beam_width": max_beam_width}
        (folder / part / "config.json").write_text(json.dumps({"build_config": build}))
        (folder / part / "rank0.engine").write_bytes(b"engine")
    return folder


def test_server_command_matches_the_launcher_flags(module: ModuleType, tmp_path: Path) -> None:
    settings = TritonSettings(host="0.0.0.0", http_port=8000, shm_size_mb=64)
    command = module.server_command("/opt/tritonserver/bin/tritonserver", settings, tmp_path,
                                    ["whisper_engine__large-v3-turbo"])
    assert command[0] == "/opt/tritonserver/bin/tritonserver"
    for flag in ("--model-control-mode=explicit", "--load-model=whisper", "--load-model=whisper_engine__large-v3-turbo",
                 "--strict-readiness=true", "--exit-on-error=true", "--disable-auto-complete-config",
                 "--grpc-address=0.0.0.0", "--grpc-port=8001", "--metrics-address=0.0.0.0", "--metrics-port=8002",
                 "--allow-http=true", "--http-port=8000", f"--backend-config=python,shm-default-byte-size={64 << 20}",
                 f"--model-repository={tmp_path}"):
        assert flag in command
    closed = module.server_command("tritonserver", TritonSettings(), tmp_path, [])
    assert "--allow-http=false" in closed and "--load-model=whisper" in closed


def test_serve_ctranslate2_generates_the_repository_and_preloads_engines(module: ModuleType, tmp_path: Path) -> None:
    env = {"TMPDIR": str(tmp_path), "WHISPER_MODELS": "tiny.en,base", "WHISPER_DIARIZATION": "off"}
    command = module.serve(env)
    repository = Path(next(c for c in command if c.startswith("--model-repository=")).split("=", 1)[1])
    assert sorted(p.name for p in repository.iterdir()) == [
        "whisper", "whisper_engine__base", "whisper_engine__tiny.en", "whisper_live", "whisper_models"]
    assert [c for c in command if c.startswith("--load-model=")] == [
        "--load-model=whisper", "--load-model=whisper_live", "--load-model=whisper_models",
        "--load-model=whisper_engine__tiny.en",
        "--load-model=whisper_engine__base"]
    lazy = module.serve({**env, "TRITON_MODEL_LOAD": "first_request", "WHISPER_DIARIZATION": "embedded"})
    assert [c for c in lazy if c.startswith("--load-model=")] == ["--load-model=whisper", "--load-model=whisper_live",
                                                                  "--load-model=whisper_models"]
    assert (repository / "diarization").is_dir()
    with pytest.raises(SettingsError, match="TRITON_MODEL_LOAD"):
        module.serve({**env, "TRITON_MODEL_LOAD": "later"})


def test_serve_tensorrt_llm_renders_the_gpu_repository(module: ModuleType, tmp_path: Path) -> None:
    engines = tmp_path / "engines"
    fake_engines(engines / "large-v3-turbo", max_batch_size=32)
    env = {"TMPDIR": str(tmp_path), "WHISPER_ENGINE": "tensorrt_llm", "WHISPER_MODELS": "large-v3-turbo",
           "WHISPER_TRTLLM_ROUTE": "engine", "WHISPER_TRTLLM_ENGINE_DIR": str(engines), "WHISPER_DIARIZATION": "off",
           "WHISPER_TRTLLM_KV_CACHE_FRACTION": "0.7", "BUILD_ENGINES_INSTANCES": "2"}
    command = module.serve(env)
    assert env["TRITON_MODEL_REPOSITORY"] == str(tmp_path / "whisper-triton" / "gpu-repository")
    assert env["WHISPER_MAX_WINDOWS_IN_FLIGHT"] == "32"  # from the rendered serve.env: one batch per recording
    repository = Path(next(c for c in command if c.startswith("--model-repository=")).split("=", 1)[1])
    config = (repository / "whisper_engine__large-v3-turbo" / "config.pbtxt").read_text()
    assert 'name: "whisper_engine__large-v3-turbo"' in config and "KIND_GPU" in config
    assert "count: 2" in config and 'WHISPER_ENGINE_MAX_BATCH" value { string_value: "32"' in config
    assert 'key: "WHISPER_TRTLLM_KV_CACHE_FRACTION" value { string_value: "0.7" }' in config
    assert f'string_value: "{engines}"' in config
    assert 'key: "WHISPER_MODEL" value { string_value: "large-v3-turbo" }' in config
    assert "--load-model=whisper_engine__large-v3-turbo" in command
    given = {**env, "WHISPER_MAX_WINDOWS_IN_FLIGHT": "8"}
    module.serve(given)
    assert given["WHISPER_MAX_WINDOWS_IN_FLIGHT"] == "8"  # the environment wins over serve.env


def test_the_gpu_image_serves_diarization_on_the_gpu(module: ModuleType, tmp_path: Path) -> None:
    """With the image's own environment: the diarization model is in the served repository (loaded on the first
    request that asks for speakers) and its settings put the embedded models on CUDA."""
    from harness.deployment import DOCKERFILES, env_of, parse_dockerfile
    from whisper_triton.settings import model_settings

    image = env_of(parse_dockerfile(DOCKERFILES["triton"].read_text()))
    fake_engines(tmp_path / "engines" / image["WHISPER_MODELS"])
    env = {**image, "TMPDIR": str(tmp_path), "WHISPER_TRTLLM_ENGINE_DIR": str(tmp_path / "engines"),
           "WHISPER_TRTLLM_ROUTE": "engine"}
    command = module.serve(env)
    repository = Path(next(c for c in command if c.startswith("--model-repository=")).split("=", 1)[1])
    config = (repository / "diarization" / "config.pbtxt").read_text()
    assert 'name: "diarization"' in config and 'backend: "python"' in config
    assert "--load-model=diarization" not in command
    settings = model_settings(env)
    assert (settings.diarization, settings.diarization_device) == ("embedded", "cuda")


def test_engine_cache_key_names_everything_an_engine_depends_on(module: ModuleType, tmp_path: Path) -> None:
    build = module.BuildSettings()
    key = module.engine_key(build, "1.0.0", "nvidia-h100-80gb-hbm3-sm90")
    assert key == "trtllm-1.0.0_nvidia-h100-80gb-hbm3-sm90_float16_wo-none_b64_beam4"
    others = {module.engine_key(build, "1.1.0", "nvidia-h100-80gb-hbm3-sm90"),
              module.engine_key(build, "1.0.0", "nvidia-l4-sm89"),
              module.engine_key(msgspec.structs.replace(build, weight_only="int8"), "1.0.0", "x"),
              module.engine_key(msgspec.structs.replace(build, max_batch_size=8), "1.0.0", "x")}
    assert key not in others and len(others) == 4
    # Serving options do not shape the engines: changing them re-renders, it does not rebuild.
    assert module.engine_key(msgspec.structs.replace(build, instances=2, workers=3), "1.0.0",
                             "nvidia-h100-80gb-hbm3-sm90") == key
    command = module.build_command("large-v3-turbo", tmp_path, build)
    assert command[1:4] == ["-m", "build_engines", "all"] and command[command.index("--workdir") + 1] == str(tmp_path)
    assert command[command.index("--weight-only") + 1] == "none"
    assert command[command.index("--max-batch-size") + 1] == "64"


def test_engines_are_built_once_under_a_lock(module: ModuleType, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_run(command: list[str], check: bool, cwd: Path) -> None:
        calls.append(command)
        model = command[command.index("--model") + 1]
        fake_engines(Path(command[command.index("--workdir") + 1]) / model)

    monkeypatch.setattr(module.subprocess, "run", fake_run)
    monkeypatch.setattr(module, "gpu_identity", lambda: "gpu-sm90")
    monkeypatch.setattr(module, "trtllm_version", lambda: "1.0.0")
    env = {"WHISPER_ENGINE": "tensorrt_llm", "WHISPER_MODELS": "large-v3-turbo,small", "WHISPER_TRTLLM_ROUTE": "engine",
           "WHISPER_CACHE_DIR": str(tmp_path), "BUILD_ENGINES_WEIGHT_ONLY": "int8"}
    module.prepare_engines(env)
    workdir = tmp_path / "trtllm" / "trtllm-1.0.0_gpu-sm90_float16_wo-int8_b64_beam4"
    assert env["WHISPER_TRTLLM_ENGINE_DIR"] == str(workdir)
    assert [c[c.index("--model") + 1] for c in calls] == ["large-v3-turbo", "small"]
    assert all(c[c.index("--route") + 1] == "engine" for c in calls)
    module.prepare_engines({**env, "WHISPER_TRTLLM_ENGINE_DIR": ""})  # a restart: nothing to build
    assert len(calls) == 2
    assert (workdir / ".built-large-v3-turbo").is_file() and workdir.with_name(workdir.name + ".lock").is_file()


def hf_checkpoint(folder: Path) -> Path:
    """What `build_engines all --route pytorch` leaves: the Hugging Face checkpoint in <model id>/hf."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "whisper", "vocab_size": 51866}))
    (folder / "model.safetensors").write_bytes(b"weights")
    return folder


@pytest.fixture
def without_trtllm_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An image whose TensorRT-LLM has no trtllm-build (its main branch since mid-2026)."""
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))


def test_the_pytorch_route_fetches_checkpoints_once_and_builds_nothing(
    module: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, without_trtllm_build: None
) -> None:
    calls = []

    def fake_run(command: list[str], check: bool, cwd: Path) -> None:
        calls.append(command)
        model = command[command.index("--model") + 1]
        hf_checkpoint(Path(command[command.index("--workdir") + 1]) / model / "hf")

    monkeypatch.setattr(module.subprocess, "run", fake_run)
    monkeypatch.setattr(module, "gpu_identity", lambda: pytest.fail("a checkpoint does not depend on the GPU"))
    env = {"WHISPER_ENGINE": "tensorrt_llm", "WHISPER_MODELS": "large-v3-turbo", "WHISPER_CACHE_DIR": str(tmp_path)}
    module.prepare_engines(env)
    workdir = tmp_path / "trtllm" / "hf-checkpoints"
    assert (env["WHISPER_TRTLLM_ROUTE"], env["WHISPER_TRTLLM_ENGINE_DIR"]) == ("pytorch", str(workdir))
    (command,) = calls
    assert command[command.index("--route") + 1] == "pytorch"
    module.prepare_engines({**env, "WHISPER_TRTLLM_ENGINE_DIR": ""})  # a restart: nothing to fetch
    assert len(calls) == 1


def test_serve_on_the_pytorch_route_renders_the_checkpoints_repository(
    module: ModuleType, tmp_path: Path, without_trtllm_build: None
) -> None:
    hf_checkpoint(tmp_path / "work" / "large-v3-turbo" / "hf")
    env = {"TMPDIR": str(tmp_path), "WHISPER_ENGINE": "tensorrt_llm", "WHISPER_MODELS": "large-v3-turbo",
           "WHISPER_TRTLLM_ENGINE_DIR": str(tmp_path / "work"), "WHISPER_DIARIZATION": "off"}
    module.prepare_engines(env)
    command = module.serve(env)
    repository = Path(next(c for c in command if c.startswith("--model-repository=")).split("=", 1)[1])
    config = (repository / "whisper_engine__large-v3-turbo" / "config.pbtxt").read_text()
    assert 'key: "WHISPER_TRTLLM_ROUTE" value { string_value: "pytorch" }' in config
    assert f'key: "WHISPER_TRTLLM_ENGINE_DIR" value {{ string_value: "{tmp_path / "work"}" }}' in config
    with pytest.raises(BuildError, match="no engines under"):  # engines asked for, a checkpoint found
        module.serve({**env, "WHISPER_TRTLLM_ROUTE": "engine"})


def test_given_engines_are_not_rebuilt(module: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "ensure_engines", lambda *args: pytest.fail("no build with given engines"))
    env = {"WHISPER_ENGINE": "tensorrt_llm", "WHISPER_MODELS": "a,b", "WHISPER_TRTLLM_ENGINE_DIR": "/engines"}
    module.prepare_engines(env)
    assert env["WHISPER_TRTLLM_ENGINE_DIR"] == "/engines"


def test_bad_settings_name_the_variable(module: ModuleType) -> None:
    with pytest.raises(SettingsError, match="WHISPER_ENGINE"):
        module.prepare_engines({"WHISPER_ENGINE": "onnx"})
    with pytest.raises(SettingsError, match="BUILD_ENGINES_WEIGHT_ONLY"):
        module.build_settings({"BUILD_ENGINES_WEIGHT_ONLY": "fp4"})
    with pytest.raises(SettingsError, match="BUILD_ENGINES_MAX_BATCH_SIZE"):
        module.build_settings({"BUILD_ENGINES_MAX_BATCH_SIZE": "many"})
    with pytest.raises(SettingsError, match="BUILD_ENGINES_INSTANCES"):
        module.build_settings({"BUILD_ENGINES_INSTANCES": "0"})


def test_main_reports_errors_with_an_exit_code(module: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHISPER_ENGINE", "onnx")
    assert module.main(["build"]) == 2


def test_gpu_identity_falls_back_without_nvidia_smi(module: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert module.gpu_identity() == "unknown-gpu"


def test_serve_preloads_the_allocator_that_triton_malloc_names(module: ModuleType, tmp_path: Path) -> None:
    library = tmp_path / "libtcmalloc_minimal.so.4"
    library.write_bytes(b"")
    env = {"TMPDIR": str(tmp_path), "WHISPER_MODELS": "tiny.en", "WHISPER_DIARIZATION": "off",
           "TRITON_MALLOC": str(library)}
    module.serve(env)
    assert env["LD_PRELOAD"] == str(library)  # what tritonserver, exec'd or a child, then inherits
    system = {**env, "TRITON_MALLOC": "system", "LD_PRELOAD": ""}
    module.serve(system)
    assert system["LD_PRELOAD"] == ""
    with pytest.raises(module.TritonError, match="TRITON_MALLOC"):
        module.serve({**env, "TRITON_MALLOC": "tcmalloc"})
