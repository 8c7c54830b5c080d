"""`python -m build_engines all` on TensorRT-LLM's PyTorch route, and how `auto` picks the route.

TensorRT-LLM's main branch no longer has trtllm-build ("Migration Guide: TensorRT Backend Removed"); its PyTorch
backend serves the Hugging Face checkpoint itself. Here the hub is a fake `snapshot_download` (huggingface_hub's
signature: `repo_id` positional, the rest keyword-only) and no GPU or TensorRT-LLM is needed.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest

from build_engines.__main__ import main
from build_engines.fetch import FETCHED, HF_PATTERNS
from build_engines.render import RenderOptions, render_repository
from whisper_triton.settings import SettingsError, model_settings
from whisper_triton.trtllm_route import has_engine_builder, resolve_route
from whisper_triton.trtllm_torch_engine import find_checkpoint_dir


def hf_checkpoint(folder: Path, vocab_size: int = 51864) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "whisper", "vocab_size": vocab_size,
                                                    "num_mel_bins": 80}))
    (folder / "model.safetensors").write_bytes(b"weights")
    return folder


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Downloads, as huggingface_hub.snapshot_download would make them into `local_dir`."""
    downloads: list[dict[str, Any]] = []

    def snapshot_download(repo_id: str, *, local_dir: str | None = None, allow_patterns: Any = None,
                          **kwargs: Any) -> str:
        downloads.append({"repo_id": repo_id, "local_dir": local_dir, "allow_patterns": allow_patterns, **kwargs})
        assert local_dir is not None
        return str(hf_checkpoint(Path(local_dir)))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return downloads


@pytest.fixture
def no_trtllm_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A TensorRT-LLM without trtllm-build (its main branch since mid-2026): nothing on PATH."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("WHISPER_TRTLLM_ROUTE", raising=False)


