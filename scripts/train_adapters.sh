#!/usr/bin/env bash
# Train a stage's LoRA on the embedded model from ../shared/data/train, resumably: a rerun continues from the
# last checkpoint in work/adapters/<stage> (sessions here stop at 180 minutes), and every checkpoint's adapter is
# copied into adapters/<base model>/<stage>/ so what was learnt survives a new machine once committed.
#
#   bash scripts/train_adapters.sh archetype        # or: explorer, anchor, archetype-mix
#
# archetype-mix trains the archetype stage's adapter on the archetype set plus a "types" set (the same prompt
# over each sentence's own fine-grained types and their definitions, answered with each mention's type: what
# calibration="matched" asks), shuffled together, warm-started from the archetype adapter; it is exported to
# adapters/<base model>/archetype-mix/, so the archetype adapter stays what its card measured.
#
# Environment: SAMNER_TRAIN_DATA (default ../shared/data/train), SAMNER_TOP_LAYERS (default 12; empty for all),
# SAMNER_PER_INPUT (sentences sampled from each corpus, in the order below), SAMNER_MAX_STEPS (-1: one epoch).
set -euo pipefail
cd "$(dirname "$0")/.."
run=${1:?usage: train_adapters.sh archetype|explorer|anchor|archetype-mix}
stage=${run%-mix}
data=${SAMNER_TRAIN_DATA:-../shared/data/train}
base=$(.venv/bin/python -c "from samner_dspy.serving.hf_export import export_hf; print(export_hf().folder)")
name=$(basename "$base")
work=work/adapters/$run
mkdir -p "$work"
set_file=work/sets/$run.jsonl
licence="Pile-NER CC BY-NC 4.0 (non-commercial); MIT Movie and Restaurant: none stated; WNUT-17 CC BY 4.0; \
biomedical corpora CC BY 4.0"
# Pile-NER (web text, hundreds of types: the nearest to CrossNER) weighs most; the biomedical corpora, five of
# one or two types each, least. MIT Movie and Restaurant are other papers' zero-shot test sets: the anchor and
# the archetype classifier may learn from them (never report such an adapter zero-shot on MIT); the explorer
# keeps to Pile-NER's recall data.
inputs=(-i "$data/pile-ner-dev/passages.bio" -i "$data/wnut17/train.conll")
counts=800,250
for corpus in BioNLP13CG BC5CDR NCBI-disease linnaeus AnatEM; do
  inputs+=(-i "$data/bio/$corpus.train.tsv")
  counts+=,60
done
if [ "$stage" = explorer ]; then
  inputs=(-i "$data/pile-ner-dev/passages.bio")
  counts=2217
else
  inputs+=(-i "$data/mit-movie/train.txt" -i "$data/mit-restaurant/train.txt")
  counts+=,150,100
fi
# The archetype classifier is asked over all 14 archetypes at inference, so it trains on that prompt too
# ("full"): trained on each sentence's own few archetypes (the paper's instance conditioning), the step-20
# adapter filed music works and organisations under Biology and Medicine on dev, the two archetypes the five
# biomedical corpora offer most. With the 14 definitions in the prompt, the 1,024-token cutoff keeps sentences
# and short passages, the length CrossNER's inputs have.
conditioning=()
[ "$stage" = archetype ] && conditioning=(--conditioning full)
# The anchor is asked about a domain's whole schema at inference (9-17 CrossNER labels, two or three of them in a
# sentence). Trained with 3 absent types an example (4-10 asked, most of them present), the first anchor filed one
# name under four or five labels of dev's 14 (a person as conference, location, organisation and person): it had
# learnt that nearly every asked type has an answer. 10 absent types make the asked lists as long as CrossNER's,
# mostly empty.
[ "$stage" = anchor ] && conditioning=(--negatives 10)
build_set() {  # build_set FILE SEED CONDITIONING-OPTIONS...: once; a rerun reuses the file
  local file=$1 seed=$2
  shift 2
  if [ ! -s "$file" ]; then
    mkdir -p work/sets
    .venv/bin/samner build "$stage" "${inputs[@]}" --per-input "${SAMNER_PER_INPUT:-$counts}" --seed "$seed" \
      "$@" -o "$file" --licence "$licence"
  fi
}
if [ "$run" = archetype-mix ]; then
  build_set work/sets/archetype.jsonl 0 --conditioning full
  build_set work/sets/archetype-types.jsonl 1 --conditioning types --type-definitions "$data/pile-ner-dev/definitions.json"
  [ -s "$set_file" ] || .venv/bin/python - "$set_file" work/sets/archetype.jsonl work/sets/archetype-types.jsonl <<'PY'
import random, sys
lines = [line for path in sys.argv[2:] for line in open(path, encoding="utf-8")]
random.Random(0).shuffle(lines)
open(sys.argv[1], "w", encoding="utf-8").writelines(lines)
PY
else
  build_set "$set_file" 0 "${conditioning[@]}"
fi
top=${SAMNER_TOP_LAYERS-12}
export_dir=adapters/$name/$run
warm=()
if [ -s "$export_dir/adapter_model.safetensors" ]; then
  warm=(--init-adapter "$export_dir")
elif [ "$run" = archetype-mix ]; then
  warm=(--init-adapter "adapters/$name/archetype")
fi
.venv/bin/samner train "$stage" --data "$set_file" --base-model "$base" -o "$work" --export-dir "$export_dir" \
  "${warm[@]}" --learning-rate 2e-4 --batch-size 1 --grad-accum 8 --epochs 1 --save-steps 5 --save-total-limit 2 \
  --logging-steps 1 --max-steps "${SAMNER_MAX_STEPS:--1}" ${top:+--top-layers "$top"}
