"""Running programs over evaluation sentences: parallel, streamed to JSON Lines, resumable."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dspy
from dspy.utils.parallelizer import ParallelExecutor

from samner_dspy.config import SamnerConfig, resolve_config
from samner_dspy.errors import EndpointRequestError
from samner_dspy.formats.labelled import Sentence
from samner_dspy.formats.records import RecordWriter, read_records
from samner_dspy.formats.records import done_keys as _done
from samner_dspy.programs import SAMNER, DirectNER
from samner_dspy.programs.program import ConfigLike, ConfiguredProgram
from samner_dspy.schema import Schema
from samner_dspy.serving.trained import DEFAULT_ADAPTERS, with_adapters
from samner_dspy.types import Document

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Configuration:
    """One row of an evaluation: a title, and the program it runs with which options."""

    title: str
    options: Mapping[str, Any] = field(default_factory=dict)
    """:class:`SAMNER`'s options, or :class:`DirectNER`'s when ``direct``."""
    direct: bool = False
    adapters: Mapping[str, str] = field(default_factory=dict)
    """Stage -> a trained LoRA folder under ``adapters/<embedded model>/``, applied to that stage on the embedded
    model: a trained row and its untrained twin run side by side in one report."""

    def resolve(self, config: ConfigLike) -> SamnerConfig:
        """``config`` with this row's trained adapters on their stages."""
        resolved = resolve_config(config, trained=False)  # a row without adapters runs the untrained model
        return with_adapters(resolved, self.adapters) if self.adapters else resolved

    def build(self, config: ConfigLike) -> ConfiguredProgram:
        config = self.resolve(config)
        return DirectNER(config, **self.options) if self.direct else SAMNER(config, **self.options)


