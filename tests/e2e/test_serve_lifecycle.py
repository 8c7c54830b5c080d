"""`make serve`'s process: restarts Triton when it dies, stops both on Ctrl-C."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from harness.assets import jfk_wav
from harness.stack import start_served


def _transcribe(base_url: str) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/audio/transcriptions", data={"model": "whisper-1"},
                      files={"file": ("a.wav", jfk_wav().read_bytes())}, timeout=120)


def test_triton_is_restarted_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    served = start_served(tmp_path, "tiny.en")
    try:
        assert _transcribe(served.base_url).status_code == 200
        [pid] = served.triton_pids()
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
    finally:
        code = served.stop()
    assert code == 0, served.log()[-3000:]
    assert served.triton_pids() == []
