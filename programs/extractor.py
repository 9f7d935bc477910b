"""Entity discovery by one extractor (the anchor or the explorer), grounded in the text."""

from __future__ import annotations

import dspy

from samner_dspy.constraints import string_lists
from samner_dspy.grounding import ALIGNMENTS, Located, locate
from samner_dspy.programs.base import LMStage
from samner_dspy.schema import Schema
from samner_dspy.signatures import ExtractSpans
from samner_dspy.tracing import StageRecord


def _chunks(labels: list[str], size: int | None) -> list[list[str]]:
    if not size or size >= len(labels):
        return [labels]
    return [labels[i : i + size] for i in range(0, len(labels), size)]


class SpanExtractor(LMStage):
    """Proposes mention strings for the schema's labels; strings not found in the text are dropped.

    ``max_types_per_request`` splits a large schema over several requests, as IEPile's own inference
    does for its anchor model; None sends all labels at once.
    """

    def __init__(self, role: str, adapter: dspy.Adapter | None = None, max_types_per_request: int | None = None):
        super().__init__(role, adapter)
        self.role = role
        self.max_types_per_request = max_types_per_request
        self.predict = dspy.Predict(ExtractSpans)

    def forward(self, text: str, schema: Schema) -> dspy.Prediction:
        record = StageRecord(self.role, inputs={"entity_types": schema.labels})
        proposed: dict[str, list[str]] = {}
        for labels in _chunks(schema.labels, self.max_types_per_request):
            constraint = {"entities": string_lists(labels)}
            reply = self.call_lm(self.predict, record, constraint, entity_types=labels, text=text)
            for entity_type, mentions in (reply.get("entities") or {}).items():
                for mention in mentions:
                    proposed.setdefault(mention, []).append(entity_type)
        found: dict[str, list[str]] = {}
        where_found: dict[str, Located] = {}  # located once, here: grounding reads these spans
        for mention, types in proposed.items():
            where = locate(text, mention)
            if not isinstance(where, Located):
                record.drop(mention, where.reason)
                continue
            found.setdefault(where.surface, []).extend(types)
            known = where_found.get(where.surface)
            if known is None or ALIGNMENTS.index(where.alignment_status) < ALIGNMENTS.index(known.alignment_status):
                where_found[where.surface] = where  # of two spellings of one surface, the stricter match
        record.outputs = {"mentions": {surface: sorted(set(types)) for surface, types in found.items()}}
        candidates = [
            where_found[surface].as_candidate((self.role,), tuple(dict.fromkeys(types)))
            for surface, types in found.items()
        ]
        return dspy.Prediction(candidates=candidates, record=record)
