"""SAMNER.batch on vLLM's CPU build against the embedded llama.cpp servers: which one a CPU batch job should use.

    python benchmarks/vllm_cpu.py --output benchmarks/results/vllm_cpu.jsonl

The first ``--sentences`` CrossNER test sentences of one domain go through ``SAMNER.batch`` at each
``--concurrency`` on each server, in one run:

- ``vllm``: ``samner serve`` on the embedded model exported as a Hugging Face folder (``samner embedded
  export-hf``), every stage on the base model (``--anchor base --explorer base --archetype base``), so both
  servers run the same model on the same prompts; bf16 weights against llama.cpp's Q4_K_M.
- ``embedded``: the default embedded configuration, one llama.cpp server per prompt family.

Each server answers one warm-up sentence (not counted) before its first measured batch. Per (server,
concurrency): sentences/s, completion tokens/s, the prefix-cache hit rate (vLLM: ``prefix_cache_hits`` over
``prefix_cache_queries`` from its ``/metrics``; llama.cpp: the share of prompt tokens sent that its servers did
not evaluate, from their logs) and the peak memory of the server processes (PSS, sampled every 0.5 s:
shared pages such as the embedded servers' memory-mapped weights count once). One JSON line per (server,
concurrency) goes to ``--output``; a rerun skips those already there.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import psutil

from samner_dspy import SAMNER
from samner_dspy.evals.crossner import load_crossner
from samner_dspy.formats.records import read_records
from samner_dspy.schema import Schema
from samner_dspy.serving.embedded import free_port, running_servers
from samner_dspy.serving.hf_export import export_hf
from samner_dspy.serving.vllm_server import VllmServer, metric_total
from samner_dspy.training import serve

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "crossner"


class PeakMemory:
    """The largest PSS total of some processes and their children, sampled in a thread."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _total(self) -> int:
        total = 0
        for pid in self.pids:
            try:
                root = psutil.Process(pid)
                for process in [root, *root.children(recursive=True)]:
                    total += process.memory_full_info().pss
            except psutil.Error:
                continue
        return total

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._total())
            self._stop.wait(0.5)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def vllm_program(folder: Path) -> Iterator[tuple[SAMNER, VllmServer]]:
    base = export_hf().folder
    plan = serve.plan("base", "base", anchor="base", base_model=str(base), port=free_port())
    serve.write(plan, folder)
    with serve.server(plan, folder / "vllm.log") as server:
        yield SAMNER(str(folder / "samner.toml")), server


class Counters:
    """The server's process ids and its own prefix-cache counts, however that server keeps them."""

    def __init__(self, server: VllmServer | None) -> None:
        self.server = server
        """None: the embedded llama.cpp servers of this process."""

    def pids(self) -> list[int]:
        servers = [self.server] if self.server is not None else running_servers()
        return [server.pid for server in servers if server.pid]

    def cache(self) -> tuple[float, float]:
        """vLLM: (prefix-cache hits, queries) so far. llama.cpp: (0, prompt tokens evaluated so far)."""
        if self.server is not None:
            samples = self.server.metrics()
            hits = metric_total(samples, "vllm:prefix_cache_hits_total")
            return hits, metric_total(samples, "vllm:prefix_cache_queries_total")
        return 0.0, float(sum(server.evaluated_prompt_tokens() for server in running_servers()))

    def hit_rate(self, before: tuple[float, float], after: tuple[float, float], prompt_tokens_sent: int) -> float:
        if self.server is not None:
            queries = after[1] - before[1]
            return (after[0] - before[0]) / queries if queries else 0.0
        evaluated = after[1] - before[1]
        return 1 - evaluated / prompt_tokens_sent if prompt_tokens_sent else 0.0


