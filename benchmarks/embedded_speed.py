"""Seconds, requests and tokens per sentence on the embedded model: SAM-NER against one direct prompt.

    python benchmarks/embedded_speed.py --per-domain 10 --output benchmarks/results/embedded_speed.jsonl

The first ``--per-domain`` test sentences of each CrossNER domain, every configuration on the same
sentences, interleaved sentence by sentence (direct prompting, SAM-NER's default modes, its per-entity
modes), so that background load on a shared machine falls on all of them alike. Per configuration:
seconds per sentence (median and p90), requests, prompt tokens sent, prompt tokens the server actually
evaluated (the rest came from its evaluated prefix), completion tokens, strict F1 and the time ratio to
direct prompting. Evaluated tokens come from the embedded servers' own logs (llama.cpp's "prompt eval"
line per request, ``EmbeddedServer.evaluated_prompt_tokens``), read between sentences; sentences run one at
a time, so each line belongs to one.

One JSON line per (configuration, sentence) goes to ``--output`` as it finishes (figures and predicted
spans, no sentence text); a rerun skips what the file holds, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from samner_dspy import SAMNER
from samner_dspy.config import SamnerConfig
from samner_dspy.evals.crossner import load_crossner
from samner_dspy.evals.metric import Scores, gold_mentions, label_accuracy, macro_average, score, span_score
from samner_dspy.evals.paired import compare
from samner_dspy.formats.records import read_records
from samner_dspy.programs import DirectNER
from samner_dspy.schema import Schema
from samner_dspy.serving.embedded import running_servers

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "crossner"
DOMAINS = "ai,literature,music,politics,science"
UNTRAINED = SamnerConfig.embedded(trained=False)
CONFIGURATIONS = {
    "direct": lambda: DirectNER(UNTRAINED),
    "plain": lambda: DirectNER(UNTRAINED, prompt="plain"),
    "samner": lambda: SAMNER(UNTRAINED, preset="paper"),
    "per-entity": lambda: SAMNER(UNTRAINED, preset="paper", ccr="verify", calibration="entity"),
    "small": lambda: SAMNER.for_small_models(UNTRAINED),
    "trained": lambda: SAMNER(),  # the default: the trained preset on the committed adapters
}


def evaluated_prompt_tokens() -> int:
    """Prompt tokens every embedded server of this process has evaluated so far."""
    return sum(server.evaluated_prompt_tokens() for server in running_servers())


def read_done(path: Path) -> dict[tuple[str, str], dict]:
    """What an earlier run wrote (a line torn by a kill is skipped, so its sentence is run again)."""
    records = read_records(path, check=False) if path.is_file() else []
    return {(record["configuration"], record["key"]): record for record in records}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def domain_of(record: dict) -> str:
    return record["key"].split(":")[0]


def paired_against_direct(records: list[dict], gold: dict[str, list], names: list[str]) -> dict[str, dict]:
    """Macro strict F1 of each configuration minus direct prompting's, with a 95% bootstrap interval."""
    results = {
        name: [
            {
                "key": r["key"],
                "domain": domain_of(r),
                "gold": gold[r["key"]],
                "entities": [{"start": s, "end": e, "label": label} for s, e, label in r["entities"]],
            }
            for r in records
            if r["configuration"] == name
        ]
        for name in names
    }
    return compare(results)


