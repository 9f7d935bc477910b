"""Typing an earlier run's discovered spans again, or the gold spans: a change to mediation or calibration measured
on exactly the mentions the earlier run typed (or on the true ones), without paying for discovery (about half of a
sentence's requests)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from samner_dspy.errors import SamnerError
from samner_dspy.evals.runner import CURRENT_KEY, Item, read_results
from samner_dspy.grounding import mention_key
from samner_dspy.programs import SAMNER
from samner_dspy.programs.program import ConfigLike
from samner_dspy.programs.samner import Discovery
from samner_dspy.schema import Schema
from samner_dspy.tracing import StageRecord, Trace
from samner_dspy.types import Candidate, Span


@dataclass(frozen=True)
class RecordedSentence:
    spans: list[tuple[int, int, str, str | None]]
    """The spans the grounding stage kept: ``(start, end, text, alignment status)``."""
    anchor_types: dict[str, list[str]]
    """The anchor stage's mentions and the labels it filed each under (empty where the run had no anchor)."""
    text: str
    """The sentence the record annotated, checked against the one being typed."""


def recorded_spans(path: Path) -> dict[str, RecordedSentence]:
    """What discovery found in every sentence of an evaluation's ``<configuration>.jsonl``, by its
    ``domain:index`` key: never by text, since one sentence can occur in two domains (or twice in one)."""
    found: dict[str, RecordedSentence] = {}
    for record in read_results(path):
        stages = {stage.get("stage"): stage for stage in record["trace"]["stages"]}
        if "grounding" not in stages:
            raise SamnerError(f"{path}: the record of {record['key']} has no grounding stage to take spans from")
        spans = [(int(s), int(e), str(t), status) for s, e, t, status in stages["grounding"]["outputs"]["spans"]]
        anchor = (stages.get("anchor") or {}).get("outputs", {}).get("mentions", {})
        found[record["key"]] = RecordedSentence(spans, anchor, record["text"])
    if not found:
        raise SamnerError(f"{path} holds no finished sentence to take spans from")
    return found


def gold_spans(items: Iterable[Item]) -> dict[str, RecordedSentence]:
    """The gold spans of every sentence, as if discovery had found exactly them: mediation and calibration
    measured apart from discovery (``samner eval --discovery-from gold``)."""
    return {
        item.key: RecordedSentence(
            [(e.start, e.end, e.text, "exact") for e in item.sentence.entities], {}, item.sentence.text
        )
        for item in items
    }


class RecordedDiscovery(SAMNER):
    """SAM-NER whose discovery is read from an earlier run's records; mediation and calibration run as configured.

    The sentence is the one the evaluation runner is annotating (:data:`CURRENT_KEY`); a sentence the records do
    not hold, or whose record is of another text, is refused: typing other spans would not be the comparison asked
    for.
    """

    def __init__(
        self, spans: dict[str, RecordedSentence], source: str, config: ConfigLike = None, **options: Any
    ) -> None:
        super().__init__(config, **options)
        self.recorded = spans
        self.source = source

    def discover(self, text: str, schema: Schema, trace: Trace) -> Discovery:
        key = CURRENT_KEY.get()
        if key is None:
            raise SamnerError("recorded discovery replays evaluation sentences: run it through samner eval")
        recorded = self.recorded.get(key)
        if recorded is None:
            raise SamnerError(f"{self.source} holds no record of sentence {key}")
        if recorded.text != text:
            raise SamnerError(f"{self.source}'s record of {key} is of another text: {recorded.text[:60]!r}")
        record = trace.add(StageRecord("grounding", inputs={"recorded": self.source}))
        located = []
        for start, end, surface, status in recorded.spans:
            span = Span(start, end, surface)
            located.append((span, Candidate(surface, ("recorded",), (), (span,), status)))
        record.outputs = {"spans": [[s.start, s.end, s.text, c.alignment_status] for s, c in located]}
        anchor_types = {mention_key(surface): tuple(types) for surface, types in recorded.anchor_types.items()}
        return Discovery(located, {mention_key(span.text): 1.0 for span, _ in located}, anchor_types)
