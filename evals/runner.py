"""Running programs over evaluation sentences: parallel, streamed to JSON Lines, resumable."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dspy
from dspy.utils.parallelizer import ParallelExecutor

from samner_dspy.errors import EndpointRequestError
from samner_dspy.evals.crossner import Sentence
from samner_dspy.programs import SAMNER, DirectNER
from samner_dspy.programs.program import ConfigLike, ConfiguredProgram
from samner_dspy.records import RecordWriter, read_records, result_record
from samner_dspy.records import done_keys as _done
from samner_dspy.schema import Schema

logger = logging.getLogger(__name__)

# The paper's rows: SAM-NER, its four ablations (tables 2 and 3), and plain prompting on the same model; then the
# per-entity modes and the small-model preset (SAMNER.for_small_models), SAMNER()'s default on the embedded model.
CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "samner": {"preset": "paper"},
    "no-anchor": {"preset": "paper", "use_anchor": False},
    "no-explorer": {"preset": "paper", "use_explorer": False},
    "no-ccr": {"preset": "paper", "ccr": "off"},
    "no-calibration": {"preset": "paper", "calibration": "off"},
    "direct": {},
    "per-entity": {"preset": "paper", "ccr": "verify", "calibration": "entity"},
    "small": {"preset": "small"},
}
ABLATIONS = ("samner", "no-anchor", "no-explorer", "no-ccr", "no-calibration")
"""``samner eval --ablations``: the full program and the paper's four ablations."""
TITLES = {
    "samner": "SAM-NER",
    "no-anchor": "w/o anchor",
    "no-explorer": "w/o explorer",
    "no-ccr": "w/o CCR",
    "no-calibration": "w/o calibration",
    "direct": "Direct prompting",
    "per-entity": "SAM-NER, per-entity modes",
    "small": "SAM-NER, small-model preset",
}


def build_program(name: str, config: ConfigLike) -> ConfiguredProgram:
    if name not in CONFIGURATIONS:
        raise ValueError(f"unknown configuration {name!r}; choose from {', '.join(CONFIGURATIONS)}")
    if name == "direct":
        return DirectNER(config)
    return SAMNER(config, **CONFIGURATIONS[name])


@dataclass(frozen=True)
class Item:
    domain: str
    index: int
    sentence: Sentence

    @property
    def key(self) -> str:
        return f"{self.domain}:{self.index}"


def done_keys(path: Path) -> set[str]:
    """Sentence keys already written; a torn last line (a killed run) is ignored and its sentence redone."""
    return _done(path, "key")


def _record(item: Item, result: Any) -> dict[str, Any]:
    record = result_record({"key": item.key, "domain": item.domain, "index": item.index}, item.sentence.text, result)
    return {
        **record,
        "tokens": list(item.sentence.tokens),
        "gold": [[e.start, e.end, e.label] for e in item.sentence.entities],
    }


def run(
    program: ConfiguredProgram,
    items: Iterable[Item],
    schemas: dict[str, Schema],
    output: Path,
    threads: int = 2,
    on_done: Callable[[], None] | None = None,
) -> int:
    """Annotate every item not yet in ``output``, appending one flushed line per sentence; returns how many ran.

    A sentence is written only once it is complete, so a killed run loses at most the sentences in flight
    and a rerun does exactly those again.
    """
    written = done_keys(output)
    todo = [item for item in items if item.key not in written]
    if not todo:
        return 0
    lock = threading.Lock()
    with RecordWriter(output) as sink:

        def annotate(item: Item) -> None:
            try:
                with dspy.context(disable_history=True):
                    result = program(item.sentence.text, schemas[item.domain])
            except EndpointRequestError as exc:
                # A request that failed after its retries (a timeout under load, an HTTP 5xx): this sentence
                # is left for the rerun and the others go on. An unreachable endpoint still stops the run.
                logger.warning("%s left for a rerun: %s", item.key, exc)
                return
            record = _record(item, result)
            with lock:
                if item.key in written:  # a straggler re-run finished twice
                    return
                sink.write(record)
                written.add(item.key)
            if on_done:
                on_done()

        ParallelExecutor(num_threads=threads, max_errors=1, disable_progress_bar=True, timeout=24 * 3600).execute(
            annotate, todo
        )
    return len(todo)


def read_results(path: Path) -> list[dict[str, Any]]:
    """An evaluation's records, one per sentence key (the last written wins), by domain and index."""
    records = {record["key"]: record for record in read_records(path, check=False) if "key" in record}
    return sorted(records.values(), key=lambda r: (r["domain"], r["index"]))
