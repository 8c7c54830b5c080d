"""The pipeline benchmark's model repository: every served model, the instant engine for the Whisper one."""

from __future__ import annotations

from pathlib import Path

from bench.pipeline import source_repository
from whisper_triton.contract import ENGINE_MODEL, ENTRY_MODEL, LIVE_MODEL
from whisper_triton.repository import build_repository


def test_the_pipeline_repository_builds_with_every_model_and_the_instant_engine(tmp_path: Path) -> None:
    source = source_repository(tmp_path)
    assert (source / ENGINE_MODEL).resolve().name == "instant_engine"
    served = tmp_path / "served"
    build_repository(source, served, ["base"], diarization=False)
    names = {path.name for path in served.iterdir()}
    assert {ENTRY_MODEL, LIVE_MODEL, "whisper_models"} <= names and f"{ENGINE_MODEL}__base" in names
    engine = (served / f"{ENGINE_MODEL}__base" / "1" / "model.py").resolve()
    assert "instant_engine" in str(engine) or "instant" in engine.read_text()
