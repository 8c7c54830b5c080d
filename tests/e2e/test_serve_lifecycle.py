"""`make serve`'s process: restarts Triton when it dies, stops both on Ctrl-C; Triton's processes run on tcmalloc."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from harness.assets import jfk_wav
from harness.procfs import stub_pids
from harness.stack import Served, start_served
from whisper_triton.launcher import SHARED_MEMORY, shared_memory_prefix


def _transcribe(base_url: str) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/audio/transcriptions", data={"model": "whisper-1"},
                      files={"file": ("a.wav", jfk_wav().read_bytes())}, timeout=120)


def test_triton_is_restarted_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    served = start_served(tmp_path, "tiny.en")
    try:
        assert _transcribe(served.base_url).status_code == 200
        [pid] = served.triton_pids()
        regions = SHARED_MEMORY.glob(f"{shared_memory_prefix(served.grpc_port)}*")
        old = {path.name for path in regions}
        assert old  # the Python models' shared memory, named for this server
        os.kill(pid, signal.SIGKILL)
        during = _transcribe(served.base_url)
        assert during.status_code == 503, during.text
        assert during.headers["retry-after"]
        assert during.json()["error"]["type"] == "server_error"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            response = _transcribe(served.base_url)
            if response.status_code == 200:
                break
            assert response.status_code == 503, response.text
            time.sleep(0.5)
        assert response.status_code == 200 and "country" in response.json()["text"]
        assert served.triton_pids() and served.triton_pids() != [pid]
        assert "restarting" in served.log()
        regions = SHARED_MEMORY.glob(f"{shared_memory_prefix(served.grpc_port)}*")
        now = {path.name for path in regions}
        assert now and not now & old  # the killed server's regions (memory) were removed, not left for ever
    finally:
        code = served.stop()
    assert code == 0, served.log()[-3000:]
    assert served.triton_pids() == []


def test_triton_and_its_model_processes_run_on_tcmalloc(served: Served) -> None:
    """TRITON_MALLOC=auto with tcmalloc installed (make installs it): on glibc's malloc the engine faulted in
    CTranslate2's large buffers again for every batch (3 million page faults for a 10-minute file)."""
    triton = served.triton_pids()
    models = stub_pids(served.grpc_port, "whisper") + stub_pids(served.grpc_port, "whisper_engine__tiny.en")
    assert triton and len(models) >= 2
    for pid in [*triton, *models]:
        assert "libtcmalloc" in Path(f"/proc/{pid}/maps").read_text(), pid
    assert "libtcmalloc" not in Path(f"/proc/{served.process.pid}/maps").read_text()  # the frontend: not preloaded
