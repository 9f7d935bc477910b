#!/usr/bin/env bash
# Fine-tuning on your own labelled data, before and after, on the embedded model: WNUT-17 stands in for "your
# data" (train.conll to train on, dev.conll to score on; CC BY 4.0, in ../shared/data/train). It trains a fresh
# anchor adapter on WNUT-17 alone (not the committed anchor, which saw other corpora too), then scores the
# anchor's single request on the dev sentences without and with it, and pairs the two runs (samner noise).
#   bash scripts/own_data.sh            # SAMNER_OWN_LIMIT dev sentences (default 100), SAMNER_OWN_SENTENCES to train on (400)
# SAMNER_OWN_NEGATIVES: absent types each example asks about too (default 5: with WNUT-17's six types every example
# asks about all six, as the anchor is asked at inference; with 3 the adapter found more spans but typed them worse
# than the base model, evals/results/own-data-wnut17/before-after-negatives3.txt).
# SAMNER_OWN_INIT: an adapter to start from (the committed anchor, say) instead of a fresh LoRA; the runs are then
# named ...-from-<its folder name>.
# Every step resumes: the set is built once, training continues from its checkpoints, evaluation skips what it holds.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${SAMNER_TRAIN_DATA:-../shared/data/train}/wnut17
out=evals/results/own-data-wnut17
schema=$out/schema.json
negatives=${SAMNER_OWN_NEGATIVES:-5}
init=${SAMNER_OWN_INIT:-}
run=negatives$negatives${init:+-from-$(basename "$init")}
set_file=work/sets/wnut17-anchor-negatives$negatives.jsonl
adapter=work/adapters/wnut17-anchor-$run
base=$(.venv/bin/python -c "from samner_dspy.serving.hf_export import export_hf; print(export_hf().folder)")
[ -s "$set_file" ] || .venv/bin/samner build anchor -i "$data/train.conll" --per-input "${SAMNER_OWN_SENTENCES:-400}" \
  --negatives "$negatives" --seed 0 -o "$set_file" --licence "WNUT-17 CC BY 4.0"
.venv/bin/samner train anchor --data "$set_file" --base-model "$base" -o "$adapter" --learning-rate 2e-4 \
  --batch-size 1 --grad-accum 8 --epochs 1 --save-steps 10 --save-total-limit 1 --logging-steps 1 --top-layers 12 \
  ${init:+--init-adapter "$init"}
score() {  # score NAME [ADAPTER]: the anchor's request alone on the dev sentences, into $out/NAME/
  env ${2:+SAMNER_ANCHOR_ADAPTER=$2} .venv/bin/samner eval --data-file "$data/dev.conll" --schema "$schema" \
    --limit "${SAMNER_OWN_LIMIT:-100}" --configs anchor-only --against anchor-only --threads 2 --output-dir "$out/$1"
}
score before
score "after-$run" "$adapter"
.venv/bin/samner noise "$out/before/anchor-only.jsonl" "$out/after-$run/anchor-only.jsonl" -o "$out/before-after-$run.txt"
