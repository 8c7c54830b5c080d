#!/usr/bin/env bash
# Installs the Debian packages the project needs when they are missing (idempotent, quiet when done).
#   scripts/ensure_system.sh serve   what `make serve` needs
#   scripts/ensure_system.sh test    plus what the test suite needs to generate its audio
#   scripts/ensure_system.sh bench   plus what the benchmark needs to generate its audio
set -euo pipefail
profile=${1:-serve}
need=()
python=${PYTHON:-python3.11}

# The Triton Python-backend stub links the system libpython3.11.so.1.0. (Not `grep -q`: it stops reading at
# the first match, ldconfig then dies of SIGPIPE, and pipefail reads that as missing.)
ldconfig -p 2>/dev/null | grep 'libpython3\.11\.so\.1\.0' >/dev/null || need+=(libpython3.11)
# tcmalloc for Triton's processes (TRITON_MALLOC=auto): CTranslate2's large buffers cost glibc a page fault per page
# and batch.
ldconfig -p 2>/dev/null | grep 'libtcmalloc_minimal\.so\.4' >/dev/null || need+=(libtcmalloc-minimal4)
command -v "$python" >/dev/null 2>&1 || need+=(python3.11)
if command -v "$python" >/dev/null 2>&1 && ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  need+=(python3.11-venv)
fi
if [[ $profile == test || $profile == bench ]]; then
  command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
  command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
  command -v flite >/dev/null 2>&1 || need+=(flite)
  command -v npm >/dev/null 2>&1 || need+=(npm)
fi
if [[ $profile == test ]]; then
  [[ -x /usr/bin/chromium ]] || need+=(chromium)   # the web page's browser tests
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)  # the PostgreSQL store tests
fi
((${#need[@]})) || exit 0

echo "Installing system packages: ${need[*]}"
sudo=()
if [[ $(id -u) != 0 ]]; then
  command -v sudo >/dev/null 2>&1 || { echo "Run as root or install: ${need[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
