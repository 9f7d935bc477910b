"""Sentences per second of the Ray Data pipeline against a fixed-latency server, by number of workers.

    python benchmarks/ray_throughput.py --latency 1.0 --workers 1,2,4 --threads 4

The server is `samner_dspy.serving.stand_in` in its own process. Each of the pipeline's three steps (discovery,
mediation, calibration) is a pool of ``workers`` actors that each keep ``threads`` rows in flight, and the
steps run at once on different rows, so each step completes ``workers * threads`` rows per round trip:
``ideal = workers * threads / latency`` sentences per second. Ray Data may queue more than one batch on an
actor, so the ratio to that ideal can pass 1; the scaling figure (rate per worker against the first row's)
is the one to read. Every configuration runs twice, on N and on
2N sentences; the difference (N sentences in the extra seconds) is the steady-state rate, free of the
fixed cost of starting Ray Data's actors (they import dspy), which the end-to-end rate includes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import ray

from samner_dspy import SamnerConfig
from samner_dspy.scale import annotate_corpus
from samner_dspy.serving.stand_in import stand_in_process


def run(folder: Path, n: int, config: SamnerConfig, workers: int, threads: int) -> tuple[float, int]:
    inputs = folder / f"in-{n}.jsonl"
    texts = [f"Ada Lovelace {i} met Charles Babbage in London." for i in range(n)]
    inputs.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    output = folder / f"out-{n}-{workers}"
    shutil.rmtree(output, ignore_errors=True)
    result = annotate_corpus(
        str(inputs), str(output), ["person", "city"], config, workers=workers, threads=threads, batch_size=threads
    )
    assert result.written == n, result
    return result.seconds, result.failed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--threads", type=int, default=4, help="rows in flight per actor")
    parser.add_argument("--per-slot", type=int, default=6, help="sentences per worker thread in the N run")
    # Logical CPUs: the actors wait on HTTP, and three pools of workers need more tokens than 2 cores give.
    parser.add_argument("--num-cpus", type=int, default=8)
    args = parser.parse_args()

    ray.init(num_cpus=args.num_cpus, object_store_memory=200 * 1024**2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    server, api_base = stand_in_process(args.latency)
    folder = Path(tempfile.mkdtemp(prefix="samner-ray-bench-"))
    try:
        config = SamnerConfig.vllm(api_base=api_base)
        print(f"server latency {args.latency * 1000:.0f} ms, {args.threads} threads per actor, {args.num_cpus} CPUs")
        base = None
        for workers in [int(w) for w in args.workers.split(",")]:
            n = args.per_slot * workers * args.threads
            first, _ = run(folder, n, config, workers, args.threads)
            second, failed = run(folder, 2 * n, config, workers, args.threads)
            steady = n / max(second - first, 1e-9)
            ideal = workers * args.threads / args.latency
            base = base or steady / workers
            print(
                f"  workers {workers}: {n} sentences in {first:5.1f} s, {2 * n} in {second:5.1f} s "
                f"(end to end {2 * n / second:5.2f}/s); steady state {steady:5.2f} sentences/s, "
                f"ideal {ideal:5.1f}/s, ratio {steady / ideal:.2f}; {steady / (workers * base):.2f} of linear scaling "
                f"from the first row; {failed} failed",
                flush=True,
            )
    finally:
        server.terminate()
        shutil.rmtree(folder, ignore_errors=True)
        ray.shutdown()


if __name__ == "__main__":
    main()
