"""`python -m frontend`: serve the HTTP API with uvicorn (Triton must be running)."""

from __future__ import annotations

import uvicorn

from frontend.app import create_app
from frontend.deadlines import ClientDeadlines, deadline_settings
from frontend.logs import configure_logging
from frontend.settings import frontend_settings
from whisper_triton.log_files import log_file_settings


def main() -> None:
    settings = frontend_settings()
    files = log_file_settings()
    configure_logging(settings.log_level, json=settings.log_json, files=files)
    app = ClientDeadlines(create_app(settings, files), deadline_settings())
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, log_config=None,
                timeout_graceful_shutdown=30)


if __name__ == "__main__":
    main()
