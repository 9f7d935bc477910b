"""Sentences per second of the request-rounds pipeline (``annotate_corpus(..., llm=...)``).

    python benchmarks/ray_rounds.py --sentences 200                        # CPU: Ray's HTTP processor
    python benchmarks/ray_rounds.py --engine vllm --explorer adapters/explorer --archetype adapters/archetype

With ``--engine http`` (the default) the processor is Ray Data's HTTP stage against the stand-in server at
``--latency`` (0: instant replies), beside the actor path on the same corpus and server: at zero latency
both figures are the CPU cost of the pipeline itself, which bounds what one machine can feed to GPUs. With
``--engine vllm`` the processor is Ray Data's vLLM engine with the base model and the three LoRAs in the
workers (on GPUs; vLLM's CPU build runs too, far slower): sentences per second for the whole pipeline.

Each measurement runs on N and on 2N sentences and prints both end-to-end rates: the fixed cost of starting
actors and engines weighs less on the larger run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import ray

from samner_dspy import SamnerConfig
from samner_dspy.scale import HttpEndpoint, VllmEngine, annotate_corpus
from samner_dspy.serving.stand_in import stand_in_process

SCHEMA = ["person", "city"]


def seconds(folder: Path, n: int, config: SamnerConfig, name: str, **options: Any) -> float:
    inputs = folder / f"in-{n}.jsonl"
    texts = [f"Ada Lovelace {i} met Charles Babbage in London." for i in range(n)]
    inputs.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    output = folder / f"out-{name}-{n}"
    shutil.rmtree(output, ignore_errors=True)
    result = annotate_corpus(str(inputs), str(output), SCHEMA, config, **options)
    assert (result.written, result.failed) == (n, 0), result
    return result.seconds


def rates(folder: Path, n: int, config: SamnerConfig, name: str, **options: Any) -> tuple[float, float]:
    """End-to-end sentences/s on N and on 2N sentences (each round restarts its actor pools, so the fixed cost
    varies from run to run and the difference of the two runs is not a clean steady-state figure)."""
    return n / seconds(folder, n, config, name, **options), 2 * n / seconds(folder, 2 * n, config, name, **options)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", choices=("http", "vllm"), default="http")
    parser.add_argument("--sentences", type=int, default=200, help="N: the runs are on N and 2N sentences")
    parser.add_argument("--latency", type=float, default=0.0, help="with --engine http: the stand-in's seconds")
    parser.add_argument("--workers", type=int, default=2, help="actors per step (rounds: per advance step)")
    parser.add_argument("--http-actors", type=int, default=4, help="with --engine http: Ray HTTP stage actors")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-cpus", type=int, default=8, help="logical CPUs of the local cluster")
    parser.add_argument("--base-model", default="meta-llama/Meta-Llama-3-8B-Instruct")
    parser.add_argument("--explorer", default="adapters/explorer")
    parser.add_argument("--archetype", default="adapters/archetype")
    parser.add_argument("--anchor", default="zjunlp/llama3-8b-iepile-lora")
    parser.add_argument("--replicas", type=int, default=1, help="with --engine vllm: engines (one GPU or CPU each)")
    args = parser.parse_args()

    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    folder = Path(tempfile.mkdtemp(prefix="samner-rounds-bench-"))
    server = None
    n, options = args.sentences, {"workers": args.workers, "batch_size": args.batch_size}
    try:
        if args.engine == "vllm":
            engine = VllmEngine.for_adapters(
                args.explorer, args.archetype, anchor=args.anchor, base_model=args.base_model, replicas=args.replicas
            )
            config = SamnerConfig.vllm(base_model=args.base_model)
            small, large = rates(folder, n, config, "vllm", llm=engine, **options)
            print(f"vLLM engine, {args.replicas} replicas: {small:.2f} sentences/s on {n}, {large:.2f} on {2 * n}")
            return
        server, api_base = stand_in_process(args.latency)
        config = SamnerConfig.vllm(api_base=api_base)
        llm = HttpEndpoint(api_base, concurrency=args.http_actors, batch_size=args.batch_size)
        print(f"stand-in latency {args.latency * 1000:.0f} ms, {args.num_cpus} logical CPUs", flush=True)
        rounds = rates(folder, n, config, "rounds", llm=llm, **options)
        actors = rates(folder, n, config, "actors", threads=args.batch_size, **options)
        for name, (small, large) in (("request rounds (Ray HTTP stage)", rounds), ("actor steps (default)", actors)):
            print(f"  {name:36s} {small:6.2f} sentences/s on {n}, {large:6.2f} on {2 * n}")
        print(f"  rounds / actors: {rounds[0] / actors[0]:.2f} on {n}, {rounds[1] / actors[1]:.2f} on {2 * n}")
    finally:
        if server is not None:
            server.terminate()
        shutil.rmtree(folder, ignore_errors=True)
        ray.shutdown()


if __name__ == "__main__":
    main()
