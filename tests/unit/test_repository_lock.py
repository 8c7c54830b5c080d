"""The served repository's lock: the model-management model's instances are processes that write and remove
engines in it; one holds the lock while another waits for it."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from whisper_triton.repository import repository_lock, sync_engines, write_engine

SOURCE = Path(__file__).resolve().parents[2] / "model_repository"


def _hold(target: str, held: multiprocessing.synchronize.Event, seconds: float) -> None:
    with repository_lock(Path(target)):
        held.set()
        time.sleep(seconds)


def test_a_second_process_waits_for_the_lock(tmp_path: Path) -> None:
    held = multiprocessing.get_context("spawn").Event()
    holder = multiprocessing.get_context("spawn").Process(target=_hold, args=(str(tmp_path), held, 1.0))
    holder.start()
    try:
        assert held.wait(30)
        started = time.monotonic()
        with repository_lock(tmp_path):
            waited = time.monotonic() - started
    finally:
        holder.join(30)
    assert waited > 0.5, "the lock was taken while another process held it"
    assert [p.name for p in tmp_path.iterdir()] == [".whisper_models.lock"]  # a file: Triton serves folders


def test_sync_writes_the_engines_of_fetched_models_and_removes_the_others(tmp_path: Path) -> None:
    write_engine(SOURCE, tmp_path, "gone", "/models/gone")
    with repository_lock(tmp_path):
        sync_engines(SOURCE, tmp_path, {"org/new": "/models/new"}, ["base"])
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["whisper_engine__org--new"]
    config = (tmp_path / "whisper_engine__org--new" / "config.pbtxt").read_text()
    assert 'name: "whisper_engine__org--new"' in config and "/models/new" in config
