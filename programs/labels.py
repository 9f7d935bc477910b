"""Reading typing answers against the caller's schema: repair what can be repaired, drop the rest."""

from __future__ import annotations

from samner_dspy.grounding import mention_key
from samner_dspy.programs.base import answer_for
from samner_dspy.schema import NO_LABEL, Schema
from samner_dspy.tracing import StageRecord

NO_LABEL_DEFINITION = "No label of this schema fits the entity; it is left out of the result."


def label_definitions(schema: Schema, allow_no_label: bool) -> dict[str, str]:
    """The definitions a typing prompt shows; ``none`` joins them only when the caller allows it."""
    return {**schema.to_dict(), NO_LABEL: NO_LABEL_DEFINITION} if allow_no_label else schema.to_dict()


def resolve_label(schema: Schema, entity: str, answer: object, record: StageRecord) -> str | None:
    """The schema label ``answer`` names, or None with the reason recorded in ``record``."""
    if answer is None:
        record.drop(entity, "no label given")
        return None
    label = schema.match_label(answer)
    if label is not None:
        if label != answer:
            record.repair(entity, f"label {answer!r} read as {label!r}")
        return label
    if isinstance(answer, str) and mention_key(answer) == NO_LABEL:
        record.drop(entity, "no label of the schema fits")
        return None
    record.drop(entity, f"label {answer!r} is not in the schema")
    return None


def resolve_labels(
    schema: Schema, entities: list[str], answers: object, record: StageRecord, surfaces: dict[str, str] | None = None
) -> dict[str, str]:
    """The schema label of each entity key; ``surfaces`` maps occurrence keys to their strings (see answer_for)."""
    labels: dict[str, str] = {}
    for entity in entities:
        label = resolve_label(schema, entity, answer_for(answers, entity, (surfaces or {}).get(entity)), record)
        if label is not None:
            labels[entity] = label
    return labels