def measure(program: SAMNER, counters: Counters, texts: list[str], schema: Schema, concurrency: int) -> dict:
    before = counters.cache()
    started = time.perf_counter()
    with PeakMemory(counters.pids()) as memory:
        items = list(program.annotate_batch(texts, schema, concurrency=concurrency))
    seconds = time.perf_counter() - started
    stages = [s for item in items if item.prediction for s in item.prediction.trace.to_dict()["stages"]]
    completion = sum(s.get("completion_tokens") or 0 for s in stages)
    prompt = sum(s.get("prompt_tokens") or 0 for s in stages)
    return {
        "sentences": len(items),
        "failed": [item.error for item in items if item.exception is not None],
        "seconds": round(seconds, 2),
        "sentences_per_s": len(items) / seconds,
        "completion_tokens": completion,
        "completion_tokens_per_s": completion / seconds,
        "prompt_tokens": prompt,
        "prefix_cache_hit_rate": counters.hit_rate(before, counters.cache(), prompt),
        "peak_memory_gb": memory.peak_bytes / 1e9,
        "entities": [[[e.start, e.end, e.label] for e in item.prediction.entities] if item.prediction else None
                     for item in items],
    }  # fmt: skip


@contextmanager
def started(kind: str) -> Iterator[tuple[SAMNER, VllmServer | None]]:
    if kind == "vllm":
        with tempfile.TemporaryDirectory(prefix="samner-bench-vllm-") as folder, vllm_program(Path(folder)) as pair:
            yield pair
    elif kind == "embedded":
        program = SAMNER(preset="paper")  # the modes the vLLM side runs (its stages are not embedded)
        program.backends()  # starts the servers
        yield program, None
    else:
        raise SystemExit(f"unknown server {kind!r}: vllm or embedded")


def run_server(kind: str, args: argparse.Namespace, texts: list[str], schema: Schema, done: set, sink: TextIO) -> None:
    levels = [c for c in args.concurrency if (kind, c) not in done]
    if not levels:
        return
    with started(kind) as (program, server):
        counters = Counters(server)
        program(args.warmup, schema)  # the first request of each prompt family is cold on any server
        for concurrency in levels:
            record = {
                "server": kind,
                "concurrency": concurrency,
                **measure(program, counters, texts, schema, concurrency),
            }
            sink.write(json.dumps(record) + "\n")
            sink.flush()
            print(
                f"{kind:8s} x{concurrency:<3d} {record['seconds']:7.1f} s  {record['sentences_per_s']:.3f} sentences/s"
            )


def print_table(records: list[dict]) -> None:
    print("| server | concurrency | sentences | seconds | sentences/s | completion tokens/s | prefix-cache hits | "
          "peak memory GB | failed |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in sorted(records, key=lambda r: (r["server"], r["concurrency"])):
        print(
            f"| {r['server']} | {r['concurrency']} | {r['sentences']} | {r['seconds']:.0f} "
            f"| {r['sentences_per_s']:.3f} "
            f"| {r['completion_tokens_per_s']:.1f} | {100 * r['prefix_cache_hit_rate']:.0f}% "
            f"| {r['peak_memory_gb']:.2f} | {len(r['failed'])} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--domain", default="music")
    parser.add_argument("--sentences", type=int, default=16)
    parser.add_argument("--concurrency", type=lambda v: [int(c) for c in v.split(",")], default=[1, 4, 16])
    parser.add_argument("--servers", default="vllm,embedded")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/vllm_cpu.jsonl"))
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    sentences = load_crossner(args.domain, "test", args.data)
    texts = [s.text for s in sentences[: args.sentences]]
    args.warmup = sentences[args.sentences].text
    schema = Schema.from_name(f"crossner:{args.domain}")
    records = list(read_records(args.output, check=False)) if args.output.is_file() else []
    done = {(r["server"], r["concurrency"]) for r in records}
    if not args.report_only:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        with args.output.open("a", encoding="utf-8") as sink:
            for kind in args.servers.split(","):
                run_server(kind, args, texts, schema, done, sink)
        records = list(read_records(args.output, check=False))
    print_table(records)


if __name__ == "__main__":
    main()
