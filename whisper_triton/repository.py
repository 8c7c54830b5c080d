"""The model repository Triton serves, generated from `model_repository/` for the configured models.

`model_repository/whisper` is served as is (one entry model for every Whisper model);
`model_repository/whisper_engine` is the template of the engine models: one copy per model in
`WHISPER_MODELS`, named `whisper_engine__<model id>`, with the model spec in its config
parameters. Triton runs in explicit model-control mode, so engines can be loaded at start-up or
on first use and unloaded when idle.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from whisper_triton.contract import DIARIZATION_MODEL, ENGINE_MODEL, ENTRY_MODEL, LIVE_MODEL
from whisper_triton.models import flat_id, model_id
from whisper_triton.models_contract import MODELS_MODEL

ENGINE_PREFIX = f"{ENGINE_MODEL}__"


def model_specs(environ: Mapping[str, str] | None = None) -> list[str]:
    """`WHISPER_MODELS` (comma-separated), else `WHISPER_MODEL`, else `base`; the first is the default."""
    env = os.environ if environ is None else environ
    raw = env.get("WHISPER_MODELS") or env.get("WHISPER_MODEL") or "base"
    specs = [spec.strip() for spec in raw.split(",") if spec.strip()]
    unique: dict[str, str] = {}
    for spec in specs:
        unique.setdefault(model_id(spec), spec)
    return list(unique.values())


def engine_model_name(model: str) -> str:
    """The Triton name of a model's engine: `whisper_engine__<id>`, the `/` of a Hugging Face `org/name` as `--`
    (which such ids never hold: `org/name` and `org_name` stay two engines), other unsafe characters as `_`."""
    return ENGINE_PREFIX + re.sub(r"[^A-Za-z0-9_.-]", "_", flat_id(model))


def _instances(config: str, count: int) -> str:
    """The config with its instance_group's count set (the templates declare exactly one)."""
    updated, found = re.subn(r"(instance_group \[ \{ count: )\d+", rf"\g<1>{count}", config)
    if found != 1:
        raise ValueError("the entry model's config.pbtxt must declare one instance_group with a count")
    return updated


def build_repository(source: Path, target: Path, specs: list[str], diarization: bool = True,
                     entry_instances: int = 1) -> list[str]:
    """Writes the served repository; returns the engine model names, default model first.

    The live model is included, and the diarization model (loaded on first use) unless `diarization` is off.
    The entry model
    runs `entry_instances` processes (its CPU work, decoding and VAD, then scales with the host's cores).
    """
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    entry = target / ENTRY_MODEL
    (entry / "1").mkdir(parents=True)
    (entry / "1" / "model.py").symlink_to((source / ENTRY_MODEL / "1" / "model.py").resolve())
    entry_config = (source / ENTRY_MODEL / "config.pbtxt").read_text(encoding="utf-8")
    (entry / "config.pbtxt").write_text(_instances(entry_config, entry_instances), encoding="utf-8")
    (target / LIVE_MODEL).symlink_to((source / LIVE_MODEL).resolve(), target_is_directory=True)
    if diarization:
        (target / DIARIZATION_MODEL).symlink_to((source / DIARIZATION_MODEL).resolve(), target_is_directory=True)
    models = target / MODELS_MODEL
    (models / "1").mkdir(parents=True)
    (models / "1" / "model.py").symlink_to((source / MODELS_MODEL / "1" / "model.py").resolve())
    # The model-management model writes engines of fetched models beside the others, from the same template.
    (models / "config.pbtxt").write_text(
        (source / MODELS_MODEL / "config.pbtxt").read_text(encoding="utf-8")
        + _parameter("REPOSITORY", str(target.resolve())) + _parameter("SOURCE", str(source.resolve())),
        encoding="utf-8")
    return [write_engine(source, target, model_id(spec), spec) for spec in specs]


def _parameter(key: str, value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'parameters {{ key: "{key}" value {{ string_value: "{escaped}" }} }}\n'


def write_engine(source: Path, target: Path, model: str, spec: str) -> str:
    """Writes the engine model of `model` (loading `spec`) into the served repository; returns its name."""
    name = engine_model_name(model)
    folder = target / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    if not (folder / "1" / "model.py").exists():
        (folder / "1" / "model.py").symlink_to((source / ENGINE_MODEL / "1" / "model.py").resolve())
    template = (source / ENGINE_MODEL / "config.pbtxt").read_text(encoding="utf-8")
    config = re.sub(r'^name: "[^"]*"', f'name: "{name}"', template, count=1, flags=re.M)
    (folder / "config.pbtxt").write_text(config + _parameter("WHISPER_MODEL", spec), encoding="utf-8")
    return name


@contextmanager
def repository_lock(target: Path) -> Iterator[None]:
    """Holds the served repository's lock (fcntl, a dotfile in it: Triton serves only folders): the instances of
    the model-management model are processes that each write and remove engines in it."""
    with (target / ".whisper_models.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sync_engines(source: Path, target: Path, fetched: Mapping[str, str], configured: list[str]) -> None:
    """The served repository's engines of fetched models made to match the model cache (`fetched`: id -> spec):
    a restart, or another server sharing the cache, fetched or deleted some."""
    wanted = {engine_model_name(model): (model, spec) for model, spec in fetched.items()}
    kept = {engine_model_name(model) for model in configured}
    for folder in target.glob(ENGINE_PREFIX + "*"):
        if folder.name not in wanted and folder.name not in kept:
            shutil.rmtree(folder, ignore_errors=True)
    for name, (model, spec) in wanted.items():
        if name not in kept and not (target / name / "config.pbtxt").is_file():
            write_engine(source, target, model, spec)
