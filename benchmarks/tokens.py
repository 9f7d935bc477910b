"""Requests and tokens per sentence from evaluation traces, and a projection to all of CrossNER's test sets.

    python benchmarks/tokens.py evals/results/qwen2.5-coder-0.5b --configs samner,per-entity

Every record that `samner eval` writes carries its stage trace with the requests and the prompt and
completion tokens the server reported. Only sentences that every listed configuration finished are
counted, so the rows compare like with like. The projection divides the tokens that all 2,506 CrossNER
test sentences would need by a published throughput of vLLM serving an 8B model on one H100 (by default
3,400 output tokens/s: Lambda's vLLM benchmark, Llama-3.1-8B FP8 on 1xH100-80GB-SXM, 320 concurrent
prompts, vLLM 0.5.4; vLLM 0.6 roughly doubled it). Completion tokens bound the time because decoding
is sequential per request while prompt prefill is batched and, for the long shared prefixes
(instructions, definitions, schema), served from vLLM's prefix cache.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from samner_dspy.evals.crossner import read_bio
from samner_dspy.evals.metric import score
from samner_dspy.evals.runner import read_results

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "crossner"
PAPER_SECONDS = 7247  # appendix C: the whole pipeline on CrossNER's test sets, one A800
PUBLISHED_OUTPUT_TOKENS_PER_S = 3400.0


def request_key(record: dict, stage: dict) -> str:
    return json.dumps([record["key"], stage["stage"], stage.get("inputs")], sort_keys=True, ensure_ascii=False)


def reported_tokens(loaded: dict[str, dict[str, dict]]) -> dict[str, tuple[int, int]]:
    """Tokens of each distinct stage request, from whichever configuration sent it to the server.

    An ablation's identical request is answered from the evaluation cache and reports no usage; it is
    the same request, so it costs what the first one did."""
    tokens: dict[str, tuple[int, int]] = {}
    for records in loaded.values():
        for record in records.values():
            for stage in record["trace"]["stages"]:
                if stage.get("prompt_tokens"):
                    tokens[request_key(record, stage)] = (stage["prompt_tokens"], stage["completion_tokens"] or 0)
    return tokens


def per_sentence(records: list[dict], tokens: dict[str, tuple[int, int]]) -> dict[str, float]:
    totals = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "unpriced": 0}
    for record in records:
        for stage in record["trace"]["stages"]:
            if not stage.get("requests"):
                continue
            totals["requests"] += stage["requests"]
            prompt, completion = tokens.get(request_key(record, stage), (0, 0))
            totals["prompt_tokens"] += prompt
            totals["completion_tokens"] += completion
            totals["unpriced"] += 0 if prompt else stage["requests"]
    return {key: value / max(len(records), 1) for key, value in totals.items()}


def strict_f1(records: list[dict]) -> float:
    gold = [[tuple(m) for m in r["gold"]] for r in records]
    predicted = [[(e["start"], e["end"], e["label"]) for e in r["entities"]] for r in records]
    return score(gold, predicted).f1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("results", type=Path, help="a `samner eval --output-dir` folder")
    parser.add_argument("--configs", default="samner,per-entity")
    parser.add_argument("--data", type=Path, default=DATA, help="CrossNER folder, to count the test sentences")
    parser.add_argument("--output-tokens-per-s", type=float, default=PUBLISHED_OUTPUT_TOKENS_PER_S)
    args = parser.parse_args()

    names = [n for n in args.configs.split(",") if (args.results / f"{n}.jsonl").is_file()]
    loaded = {name: {r["key"]: r for r in read_results(args.results / f"{name}.jsonl")} for name in names}
    common = set.intersection(*(set(records) for records in loaded.values())) if loaded else set()
    test_sentences = sum(sum(1 for _ in read_bio(path)) for path in sorted(args.data.glob("*/test.txt")))
    print(f"{len(common)} sentences finished by every configuration; CrossNER test sets: {test_sentences} sentences")
    print(f"projection at {args.output_tokens_per_s:.0f} output tokens/s (vLLM, 8B model, one H100)\n")
    tokens = reported_tokens(loaded)
    header = "| configuration | strict F1 | requests | prompt tokens | completion tokens | projected s | paper s |"
    print(header + "\n|---|---|---|---|---|---|---|")
    for name in names:
        records = [loaded[name][key] for key in sorted(common)]
        figures = per_sentence(records, tokens)
        projected = test_sentences * figures["completion_tokens"] / args.output_tokens_per_s
        print(
            f"| {name} | {strict_f1(records):.3f} | {figures['requests']:.2f} | {figures['prompt_tokens']:.0f} | "
            f"{figures['completion_tokens']:.0f} | {projected:.0f} | {PAPER_SECONDS} |"
        )
        if figures["unpriced"]:
            print(f"  ({figures['unpriced']:.2f} requests per sentence had no reported usage in any trace)")


if __name__ == "__main__":
    main()
