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


class Overlaps:
    """How many threads were inside a metric update at once, at most (across the metrics that share it)."""

    def __init__(self) -> None:
        self.guard = threading.Lock()
        self.inside = 0
        self.most = 0


class OverlapCheckingMetric:
    def __init__(self, overlaps: Overlaps) -> None:
        self.overlaps = overlaps
        self.value = 0

    def increment(self, value: float) -> None:
        with self.overlaps.guard:
            self.overlaps.inside += 1
            self.overlaps.most = max(self.overlaps.most, self.overlaps.inside)
        time.sleep(0.001)  # where the backend, GIL released, writes the update
        self.value += int(value)
        with self.overlaps.guard:
            self.overlaps.inside -= 1


def test_workers_never_update_a_metric_at_once(triton_model: Callable[[str], Any]) -> None:
    engine_model = triton_model("whisper_engine")
    model = engine_model.TritonPythonModel.__new__(engine_model.TritonPythonModel)
    overlaps = Overlaps()
    model.outcomes = {outcome: OverlapCheckingMetric(overlaps) for outcome in ("decoded", "cancelled", "failed")}
    model.metrics_lock = threading.Lock()

    def worker() -> None:
        for window in range(25):
            model.outcome_payload(window, WindowCancelled())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert model.outcomes["cancelled"].value == 200
    assert overlaps.most == 1
