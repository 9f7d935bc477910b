"""Seconds and requests per sentence on the embedded model, with gold next to predictions.

    python benchmarks/embedded_sample.py --per-domain 2 --max-tokens 30

Runs the default SAMNER program (every stage on the embedded model, served over HTTP on 127.0.0.1)
on the first short test sentences of each CrossNER domain and prints what it got right and wrong.
"""

from __future__ import annotations

import argparse
import json
import time
from itertools import islice
from pathlib import Path

from samner_dspy import SAMNER, Schema
from samner_dspy.config import SamnerConfig
from samner_dspy.evals.crossner import read_bio

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "crossner"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--domains", default="ai,literature,music,politics,science")
    parser.add_argument("--per-domain", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=30, help="skip sentences longer than this")
    parser.add_argument("--output", type=Path, help="also write one JSON line per sentence here")
    args = parser.parse_args()

    program = SAMNER(SamnerConfig.embedded(trained=False), preset="paper")  # what its committed figures measured
    program.backends()  # start the embedded server before timing
    totals = {"sentences": 0, "seconds": 0.0, "requests": 0, "gold": 0, "predicted": 0, "correct": 0, "spans": 0}
    sink = args.output.open("w", encoding="utf-8") if args.output else None
    for domain in args.domains.split(","):
        schema = Schema.from_name(f"crossner:{domain}")
        sentences = (s for s in read_bio(args.data / domain / "test.txt") if len(s.tokens) <= args.max_tokens)
        for sentence in islice(sentences, args.per_domain):
            started = time.perf_counter()
            result = program(sentence.text, schema)
            seconds = time.perf_counter() - started
            gold = {(e.start, e.end, e.label) for e in sentence.entities}
            predicted = {(e.start, e.end, e.label) for e in result.entities}
            gold_spans = {(s, e) for s, e, _ in gold}
            totals["sentences"] += 1
            totals["seconds"] += seconds
            totals["requests"] += result.trace.requests
            totals["gold"] += len(gold)
            totals["predicted"] += len(predicted)
            totals["correct"] += len(gold & predicted)
            totals["spans"] += len(gold_spans & {(s, e) for s, e, _ in predicted})
            print(f"\n[{domain}] {sentence.text}")
            print(f"  {seconds:.1f} s, {result.trace.requests} requests")
            print("  gold:     ", sorted((sentence.text[s:e], label) for s, e, label in gold))
            print("  predicted:", sorted((e.text, e.label, e.archetype) for e in result.entities))
            if sink:
                record = {
                    "domain": domain,
                    "text": sentence.text,
                    "gold": [[e.text, e.label] for e in sentence.entities],
                    "entities": [e.to_dict() for e in result.entities],
                    "seconds": seconds,
                    "trace": result.trace.to_dict(),
                }
                sink.write(json.dumps(record, ensure_ascii=False) + "\n")
                sink.flush()
    if sink:
        sink.close()
    n = max(totals["sentences"], 1)
    precision = totals["correct"] / max(totals["predicted"], 1)
    recall = totals["correct"] / max(totals["gold"], 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-9)
    print(
        f"\n{totals['sentences']} sentences: {totals['seconds'] / n:.1f} s/sentence, "
        f"{totals['requests'] / n:.1f} requests/sentence; strict P {precision:.2f} R {recall:.2f} F1 {f1:.2f}; "
        f"gold spans found {totals['spans']}/{totals['gold']}"
    )


if __name__ == "__main__":
    main()
