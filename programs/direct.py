"""The "direct" baseline: plain prompting on the same model, so SAM-NER's gain is measured like for like."""

from __future__ import annotations

from collections.abc import Mapping

import dspy

from samner_dspy.backends import StageBackend
from samner_dspy.confidence import DIRECT
from samner_dspy.constraints import string_lists
from samner_dspy.grounding import Located, locate
from samner_dspy.prediction import SamnerPrediction
from samner_dspy.programs.base import LMStage
from samner_dspy.programs.program import ConfigLike, ConfiguredProgram, SchemaLike, check_text, ground_candidates
from samner_dspy.schema import Schema
from samner_dspy.signatures import ExtractTypedEntities
from samner_dspy.tracing import StageRecord, Trace
from samner_dspy.types import Entity


class TypedExtractor(LMStage):
    """One request: mentions filed under the schema's labels; unknown labels and absent strings dropped."""

    def __init__(self, adapter: dspy.Adapter | None = None) -> None:
        super().__init__(adapter)
        self.predict = dspy.Predict(ExtractTypedEntities)

    def forward(self, text: str, schema: Schema, backend: StageBackend) -> dspy.Prediction:
        record = StageRecord("direct", inputs={"labels": schema.labels})
        reply = self.call_lm(
            self.predict,
            backend,
            record,
            {"entities": string_lists(schema.labels)},
            label_definitions=schema.to_dict(),
            text=text,
        )
        labelled: dict[str, str] = {}
        where_found: dict[str, Located] = {}  # located once, here: grounding reads these spans
        for answer, mentions in ((reply or {}).get("entities") or {}).items():
            label = schema.match_label(answer)
            for mention in mentions:
                if label is None:
                    record.drop(mention, f"label {answer!r} is not in the schema")
                    continue
                where = locate(text, mention)
                if not isinstance(where, Located):
                    record.drop(mention, where.reason)
                elif where.surface in labelled and labelled[where.surface] != label:
                    record.drop(f"{mention} as {label}", f"already labelled {labelled[where.surface]}")
                else:
                    labelled.setdefault(where.surface, label)
                    where_found.setdefault(where.surface, where)
        record.outputs = {"labels": labelled}
        candidates = [where_found[surface].as_candidate(("direct",), (label,)) for surface, label in labelled.items()]
        return dspy.Prediction(candidates=candidates, record=record)


class DirectNER(ConfiguredProgram):
    """Extract and type in one prompt against the target definitions, on the calibrator's endpoint."""

    def __init__(self, config: ConfigLike = None, *, lms: Mapping[str, dspy.BaseLM] | None = None) -> None:
        super().__init__(config, lms)
        self.extract = TypedExtractor()

    def first_signatures(self) -> dict[str, str]:
        return {"calibrator": self.extract.predict.signature.__name__}

    def forward(self, text: str, schema: SchemaLike) -> dspy.Prediction:
        text = check_text(text)
        schema = Schema.coerce(schema)
        trace = Trace()
        found = self.extract(text=text, schema=schema, backend=self.backends()["calibrator"])
        trace.add(found.record)
        located, grounding = ground_candidates(text, found.candidates)
        trace.add(grounding)
        entities = [
            Entity(
                span.text,
                candidate.types[0],
                span.start,
                span.end,
                None,
                candidate.sources,
                DIRECT,
                candidate.alignment_status,
            )
            for span, candidate in located
        ]
        return SamnerPrediction(text=text, entities=entities, trace=trace)
