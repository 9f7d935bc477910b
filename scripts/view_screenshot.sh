#!/usr/bin/env bash
# Regenerate docs/view.png: `samner view` on the small evaluation example the browser test uses
# (tests/fixtures/view_example.jsonl, with a report.json beside it), rendered by headless Chromium with the
# third entity (São Paulo, a wrong label) selected.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp tests/fixtures/view_example.jsonl "$work/samner.jsonl"
.venv/bin/python - "$work" <<'PY'
import sys
from pathlib import Path

from samner_dspy.evals import report
from samner_dspy.evals.runner import read_results

folder = Path(sys.argv[1])
results = {"samner": read_results(folder / "samner.jsonl")}
report.write(report.summarize(results), folder, "view example", "samner eval (example)", results)
PY
.venv/bin/samner view "$work/samner.jsonl" -o "$work/view.html"
chromium --headless=new --no-sandbox --disable-gpu --no-first-run --hide-scrollbars --user-data-dir="$work/profile" \
    --window-size=1200,1000 --screenshot="$PWD/docs/view.png" "file://$work/view.html?select=0.2" 2>/dev/null
ls -l docs/view.png
