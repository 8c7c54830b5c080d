# syntax=docker/dockerfile:1
# Frontend image: the OpenAI-compatible HTTP API alone (`python -m frontend`), talking gRPC to a Triton
# elsewhere (FRONTEND_TRITON_URL). No GPU, no Triton, no model weights.
# Build from the repository root:  docker build -f docker/frontend.Dockerfile -t whisper-triton/frontend:0.1.0 .
ARG PYTHON_VERSION=3.11.13
FROM python:${PYTHON_VERSION}-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /app

# A complete, pinned list (the lock's versions): --no-deps, as `make install` installs the lock.
COPY docker/frontend-requirements.txt /tmp/frontend-requirements.txt
RUN python -m pip install --no-cache-dir --no-deps --requirement /tmp/frontend-requirements.txt \
    && rm /tmp/frontend-requirements.txt

COPY pyproject.toml ./
COPY whisper_triton/ whisper_triton/
COPY frontend/ frontend/
# The project, installed (editable, as `make install` does): `python -m frontend` and webhook receivers'
# `from frontend.webhooks import verify` import it from site-packages.
RUN python -m pip install --no-cache-dir --no-deps --editable .

# /logs: where compose mounts the log volume shared with Triton (LOG_DIR); an empty volume takes this owner.
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin whisper \
    && mkdir -p /data /logs \
    && chown whisper:whisper /data /logs

# Listening beyond loopback needs FRONTEND_API_KEYS (or ADMIN_API_KEY): without one the frontend refuses
# to start, on purpose. Several replicas share tasks through PostgreSQL (DB_URL) and need one WEBHOOK_SECRET.
ENV FRONTEND_HOST=0.0.0.0 \
    FRONTEND_PORT=8000 \
    FRONTEND_DATA_DIR=/data

USER 10001:10001
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('FRONTEND_PORT', '8000') + '/health/live', timeout=4)"]

CMD ["python", "-m", "frontend"]
