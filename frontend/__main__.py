"""`python -m frontend`: serve the HTTP API with uvicorn (Triton must be running)."""

from __future__ import annotations

import logging

import uvicorn

from frontend.app import create_app
from frontend.settings import frontend_settings


def main() -> None:
    settings = frontend_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
                timeout_graceful_shutdown=30)


if __name__ == "__main__":
    main()
