"""The engine model's window counters are updated by one thread at a time. Triton 2.51's Python backend writes a
metric update into a shared-memory block owned by the Metric object with the GIL released: two engine workers
counting at once handed tritonserver a freed block, and tritonserver died of SIGSEGV in
TRITONSERVER_MetricIncrement (found under load; every request failed until the Supervisor restarted Triton)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from whisper_triton.scheduler import WindowCancelled


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


def test_workers_never_update_a_metric_at_once(triton_model: Callable[[str], Any]) -> None:
    engine_model = triton_model("whisper_engine")
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
