#!/usr/bin/env bash
# The evaluation protocol on the embedded Qwen2.5-Coder-0.5B, served by vLLM's CPU build (the fastest engine for
# a batch job on this machine: benchmarks/README.md, vllm_cpu.py). Every step resumes: rerun this script and it
# goes on where it stopped (finished sentences are skipped, a torn line is redone).
#   1. the decision sample: the first 20 dev sentences of each domain, the single-request baselines;
#   2. the report sample: test sentences 30-89 of each domain (none of them read for a choice), every row;
#   3. the noise check: the small preset rerun on the report sample's first 10 sentences per domain, cache off.
# Usage: bash scripts/report_sample.sh [dev|report|noise|all]   (SAMNER_THREADS: concurrent sentences, 16)
set -euo pipefail
cd "$(dirname "$0")/.."
step=${1:-all}
threads=${SAMNER_THREADS:-16}
crossner=${CROSSNER:-../shared/data/crossner}
results=evals/results
serve_dir=serve-report

base=$(.venv/bin/samner embedded export-hf)
port=${SAMNER_VLLM_PORT:-8011}
if ! curl -sf "http://127.0.0.1:$port/v1/models" >/dev/null; then
  .venv/bin/samner serve --base-model "$base" --anchor base --explorer base --archetype base \
    --port "$port" --output-dir "$serve_dir" > "$serve_dir.log" 2>&1 &
  trap 'kill $! 2>/dev/null || true' EXIT
  until curl -sf "http://127.0.0.1:$port/v1/models" >/dev/null; do sleep 5; done
fi
eval_args=(--data "$crossner" --config "$serve_dir/samner.toml" --threads "$threads")

if [[ $step == dev || $step == all ]]; then
  .venv/bin/samner eval "${eval_args[@]}" --split dev --limit 20 \
    --configs direct,direct-short,plain,anchor-only --against direct,anchor-only \
    --output-dir "$results/decision-dev-vllm-qwen2.5-coder-0.5b"
fi
baseline=${SAMNER_BASELINE:-$(.venv/bin/python - <<'PY'
import json
summary = json.load(open("evals/results/decision-dev-vllm-qwen2.5-coder-0.5b/report.json"))["results"]
print(max(("direct", "direct-short", "plain", "anchor-only"), key=lambda n: summary[n]["strict_avg_f1"]))
PY
)}
if [[ $step == report || $step == all ]]; then
  .venv/bin/samner eval "${eval_args[@]}" --split test --start 30 --limit 60 \
    --configs "direct,direct-short,plain,anchor-only,small,small-no-explorer,small-no-archetype,small-anchor-types,samner" \
    --against "$baseline,anchor-only" --output-dir "$results/report-vllm-qwen2.5-coder-0.5b"
fi
if [[ $step == noise || $step == all ]]; then
  .venv/bin/samner eval "${eval_args[@]}" --split test --start 30 --limit 10 --configs small --no-cache \
    --against "$baseline,anchor-only" --output-dir "$results/noise-vllm-qwen2.5-coder-0.5b"
  .venv/bin/samner noise "$results/report-vllm-qwen2.5-coder-0.5b/small.jsonl" \
    "$results/noise-vllm-qwen2.5-coder-0.5b/small.jsonl" -o "$results/noise-vllm-qwen2.5-coder-0.5b/noise.txt"
fi
