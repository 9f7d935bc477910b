"""The single-request baselines: plain prompting on the same model, so SAM-NER's gain is measured like for like."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal, get_args

import dspy

from samner_dspy.adapters import PlainAdapter
from samner_dspy.confidence import DIRECT
from samner_dspy.constraints import closed_object, one_of, string_lists
from samner_dspy.grounding import Located, locate
from samner_dspy.modes import check_mode
from samner_dspy.programs.base import LMStage
from samner_dspy.programs.program import ConfigLike, ConfiguredProgram, SchemaLike, check_text, ground_candidates
from samner_dspy.schema import Schema
from samner_dspy.signatures import ExtractEntities, ExtractTypedEntities
from samner_dspy.tracing import StageRecord, Trace
from samner_dspy.types import Candidate, Document, Entity

DirectPrompt = Literal["definitions", "short", "plain"]
"""``definitions``: the labels with their definitions (``ExtractTypedEntities``); ``short``: the same with each
definition cut to its first clause, without the examples a small model copies into its answer; ``plain``: one
line that names the labels and nothing else (``ExtractEntities``), answered as a list of ``{"text", "type"}``."""
DIRECT_PROMPTS: tuple[str, ...] = get_args(DirectPrompt)


def file_mentions(
    text: str, schema: Schema, answers: Iterable[tuple[object, str]], record: StageRecord
) -> list[Candidate]:
    """Candidates from ``(label, mention)`` answers: unknown labels, absent strings and relabellings dropped."""
    labelled: dict[str, str] = {}
    where_found: dict[str, Located] = {}  # located once, here: grounding reads these spans
    for answer, mention in answers:
        label = schema.match_label(answer)
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
    return [where_found[surface].as_candidate(("direct",), (label,)) for surface, label in labelled.items()]


class TypedExtractor(LMStage):
    """One request: mentions filed under the schema's labels, by their definitions."""

    def __init__(self, adapter: dspy.Adapter | None = None) -> None:
        super().__init__("calibrator", adapter)
        self.predict = dspy.Predict(ExtractTypedEntities)

    def forward(self, text: str, schema: Schema) -> dspy.Prediction:
        record = StageRecord("direct", inputs={"labels": schema.labels})
        reply = self.call_lm(
            self.predict,
            record,
            {"entities": string_lists(schema.labels)},
            label_definitions=schema.to_dict(),
            text=text,
        )
        answers = ((label, m) for label, mentions in (reply.get("entities") or {}).items() for m in mentions)
        return dspy.Prediction(candidates=file_mentions(text, schema, answers, record), record=record)


class PlainExtractor(LMStage):
    """One request with the plainest prompt: ``{"entities": [{"text", "type"}]}``, the type an enum of labels."""

    def __init__(self) -> None:
        super().__init__("calibrator", PlainAdapter())
        self.predict = dspy.Predict(ExtractEntities)

    def forward(self, text: str, schema: Schema) -> dspy.Prediction:
        record = StageRecord("direct", inputs={"labels": schema.labels})
        item = closed_object({"text": {"type": "string"}, "type": one_of(schema.labels)})
        reply = self.call_lm(
            self.predict,
            record,
            {"entities": {"type": "array", "items": item}},
            entity_types=schema.labels,
            text=text,
        )
        answers = ((e["type"], e["text"]) for e in reply.get("entities") or [])
        return dspy.Prediction(candidates=file_mentions(text, schema, answers, record), record=record)


class DirectNER(ConfiguredProgram):
    """Extract and type in one request on the calibrator's endpoint; ``prompt`` picks which (:data:`DirectPrompt`)."""

    def __init__(
        self,
        config: ConfigLike = None,
        *,
        lms: Mapping[str, dspy.BaseLM] | None = None,
        prompt: DirectPrompt = "definitions",
        person_role: bool = False,
    ) -> None:
        super().__init__(config, lms, person_role=person_role)
        check_mode("direct prompt", prompt, DIRECT_PROMPTS)
        self.prompt = prompt
        self.extract = PlainExtractor() if prompt == "plain" else TypedExtractor()

    def first_signatures(self) -> dict[str, str]:
        return {"calibrator": self.extract.predict.signature.__name__}

    def forward(self, text: str, schema: SchemaLike) -> dspy.Prediction:
        text = check_text(text)
        schema = Schema.coerce(schema)
        sent = schema.without_examples() if self.prompt == "short" else schema
        trace = Trace()
        self.backends()  # binds the extractor to the calibrator's endpoint on first use
        found = self.extract(text=text, schema=sent)
        if self.prompt != "definitions":
            found.record.inputs["prompt"] = self.prompt
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
                "direct",
            )
            for span, candidate in located
        ]
        return Document(text=text, entities=entities, trace=trace)
