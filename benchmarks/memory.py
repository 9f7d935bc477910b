"""Peak memory while streaming a large corpus through `SAMNER.batch`: it must stay flat.

    python benchmarks/memory.py --sentences 100000 --concurrency 32

Every stage is answered in-process by a scripted LM (no HTTP), so the figure is the program's own
memory: the input is a generator, results are consumed as they stream out, nothing accumulates.
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Iterator
from typing import Any

from dspy.utils import DummyLM

from samner_dspy import SAMNER
from samner_dspy.adapters import IEPileAdapter, SamnerAdapter


class EndlessLM(DummyLM):
    """Answers every request of one stage the same way, forever."""

    def __init__(self, answer: dict[str, Any], iepile: bool = False) -> None:
        super().__init__([], adapter=IEPileAdapter() if iepile else SamnerAdapter())
        self.answer = answer

    def _format_answer_fields(self, field_names_and_values: Any) -> str:
        return super()._format_answer_fields(self.answer)


def corpus(n: int) -> Iterator[str]:
    for i in range(n):
        yield f"Ada Lovelace met Charles Babbage in London, item {i}."


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sentences", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    lms = {
        "anchor": EndlessLM({"entities": {"person": ["Ada Lovelace"], "city": ["London"]}}, iepile=True),
        "explorer": EndlessLM({"entities": {"person": ["Charles Babbage"]}}),
        "archetype": EndlessLM(
            {"archetypes": {"Ada Lovelace": "Person", "Charles Babbage": "Person", "London": "Location"}}
        ),
        "calibrator": EndlessLM({"labels": {"Ada Lovelace": "person", "Charles Babbage": "person", "London": "city"}}),
    }
    program = SAMNER(lms=lms)
    checkpoints = {args.sentences // 10, args.sentences // 2, args.sentences}
    started = time.perf_counter()
    print(f"start: peak RSS {rss_mb():.0f} MB")
    entities = 0
    for count, item in enumerate(
        program.annotate_batch(corpus(args.sentences), ["person", "city"], args.concurrency), 1
    ):
        assert item.ok, item.error
        entities += len(item.prediction.entities)
        if count in checkpoints:
            rate = count / (time.perf_counter() - started)
            print(f"{count:>7} sentences: peak RSS {rss_mb():.0f} MB, {rate:.0f} sentences/s, {entities} entities")


if __name__ == "__main__":
    main()
