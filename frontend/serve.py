"""`make serve`: Triton (supervised, restarted if it dies) and the frontend, in the foreground.

Ctrl-C stops the frontend first (in-flight requests finish), then Triton.
"""

from __future__ import annotations

import logging
import signal
import sys

import uvicorn

from frontend.app import create_app
from frontend.deadlines import ClientDeadlines, deadline_settings
from frontend.logs import configure_logging
from frontend.settings import frontend_settings
from whisper_triton.launcher import Supervisor, TritonError, TritonServer, triton_settings
from whisper_triton.log_files import log_file_settings
from whisper_triton.models import ModelError, resolve_model
from whisper_triton.repository import model_specs
from whisper_triton.settings import SettingsError, model_settings

log = logging.getLogger("serve")


def main() -> int:
    configure_logging("info", json=False)
    try:
        model = model_settings()
        triton = triton_settings()
        frontend = frontend_settings(triton_url=triton.grpc_url)  # the Triton started here, unless set
        deadlines = deadline_settings()
        files = log_file_settings()
        for spec in model_specs():
            log.info("preparing model %s (first use may convert it)", spec)
            resolved = resolve_model(spec, model.cache_path())
            log.info("model %s at %s", resolved.name, resolved.path)
    except (SettingsError, ModelError) as exc:
        log.error("%s", exc)
        return 2
    configure_logging(frontend.log_level, json=frontend.log_json, files=files)
    supervisor = Supervisor(TritonServer(triton, model.cache_path() / "triton"))
    try:
        supervisor.start()
    except TritonError as exc:
        log.error("%s", exc)
        supervisor.stop()
        return 1
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal: end quietly.
    signal.signal(signal.SIGTERM, _exit_quietly)
    signal.signal(signal.SIGINT, _exit_quietly)
    try:
        log.info("frontend on http://%s:%d (API docs at /docs)", frontend.host, frontend.port)
        uvicorn.run(ClientDeadlines(create_app(frontend, files), deadlines), host=frontend.host, port=frontend.port,
                    log_level=frontend.log_level, log_config=None, timeout_graceful_shutdown=30,
                    ws_max_size=WS_MAX_BYTES)
    except SystemExit:
        pass
    finally:
        log.info("stopping Triton")
        supervisor.stop()
    return 0


# A Realtime append carries up to 15 MiB of audio, base64-encoded in JSON: about 20 MiB.
WS_MAX_BYTES = 24 * 1024 * 1024


def _exit_quietly(signum: int, frame: object) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