def summarize(records: list[dict], gold: dict[str, list], names: list[str]) -> list[dict]:
    rows = []
    direct_seconds = None
    for name in names:
        mine = [r for r in records if r["configuration"] == name]
        if not mine:
            continue
        seconds = [r["seconds"] for r in mine]
        golds = [gold[r["key"]] for r in mine]
        predicted = [[tuple(m) for m in r["entities"]] for r in mine]
        strict: Scores = score(golds, predicted)
        spans: Scores = span_score(golds, predicted)
        by_domain = {
            domain: score(
                [g for g, r in zip(golds, mine, strict=True) if domain_of(r) == domain],
                [p for p, r in zip(predicted, mine, strict=True) if domain_of(r) == domain],
            )
            for domain in sorted({domain_of(r) for r in mine})
        }
        # After the first sentence of the run: the hit rate a warm server gives.
        warm = mine[1:] or mine
        sent = sum(r["prompt_tokens"] for r in warm)
        row = {
            "configuration": name,
            "sentences": len(mine),
            "median_s": statistics.median(seconds),
            "p90_s": percentile(seconds, 0.9),
            "mean_s": statistics.fmean(seconds),
            "requests": statistics.fmean(r["requests"] for r in mine),
            "prompt_tokens": statistics.fmean(r["prompt_tokens"] for r in mine),
            "evaluated_tokens": statistics.fmean(r["evaluated_tokens"] for r in mine),
            "evaluated_share_warm": sum(r["evaluated_tokens"] for r in warm) / sent if sent else 0.0,
            "completion_tokens": statistics.fmean(r["completion_tokens"] for r in mine),
            "strict_f1": 100 * strict.f1,
            "macro_f1": 100 * macro_average(by_domain),
            "span_f1": 100 * spans.f1,
            "label_accuracy": label_accuracy(strict, spans),
        }
        if name == "direct":
            direct_seconds = row["mean_s"]
        row["ratio_to_direct"] = row["mean_s"] / direct_seconds if direct_seconds else None
        rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    header = (
        "| configuration | sentences | median s | p90 s | mean s | x direct | requests | prompt sent | "
        "prompt evaluated | evaluated share (warm) | completion | macro strict F1 | micro strict F1 | span F1 |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for r in rows:
        ratio = f"{r['ratio_to_direct']:.2f}" if r["ratio_to_direct"] else "-"
        print(
            f"| {r['configuration']} | {r['sentences']} | {r['median_s']:.1f} | {r['p90_s']:.1f} | {r['mean_s']:.1f} "
            f"| {ratio} | {r['requests']:.1f} | {r['prompt_tokens']:.0f} | {r['evaluated_tokens']:.0f} "
            f"| {100 * r['evaluated_share_warm']:.0f}% | {r['completion_tokens']:.0f} "
            f"| {r['macro_f1']:.1f} | {r['strict_f1']:.1f} "
            f"| {r['span_f1']:.1f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--domains", default=DOMAINS)
    parser.add_argument("--per-domain", type=int, default=10)
    parser.add_argument("--configs", default=",".join(CONFIGURATIONS))
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/embedded_speed.jsonl"))
    parser.add_argument("--report-only", action="store_true", help="summarise --output without running anything")
    args = parser.parse_args()
    names = [n for n in args.configs.split(",") if n]
    domains = [d for d in args.domains.split(",") if d]
    sentences = {
        f"{domain}:{i}": (domain, s)
        for domain in domains
        for i, s in enumerate(load_crossner(domain, "test", args.data)[: args.per_domain])
    }
    gold = {key: gold_mentions(s) for key, (_, s) in sentences.items()}
    done = read_done(args.output)
    if not args.report_only:
        programs = {name: CONFIGURATIONS[name]() for name in names}
        for program in programs.values():
            program.backends()  # start the embedded servers before timing
        args.output.parent.mkdir(parents=True, exist_ok=True)
        with args.output.open("a", encoding="utf-8") as sink:
            for key, (domain, sentence) in sentences.items():
                schema = Schema.from_name(f"crossner:{domain}")
                for name, program in programs.items():
                    if (name, key) in done:
                        continue
                    evaluated_before = evaluated_prompt_tokens()
                    started = time.perf_counter()
                    result = program(sentence.text, schema)
                    seconds = time.perf_counter() - started
                    trace = result.trace.to_dict()
                    stages = [s for s in trace["stages"] if s.get("requests")]
                    record = {
                        "configuration": name,
                        "key": key,
                        "seconds": seconds,
                        "requests": sum(s["requests"] for s in stages),
                        "prompt_tokens": sum(s.get("prompt_tokens") or 0 for s in stages),
                        "completion_tokens": sum(s.get("completion_tokens") or 0 for s in stages),
                        "evaluated_tokens": evaluated_prompt_tokens() - evaluated_before,
                        "stages": {s["stage"]: round(s["latency_s"], 2) for s in stages},
                        "entities": [[e.start, e.end, e.label] for e in result.entities],
                    }
                    done[name, key] = record
                    sink.write(json.dumps(record) + "\n")
                    sink.flush()
                    print(f"{key:14s} {name:10s} {seconds:6.1f} s  {record['completion_tokens']:4d} completion tokens")
    records = [r for r in done.values() if r["key"] in sentences]
    print_table(summarize(records, gold, names))
    for name, paired in paired_against_direct(records, gold, names).items():
        if paired["sentences"] < 2 * len(paired["domains"]):
            print(f"{name} - direct: too few sentences per domain for a bootstrap interval")
            continue
        print(
            f"{name} - direct: {100 * paired['difference']:+.1f} macro strict F1, 95% interval "
            f"[{100 * paired['low']:+.1f}, {100 * paired['high']:+.1f}] over {paired['sentences']} paired sentences "
            f"({paired['verdict']})"
        )


if __name__ == "__main__":
    main()
