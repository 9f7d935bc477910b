"""Sentences per second against a fixed-latency OpenAI-compatible server, as a ratio to the ideal.

    python benchmarks/throughput.py --latency 0.1 --concurrency 1,8,32
    python benchmarks/throughput.py --latency 0 --concurrency 1          # the program's own overhead

The server is `samner_dspy.serving.stand_in` in its own process (so its CPU time is not the program's). The
ideal is what latency, concurrency and the stage dependency chain allow: with the two extractors in
parallel, then the archetype stage, then calibration, a sentence needs three sequential round trips,
so ``ideal = concurrency / (3 * latency)`` sentences per second.
"""

from __future__ import annotations

import argparse
import time
from itertools import cycle, islice
from pathlib import Path

from samner_dspy import SAMNER, SamnerConfig, Schema
from samner_dspy.evals.crossner import read_bio
from samner_dspy.serving.stand_in import stand_in_process

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "crossner" / "music" / "test.txt"
ROUND_TRIPS = 3


def measure(program: SAMNER, texts: list[str], schema: Schema, concurrency: int) -> tuple[float, int, float]:
    """Seconds for the batch, failures, and mean requests per sentence."""
    started = time.perf_counter()
    items = list(program.annotate_batch(texts, schema, concurrency=concurrency))
    seconds = time.perf_counter() - started
    failures = sum(not item.ok for item in items)
    requests = sum(item.prediction.trace.requests for item in items if item.ok) / max(len(items) - failures, 1)
    return seconds, failures, requests


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--per-slot", type=int, default=8, help="sentences per unit of concurrency")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()

    sentences = [s.text for s in read_bio(args.data)] if args.data.is_file() else ["Ada Lovelace met Zoë in Paris."]
    schema = Schema.from_name("crossner:music")
    server, api_base = stand_in_process(args.latency)
    try:
        config = SamnerConfig.vllm(api_base=api_base)
        for modes in ({}, {"ccr": "verify", "calibration": "entity"}):
            program = SAMNER(config, **modes)
            measure(program, sentences[:4], schema, 4)  # warm-up: imports, connections
            label = "per-entity modes (ccr=verify, calibration=entity)" if modes else "default modes"
            print(f"\n{label}, server latency {args.latency * 1000:.0f} ms")
            for concurrency in [int(c) for c in args.concurrency.split(",")]:
                n = max(args.per_slot * concurrency, 20)
                texts = list(islice(cycle(sentences), n))
                seconds, failures, requests = measure(program, texts, schema, concurrency)
                rate = n / seconds
                line = (
                    f"  concurrency {concurrency:>3}: {n} sentences in {seconds:6.2f} s = {rate:7.2f} sentences/s, "
                    f"{1000 * seconds / n * concurrency:7.1f} ms per sentence per slot, "
                    f"{requests:.2f} requests/sentence, {failures} failed"
                )
                if args.latency > 0 and not modes:
                    ideal = concurrency / (ROUND_TRIPS * args.latency)
                    line += f"; ideal {ideal:.1f}/s, ratio {rate / ideal:.2f}"
                print(line)
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
