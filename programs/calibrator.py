"""Definition-guided calibration, and direct typing for the "w/o calibration" ablation."""

from __future__ import annotations

import dspy

from samner_dspy.archetypes import archetype_definitions
from samner_dspy.confidence import answer_probabilities
from samner_dspy.constraints import choice_per_key, one_of
from samner_dspy.modes import CALIBRATION_REQUESTS, CalibrationRequests, check_mode
from samner_dspy.programs.archetype import TaggedSpanClassifier
from samner_dspy.programs.base import LMStage
from samner_dspy.programs.labels import label_definitions, resolve_label, resolve_labels
from samner_dspy.schema import Schema
from samner_dspy.signatures import CalibrateEntity, CalibrateType, TypeEntities
from samner_dspy.tagging import name_occurrences
from samner_dspy.tracing import StageRecord
from samner_dspy.types import Span


def shown_text(text: str, spans: list[Span] | None, keys: list[str]) -> tuple[str, dict[str, str] | None]:
    """The text a typing prompt shows, and each key's string: with the spans given, each later occurrence of a
    repeated string is written as its key (``Washington (2)``), so the keys tell the occurrences apart."""
    if spans is None:
        return text, None
    return name_occurrences(text, spans, keys), {key: span.text for key, span in zip(keys, spans, strict=True)}


def typed(labels: dict[str, str], probabilities: dict[str, float], record: StageRecord) -> dspy.Prediction:
    """A typing stage's result, its labels and their probabilities also in its record."""
    record.outputs = {"labels": labels}
    if probabilities:
        record.outputs["probabilities"] = probabilities
    return dspy.Prediction(label_of=labels, probabilities=probabilities, record=record)


class LabelTyper(LMStage):
    """A stage on the calibrator's endpoint that labels spans with the target labels' definitions."""

    def __init__(self, allow_no_label: bool = False, adapter: dspy.Adapter | None = None) -> None:
        super().__init__("calibrator", adapter)
        self.allow_no_label = allow_no_label

    def type_in_one_request(
        self,
        predictor: dspy.Predict,
        record: StageRecord,
        text: str,
        schema: Schema,
        keys: list[str],
        spans: list[Span] | None,
        **inputs: object,
    ) -> tuple[dict[str, str], dict[str, float]]:
        """One request labels every key, each answer constrained to the labels shown: the labels it gave (off-schema
        answers repaired or dropped in ``record``) and their probabilities where the backend returned logprobs."""
        shown, surfaces = shown_text(text, spans, keys)
        definitions = label_definitions(schema, self.allow_no_label)
        constraint = {"labels": choice_per_key(keys, list(definitions))}
        reply = self.call_lm(predictor, record, constraint, label_definitions=definitions, text=shown, **inputs)
        answers = reply.get("labels")
        labels = resolve_labels(schema, keys, answers, record, surfaces)
        return labels, reply.key_probabilities(answers, labels, surfaces)


class TypeCalibrator(LabelTyper):
    """``sentence`` (default): one request types all of a sentence's entities, as the authors' code does.
    ``entity``: one request per entity, the paper's equation 12, for comparison.

    ``archetypes`` is keyed as the archetype stage named the entities; ``spans`` (one per key, in that order)
    lets the prompt's text name repeated occurrences by their keys (see :func:`shown_text`).
    """

    def __init__(
        self, mode: CalibrationRequests = "sentence", allow_no_label: bool = False, adapter: dspy.Adapter | None = None
    ) -> None:
        super().__init__(allow_no_label, adapter)
        check_mode("calibration mode", mode, CALIBRATION_REQUESTS)  # "off" is the program's: no calibrator
        self.mode = mode
        self.predict = dspy.Predict(CalibrateType)
        self.predict_entity = dspy.Predict(CalibrateEntity)

    def forward(
        self,
        text: str,
        schema: Schema,
        archetypes: dict[str, str],
        spans: list[Span] | None = None,
    ) -> dspy.Prediction:
        definitions = archetype_definitions()
        record = StageRecord("calibrator", inputs={"mode": self.mode, "archetypes": dict(archetypes)})
        if self.mode == "sentence":
            shown_archetypes = {a: definitions[a] for a in dict.fromkeys(archetypes.values())}
            labels, probabilities = self.type_in_one_request(
                self.predict, record, text, schema, list(archetypes), spans,
                archetype_definitions=shown_archetypes, entities=dict(archetypes),
            )  # fmt: skip
        else:
            labels, probabilities = {}, {}
            shown, _ = shown_text(text, spans, list(archetypes))
            definitions_shown = label_definitions(schema, self.allow_no_label)
            for entity, archetype in archetypes.items():
                reply = self.call_lm(
                    self.predict_entity,
                    record,
                    {"label": one_of(list(definitions_shown))},
                    label_definitions=definitions_shown,
                    text=shown,
                    entity=entity,
                    archetype=archetype,
                    archetype_definition=definitions[archetype],
                )
                answer = reply.get("label")
                label = resolve_label(schema, entity, answer, record)
                if label is not None:
                    labels[entity] = label
                    found = answer_probabilities(reply.logprobs, {"label": answer}) if reply.logprobs else {}
                    if "label" in found:
                        probabilities[entity] = found["label"]
        return typed(labels, probabilities, record)


class DirectTyper(LabelTyper):
    """Types entities straight against the target definitions, with no archetype in between.

    ``entities`` are the keys the reply answers under; ``spans`` (one per key) as for :class:`TypeCalibrator`.
    """

    def __init__(self, allow_no_label: bool = False, adapter: dspy.Adapter | None = None) -> None:
        super().__init__(allow_no_label, adapter)
        self.predict = dspy.Predict(TypeEntities)

    def forward(
        self,
        text: str,
        schema: Schema,
        entities: list[str],
        spans: list[Span] | None = None,
    ) -> dspy.Prediction:
        record = StageRecord("direct_typing", inputs={"entities": list(entities)})
        labels, probabilities = self.type_in_one_request(
            self.predict, record, text, schema, entities, spans, entities=entities
        )
        return typed(labels, probabilities, record)


class LabelMatcher(TaggedSpanClassifier):
    """Types the marked spans with the archetype stage's prompt and model, the target labels' definitions in
    the archetypes' place: the trained classifier matches mentions to definitions, whichever they are.

    On the embedded 0.5B model with the trained archetype adapter it gives 40% of dev's gold spans their gold
    label, against 23% for the frozen calibrator (``evals/results/archetypes-dev-qwen2.5-coder-0.5b``).
    ``keys`` names each span as for :class:`~samner_dspy.programs.archetype.ArchetypeClassifier`.
    """

    def __init__(self, allow_no_label: bool = False, adapter: dspy.Adapter | None = None) -> None:
        super().__init__(adapter)
        self.allow_no_label = allow_no_label

    def forward(self, text: str, schema: Schema, spans: list[Span], keys: list[str]) -> dspy.Prediction:
        asked = self.ask("matcher", text, spans, keys, label_definitions(schema, self.allow_no_label))
        record = asked.record
        labels = resolve_labels(schema, asked.entities, asked.answers, record, asked.surfaces)
        probabilities = {entity: p for entity, p in asked.probabilities.items() if entity in labels}
        return typed(labels, probabilities, record)
