#!/usr/bin/env bash
# The evaluation protocol on the embedded Qwen2.5-Coder-0.5B (llama.cpp, the default engine). Every step resumes:
# rerun it and it goes on where it stopped (finished sentences are skipped, a torn line is redone), and a larger
# SAMNER_PER_DOMAIN extends a sample without redoing what it holds.
#   dev:    the decision sample, dev sentences 0..N-1 of each domain, the single-request baselines;
#   report: the report sample, test sentences 30..30+N-1 of each domain (none read for a choice), every row;
#   score:  the report sample scored as far as it goes (--score-only: the sentences every row finished), runs nothing;
#   noise:  one row (SAMNER_CONFIGS, default small) rerun with the response cache off on the report sample's
#           first SAMNER_PER_DOMAIN (10) sentences per domain, compared with the report's run of it.
# Usage: bash scripts/report_sample.sh dev|report|score|noise   (SAMNER_PER_DOMAIN: default 10 for dev, 60 for report;
# SAMNER_CONFIGS: the report's rows, default all of them)
set -euo pipefail
cd "$(dirname "$0")/.."
step=${1:?dev, report, score or noise}
crossner=${CROSSNER:-../shared/data/crossner}
results=evals/results
dev=$results/decision-dev-qwen2.5-coder-0.5b
report=$results/report-qwen2.5-coder-0.5b
eval_args=(--data "$crossner" --threads "${SAMNER_THREADS:-2}")
score_only=()
if [ "$step" = score ]; then score_only=(--score-only); fi
# The strongest single-request baseline on the decision sample: every report row is paired against it.
strongest() {
  .venv/bin/python -c 'import json,sys; from samner_dspy.evals.report import strongest_baseline
print(strongest_baseline(json.load(open(sys.argv[1]))["results"]))' "$dev/report.json"
}
case $step in
  dev)
    .venv/bin/samner eval "${eval_args[@]}" --split dev --limit "${SAMNER_PER_DOMAIN:-10}" \
      --configs direct,direct-short,plain,anchor-only --against direct,anchor-only --output-dir "$dev" ;;
  report|score)
    # small first: the rows after it reuse its discovery requests from the response cache. trained is SAMNER()'s
    # default (the committed adapters), plain-roles the baseline with the same person-role rule.
    .venv/bin/samner eval "${eval_args[@]}" --split test --start 30 --limit "${SAMNER_PER_DOMAIN:-60}" \
      --configs "${SAMNER_CONFIGS:-small,anchor-only,trained,plain,plain-roles,small-anchor-types,direct,direct-short,small-no-archetype,small-no-explorer,samner}" \
      --against "$(strongest),anchor-only" --output-dir "$report" "${score_only[@]}" ;;
  noise)
    row=${SAMNER_CONFIGS:-small}
    .venv/bin/samner eval "${eval_args[@]}" --split test --start 30 --limit "${SAMNER_PER_DOMAIN:-10}" --configs "$row" \
      --no-cache --against "$row" --output-dir "$results/noise-qwen2.5-coder-0.5b"
    .venv/bin/samner noise "$report/$row.jsonl" "$results/noise-qwen2.5-coder-0.5b/$row.jsonl" \
      -o "$results/noise-qwen2.5-coder-0.5b/noise-$row.txt" ;;
  *) echo "unknown step $step: dev, report, score or noise" >&2; exit 2 ;;
esac