_SMALL = {"preset": "small"}
_NO_EXPLORER = {**_SMALL, "use_explorer": False}
_ANCHOR = {"anchor": "anchor"}
_TRAINED_TYPING = {**_ANCHOR, "archetype": "archetype-mix"}
_ANCHOR_ONLY = {**_NO_EXPLORER, "calibration": "anchor"}
_TRAINED_MATCHED = {**_NO_EXPLORER, "calibration": "matched"}
_ROLE = {"person_role": True}
CONFIGURATIONS: dict[str, Configuration] = {
    # The paper's rows: SAM-NER and its four ablations (tables 2 and 3).
    "samner": Configuration("SAM-NER, paper's preset", {"preset": "paper"}),
    "no-anchor": Configuration("w/o anchor", {"preset": "paper", "use_anchor": False}),
    "no-explorer": Configuration("w/o explorer", {"preset": "paper", "use_explorer": False}),
    "no-ccr": Configuration("w/o CCR", {"preset": "paper", "ccr": "off"}),
    "no-calibration": Configuration("w/o calibration", {"preset": "paper", "calibration": "off"}),
    # The single-request baselines on the same model (BASELINES).
    "direct": Configuration("Direct prompting", direct=True),
    "direct-short": Configuration("Direct, definitions without examples", {"prompt": "short"}, direct=True),
    "plain": Configuration("Plain prompt (label names only)", {"prompt": "plain"}, direct=True),
    "anchor-only": Configuration("Anchor alone (IEPile format)", _ANCHOR_ONLY),
    # The per-entity modes, the small-model preset (the untrained embedded model's best) and what each of
    # its stages adds: without the explorer, without the archetype stage, with the anchor's types only.
    "per-entity": Configuration(
        "SAM-NER, per-entity modes", {"preset": "paper", "ccr": "verify", "calibration": "entity"}
    ),
    "small": Configuration("SAM-NER, small-model preset", _SMALL),
    "small-no-explorer": Configuration("small, w/o explorer", {**_SMALL, "use_explorer": False}),
    "small-no-archetype": Configuration("small, w/o archetype stage", {**_SMALL, "calibration": "off"}),
    "small-anchor-types": Configuration("small, anchor's types only", {**_SMALL, "calibration": "anchor"}),
    # Typing by the archetype stage's classifier over the target labels' definitions (calibration="matched").
    "samner-matched": Configuration("SAM-NER, labels matched", {"preset": "paper", "calibration": "matched"}),
    "small-matched": Configuration("small, labels matched", {**_SMALL, "calibration": "matched"}),
    "small-matched-all": Configuration(
        "small, every label matched", {**_SMALL, "calibration": "matched", "trust_anchor_types": False}
    ),
    # The trained stages (issue 24), each row beside its untrained twin above.
    "anchor-only-trained": Configuration("Anchor alone, trained anchor", _ANCHOR_ONLY, adapters=_ANCHOR),
    "small-trained-anchor": Configuration("small, trained anchor", _SMALL, adapters=_ANCHOR),
    # The trained anchor finds the spans; archetype-mix (trained to match mentions to a sentence's own types and
    # their definitions) types what the anchor did not file under exactly one label, or every span ("-all").
    "anchor-trained-matched": Configuration(
        "Trained anchor, labels matched", _TRAINED_MATCHED, adapters=_TRAINED_TYPING
    ),
    "anchor-trained-matched-all": Configuration(
        "Trained anchor, every label matched",
        {**_TRAINED_MATCHED, "trust_anchor_types": False},
        adapters=_TRAINED_TYPING,
    ),
    "small-trained": Configuration(
        "small, trained anchor, labels matched", {**_SMALL, "calibration": "matched"}, adapters=_TRAINED_TYPING
    ),
    # The person-role rule (person_role=True): mentions typed person take the role the schema's person definition
    # sets apart (researcher, writer, musical artist, politician); on each of the strongest rows and baselines.
    "plain-roles": Configuration("Plain prompt, person role", {"prompt": "plain", **_ROLE}, direct=True),
    "anchor-only-roles": Configuration("Anchor alone, person role", {**_ANCHOR_ONLY, **_ROLE}),
    "small-roles": Configuration("small, person role", {**_SMALL, **_ROLE}),
    "anchor-trained-roles": Configuration(
        "Trained anchor, labels matched, person role", {**_TRAINED_MATCHED, **_ROLE}, adapters=_TRAINED_TYPING
    ),
    "small-trained-roles": Configuration(
        "small, trained anchor, labels matched, person role",
        {**_SMALL, "calibration": "matched", **_ROLE},
        adapters=_TRAINED_TYPING,
    ),
    # SAMNER()'s default on the embedded model: the trained preset on the committed adapters (the same requests as
    # anchor-trained-roles, which chose it on dev).
    "trained": Configuration("SAMNER() default: trained preset", {"preset": "trained"}, adapters=DEFAULT_ADAPTERS),
    # The trained preset on the configuration's own stage models: a served configuration (`samner serve` with the
    # committed adapters on the anchor and archetype stages) running the default's requests, paired with `trained`.
    "trained-served": Configuration("trained preset, the configuration's own stage models", {"preset": "trained"}),
    # Every trained stage: small-trained with the explorer trained on Pile-NER too (its twin is small-trained).
    "small-trained-explorer": Configuration(
        "small, trained anchor and explorer, labels matched",
        {**_SMALL, "calibration": "matched"},
        adapters={**_TRAINED_TYPING, "explorer": "explorer"},
    ),
}
ABLATIONS = ("samner", "no-anchor", "no-explorer", "no-ccr", "no-calibration")
"""``samner eval --ablations``: the full program and the paper's four ablations."""
BASELINES = ("direct", "direct-short", "plain", "anchor-only")
"""The single-request baselines: the strongest of them on dev is the one every SAM-NER row is paired against."""
TITLES = {name: row.title for name, row in CONFIGURATIONS.items()}

CURRENT_KEY: ContextVar[str | None] = ContextVar("samner_eval_key", default=None)
"""The ``domain:index`` key of the sentence being annotated, for programs that replay a record of it."""


def build_program(name: str, config: ConfigLike) -> ConfiguredProgram:
    if name not in CONFIGURATIONS:
        raise ValueError(f"unknown configuration {name!r}; choose from {', '.join(CONFIGURATIONS)}")
    return CONFIGURATIONS[name].build(config)


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
    record = Document.of(result, {"key": item.key, "domain": item.domain, "index": item.index}).to_dict()
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
            key = CURRENT_KEY.set(item.key)
            try:
                with dspy.context(disable_history=True):
                    result = program(item.sentence.text, schemas[item.domain])
            except EndpointRequestError as exc:
                # A request that failed after its retries (a timeout under load, an HTTP 5xx): this sentence
                # is left for the rerun and the others go on. An unreachable endpoint still stops the run.
                logger.warning("%s left for a rerun: %s", item.key, exc)
                return
            finally:
                CURRENT_KEY.reset(key)
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
