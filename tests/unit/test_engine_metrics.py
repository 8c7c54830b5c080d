"""The engine model's window counters are updated by one thread at a time. Triton 2.51's Python backend writes a
metric update into a shared-memory block owned by the Metric object with the GIL released: two engine workers
counting at once handed tritonserver a freed block, and tritonserver died of SIGSEGV in
TRITONSERVER_MetricIncrement (found under load; every request failed until the Supervisor restarted Triton)."""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

import pytest

from whisper_triton.scheduler import WindowCancelled

MODEL = Path(__file__).resolve().parents[2] / "model_repository" / "whisper_engine" / "1" / "model.py"


class OverlapCheckingMetric:
    """A metric that records how many threads were inside an update at once."""

    inside = 0
    most = 0
    guard = threading.Lock()

    def __init__(self) -> None:
        self.value = 0

    def increment(self, value: float) -> None:
        cls = OverlapCheckingMetric
        with cls.guard:
            cls.inside += 1
            cls.most = max(cls.most, cls.inside)
        time.sleep(0.001)  # where the backend, GIL released, writes the update
        self.value += int(value)
        with cls.guard:
            cls.inside -= 1


@pytest.fixture
def engine_model(monkeypatch: pytest.MonkeyPatch) -> Any:
    fake = types.ModuleType("triton_python_backend_utils")
    fake.TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake)
    spec = importlib.util.spec_from_file_location("whisper_engine_model_under_test", MODEL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_workers_never_update_a_metric_at_once(engine_model: Any) -> None:
    model = engine_model.TritonPythonModel.__new__(engine_model.TritonPythonModel)
    model.outcomes = {outcome: OverlapCheckingMetric() for outcome in ("decoded", "cancelled", "failed")}
    model.metrics_lock = threading.Lock()
    OverlapCheckingMetric.most = 0

    def worker() -> None:
        for window in range(25):
            model.outcome_payload(window, WindowCancelled())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert model.outcomes["cancelled"].value == 200
    assert OverlapCheckingMetric.most == 1
