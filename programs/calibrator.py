"""Definition-guided calibration, and direct typing for the "w/o calibration" ablation."""

from __future__ import annotations

import dspy

from samner_dspy.archetypes import archetype_definitions
from samner_dspy.backends import StageBackend
from samner_dspy.confidence import answer_probabilities
from samner_dspy.constraints import choice_per_key, one_of
from samner_dspy.modes import CALIBRATION_REQUESTS, CalibrationRequests, check_mode
from samner_dspy.programs.base import LMStage, answer_for
from samner_dspy.programs.labels import label_definitions, resolve_label, resolve_labels
from samner_dspy.schema import Schema
from samner_dspy.signatures import CalibrateEntity, CalibrateType, ClassifyArchetype, TypeEntities
from samner_dspy.tagging import name_occurrences, tag_entities
from samner_dspy.tracing import StageRecord
from samner_dspy.types import Span


def entity_probabilities(
    logprobs: list, answers: object, labels: dict[str, str], surfaces: dict[str, str] | None = None
) -> dict[str, float]:
    """The probability of each labelled entity's answer in a one-request-per-sentence reply."""
    if not logprobs or not isinstance(answers, dict):
        return {}
    raw = answer_probabilities(logprobs[-1], {k: v for k, v in answers.items() if isinstance(k, str)})
    found = {entity: answer_for(raw, entity, (surfaces or {}).get(entity)) for entity in labels}
    return {entity: p for entity, p in found.items() if p is not None}


def shown_text(text: str, spans: list[Span] | None, keys: list[str]) -> tuple[str, dict[str, str] | None]:
    """The text a typing prompt shows, and each key's string: with the spans given, each later occurrence of a
    repeated string is written as its key (``Washington (2)``), so the keys tell the occurrences apart."""
    if spans is None:
        return text, None
    return name_occurrences(text, spans, keys), {key: span.text for key, span in zip(keys, spans, strict=True)}


def type_in_one_request(
    stage: LMStage,
    predictor: dspy.Predict,
    backend: StageBackend,
    record: StageRecord,
    schema: Schema,
    keys: list[str],
    label_definitions: dict[str, str],
    surfaces: dict[str, str] | None,
    **inputs: object,
) -> tuple[dict[str, str], dict[str, float]]:
    """One request labels every key, each answer constrained to the labels shown: the labels it gave (off-schema
    answers repaired or dropped in ``record``) and their probabilities where the backend returned logprobs."""
    logprobs: list = []
    constraint = {"labels": choice_per_key(keys, list(label_definitions))}
    reply = stage.call_lm(
        predictor, backend, record, constraint, logprobs, label_definitions=label_definitions, **inputs
    )
    answers = (reply or {}).get("labels")
    labels = resolve_labels(schema, keys, answers, record, surfaces)
    return labels, entity_probabilities(logprobs, answers, labels, surfaces)


class TypeCalibrator(LMStage):
    """``sentence`` (default): one request types all of a sentence's entities, as the authors' code does.
    ``entity``: one request per entity, the paper's equation 12, for comparison.

    ``archetypes`` is keyed as the archetype stage named the entities; ``spans`` (one per key, in that order)
    lets the prompt's text name repeated occurrences by their keys (see :func:`shown_text`).
    """

    def __init__(
        self, mode: CalibrationRequests = "sentence", allow_no_label: bool = False, adapter: dspy.Adapter | None = None
    ) -> None:
        super().__init__(adapter)
        self.allow_no_label = allow_no_label
        check_mode("calibration mode", mode, CALIBRATION_REQUESTS)  # "off" is the program's: no calibrator
        self.mode = mode
        self.predict = dspy.Predict(CalibrateType)
        self.predict_entity = dspy.Predict(CalibrateEntity)

    def forward(
        self,
        text: str,
        schema: Schema,
        archetypes: dict[str, str],
        backend: StageBackend,
        spans: list[Span] | None = None,
    ) -> dspy.Prediction:
        entities = list(archetypes)
        shown, surfaces = shown_text(text, spans, entities)
        definitions = archetype_definitions()
        definitions_shown = label_definitions(schema, self.allow_no_label)
        record = StageRecord("calibrator", inputs={"mode": self.mode, "archetypes": dict(archetypes)})
        probabilities: dict[str, float] = {}
        if self.mode == "sentence":
            labels, probabilities = type_in_one_request(
                self,
                self.predict,
                backend,
                record,
                schema,
                entities,
                definitions_shown,
                surfaces,
                archetype_definitions={a: definitions[a] for a in dict.fromkeys(archetypes.values())},
                text=shown,
                entities=dict(archetypes),
            )
        else:
            labels = {}
            for entity, archetype in archetypes.items():
                logprobs = []
                reply = self.call_lm(
                    self.predict_entity,
                    backend,
                    record,
                    {"label": one_of(list(definitions_shown))},
                    logprobs,
                    label_definitions=definitions_shown,
                    text=shown,
                    entity=entity,
                    archetype=archetype,
                    archetype_definition=definitions[archetype],
                )
                label = resolve_label(schema, entity, (reply or {}).get("label"), record)
                if label is not None:
                    labels[entity] = label
                    answer = (reply or {}).get("label")
                    found = answer_probabilities(logprobs[-1], {"label": answer}) if logprobs else {}
                    if "label" in found:
                        probabilities[entity] = found["label"]
        record.outputs = {"labels": labels}
        if probabilities:
            record.outputs["probabilities"] = probabilities
        return dspy.Prediction(label_of=labels, probabilities=probabilities, record=record)