def test_auto_takes_the_engine_route_only_where_engines_can_be_built(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bin_dir, site = tmp_path / "bin", tmp_path / "site"
    bin_dir.mkdir()
    (bin_dir / "trtllm-build").write_text("#!/bin/sh\n")
    (bin_dir / "trtllm-build").chmod(0o755)
    package = site / "tensorrt_llm"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('located, never imported')\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert not has_engine_builder() and resolve_route("auto") == "pytorch"  # no trtllm-build
    monkeypatch.setenv("PATH", str(bin_dir))
    assert not has_engine_builder() and resolve_route("auto") == "pytorch"  # no tensorrt_llm.builder
    (package / "builder.py").write_text("")
    assert has_engine_builder() and resolve_route("auto") == "engine"
    assert resolve_route("pytorch") == "pytorch"
    with pytest.raises(SettingsError, match="WHISPER_TRTLLM_ROUTE"):
        resolve_route("tensorrt")


def test_all_fetches_the_checkpoint_and_renders_the_pytorch_repository(
    hub: list[dict[str, Any]], no_trtllm_build: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workdir = tmp_path / "work"
    assert main(["all", "--model", "tiny.en", "--workdir", str(workdir), "--max-batch-size", "16"]) == 0
    out = capsys.readouterr().out
    assert "route: pytorch (this TensorRT-LLM has no trtllm-build" in out and "[3/3]" in out
    (download,) = hub
    assert download["repo_id"] == "openai/whisper-tiny.en" and download["local_dir"] == str(workdir / "tiny.en" / "hf")
    assert set(download["allow_patterns"]) == set(HF_PATTERNS) and "*.bin" not in download["allow_patterns"]
    assert (workdir / "tiny.en" / "hf" / FETCHED).read_text() == "openai/whisper-tiny.en\n"
    repository = workdir / "model_repository"
    config = (repository / "whisper_engine" / "config.pbtxt").read_text()
    assert "served by TensorRT-LLM's PyTorch backend (no engine build)" in config and "${" not in config
    parameters = dict(re.findall(r'key: "(\w+)" value \{ string_value: "([^"]*)" \}', config))
    assert parameters["WHISPER_TRTLLM_ROUTE"] == "pytorch" and parameters["WHISPER_ENGINE_MAX_BATCH"] == "16"
    settings = model_settings({"WHISPER_ENGINE": "ctranslate2", **parameters})  # the engine model's reading
    assert find_checkpoint_dir(Path(settings.trtllm_engine_dir), "tiny.en") == workdir / "tiny.en" / "hf"
    environment = (repository / "serve.env").read_text()
    assert "WHISPER_TRTLLM_ROUTE=pytorch\n" in environment and "WHISPER_MODELS=tiny.en\n" in environment
    assert not (workdir / "tiny.en" / "checkpoint").exists()  # nothing converted, nothing built
    assert main(["all", "--model", "tiny.en", "--workdir", str(workdir)]) == 0
    assert len(hub) == 1 and "is up to date" in capsys.readouterr().out  # the second run only checks


def test_the_route_is_forced_by_the_setting(hub: list[dict[str, Any]], no_trtllm_build: None, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WHISPER_TRTLLM_ROUTE", "engine")
    assert main(["all", "--model", "tiny.en", "--workdir", str(tmp_path / "work")]) == 2  # trtllm-build is missing
    assert hub == []
    monkeypatch.setenv("WHISPER_TRTLLM_ROUTE", "pytorch")
    assert main(["all", "--model", "tiny.en", "--workdir", str(tmp_path / "work")]) == 0
    assert "route: pytorch (--route / WHISPER_TRTLLM_ROUTE)" in capsys.readouterr().out


def test_a_local_checkpoint_is_linked_and_pt_files_are_refused(
    hub: list[dict[str, Any]], no_trtllm_build: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    local = hf_checkpoint(tmp_path / "my-whisper")
    workdir = tmp_path / "work"
    assert main(["all", "--model", str(local), "--workdir", str(workdir), "--route", "pytorch"]) == 0
    assert (workdir / "my-whisper" / "hf").resolve() == local and hub == []
    (tmp_path / "large-v3.pt").write_bytes(b"openai")
    assert main(["all", "--model", str(tmp_path / "large-v3.pt"), "--workdir", str(workdir), "--route",
                 "pytorch"]) == 2
    assert "the PyTorch route serves Hugging Face checkpoints" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "bart"}))
    assert main(["all", "--model", str(tmp_path / "other"), "--workdir", str(workdir), "--route", "pytorch"]) == 2
    assert "is not a Hugging Face Whisper checkpoint" in capsys.readouterr().err


def test_an_unreachable_hub_is_an_error_with_a_way_out(
    no_trtllm_build: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def offline(repo_id: str, **kwargs: Any) -> str:
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    assert main(["all", "--model", "large-v3-turbo", "--workdir", str(tmp_path), "--route", "pytorch"]) == 2
    error = capsys.readouterr().err
    assert "could not fetch 'openai/whisper-large-v3-turbo'" in error and "local Hugging Face checkpoint" in error


def test_render_takes_the_route_from_what_the_folder_holds(tmp_path: Path) -> None:
    hf_checkpoint(tmp_path / "work" / "large-v3-turbo" / "hf", vocab_size=51866)
    hf_checkpoint(tmp_path / "work" / "openai" / "whisper-small" / "hf", vocab_size=51865)
    repository = render_repository(tmp_path / "work", tmp_path / "repo", RenderOptions(beam_size=2))
    config = (repository / "whisper_engine" / "config.pbtxt").read_text()
    assert 'WHISPER_TRTLLM_ROUTE" value { string_value: "pytorch"' in config
    assert 'WHISPER_ENGINE_MAX_BATCH" value { string_value: "64"' in config  # no engine maximum: the default
    assert 'WHISPER_BEAM_SIZE" value { string_value: "2"' in config
    assert "WHISPER_MODELS=large-v3-turbo,openai/whisper-small\n" in (repository / "serve.env").read_text()
    with pytest.raises(Exception, match="no engines under"):
        render_repository(tmp_path / "work", tmp_path / "repo", RenderOptions(), route="engine")
    assert main(["render", "--engines", str(tmp_path / "empty"), "--repository", str(tmp_path / "r"),
                 "--route", "pytorch"]) == 2
    assert os.path.isdir(repository)