class DirectTyper(LMStage):
    """Types entities straight against the target definitions, with no archetype in between.

    ``entities`` are the keys the reply answers under; ``spans`` (one per key) as for :class:`TypeCalibrator`.
    """

    def __init__(self, allow_no_label: bool = False, adapter: dspy.Adapter | None = None) -> None:
        super().__init__(adapter)
        self.allow_no_label = allow_no_label
        self.predict = dspy.Predict(TypeEntities)

    def forward(
        self,
        text: str,
        schema: Schema,
        entities: list[str],
        backend: StageBackend,
        spans: list[Span] | None = None,
    ) -> dspy.Prediction:
        record = StageRecord("direct_typing", inputs={"entities": list(entities)})
        definitions_shown = label_definitions(schema, self.allow_no_label)
        shown, surfaces = shown_text(text, spans, entities)
        labels, probabilities = type_in_one_request(
            self,
            self.predict,
            backend,
            record,
            schema,
            entities,
            definitions_shown,
            surfaces,
            text=shown,
            entities=entities,
        )
        record.outputs = {"labels": labels}
        if probabilities:
            record.outputs["probabilities"] = probabilities
        return dspy.Prediction(label_of=labels, probabilities=probabilities, record=record)


class LabelMatcher(LMStage):
    """Types the marked spans with the archetype stage's prompt and model, the target labels' definitions in
    the archetypes' place: the trained classifier matches mentions to definitions, whichever they are.

    On the embedded 0.5B model with the trained archetype adapter it gives 40% of dev's gold spans their gold
    label, against 23% for the frozen calibrator (``evals/results/archetypes-dev-qwen2.5-coder-0.5b``).
    ``keys`` names each span as for :class:`~samner_dspy.programs.archetype.ArchetypeClassifier`.
    """

    def __init__(self, allow_no_label: bool = False, adapter: dspy.Adapter | None = None) -> None:
        super().__init__(adapter)
        self.allow_no_label = allow_no_label
        self.predict = dspy.Predict(ClassifyArchetype)

    def forward(
        self, text: str, schema: Schema, spans: list[Span], keys: list[str], backend: StageBackend
    ) -> dspy.Prediction:
        surfaces = {key: span.text for key, span in zip(keys, spans, strict=True)}
        entities = list(dict.fromkeys(keys))
        tagged = tag_entities(text, spans, keys)
        definitions = label_definitions(schema, self.allow_no_label)
        record = StageRecord("matcher", inputs={"tagged_text": tagged, "entities": entities})
        logprobs: list = []
        reply = self.call_lm(
            self.predict,
            backend,
            record,
            {"archetypes": choice_per_key(entities, list(definitions))},
            logprobs,
            archetype_definitions=definitions,
            tagged_text=tagged,
            entities=entities,
        )
        answers = (reply or {}).get("archetypes")
        labels = resolve_labels(schema, entities, answers, record, surfaces)
        probabilities = entity_probabilities(logprobs, answers, labels, surfaces)
        record.outputs = {"labels": labels}
        if probabilities:
            record.outputs["probabilities"] = probabilities
        return dspy.Prediction(label_of=labels, probabilities=probabilities, record=record)
