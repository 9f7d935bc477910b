"""Abstract mediation: every discovered entity gets one of the 14 universal archetypes."""

from __future__ import annotations

from dataclasses import dataclass

import dspy

from samner_dspy.archetypes import FALLBACK_ARCHETYPE, archetype_definitions, match_archetype
from samner_dspy.constraints import choice_per_key
from samner_dspy.programs.base import LMStage, answer_for
from samner_dspy.signatures import ClassifyArchetype
from samner_dspy.tagging import tag_entities
from samner_dspy.tracing import StageRecord
from samner_dspy.types import Span


@dataclass(frozen=True)
class TaggedAnswers:
    """What one tagged-span request answered: for each entity key, the name it chose (None if none) and the
    answer's probability where the backend gave log-probabilities."""

    entities: list[str]
    surfaces: dict[str, str]
    """The string each key names (``Washington`` for ``Washington (2)``)."""
    answers: dict[str, object]
    """The reply's raw answers, by the keys the reply used."""
    probabilities: dict[str, float]
    record: StageRecord

    def answer(self, entity: str) -> object:
        return answer_for(self.answers, entity, self.surfaces[entity])


class TaggedSpanClassifier(LMStage):
    """The archetype classifier's request: the text with each span in ``<ENT>`` tags, and definitions to choose from,
    one per span. Mediation asks it over the 14 archetypes; ``matched`` typing over the target labels' definitions,
    served by the same (trained) model."""

    def __init__(self, adapter: dspy.Adapter | None = None) -> None:
        super().__init__("archetype", adapter)
        self.predict = dspy.Predict(ClassifyArchetype)

    def ask(
        self, stage: str, text: str, spans: list[Span], keys: list[str] | None, definitions: dict[str, str]
    ) -> TaggedAnswers:
        """One request for every span; ``keys`` name them (by default a span is named by its text, and occurrences
        of one string share one answer)."""
        names = keys if keys is not None else [span.text for span in spans]
        surfaces = {name: span.text for name, span in zip(names, spans, strict=True)}
        entities = list(dict.fromkeys(names))
        tagged = tag_entities(text, spans, keys)
        record = StageRecord(stage, inputs={"tagged_text": tagged, "entities": entities})
        reply = self.call_lm(
            self.predict,
            record,
            {"archetypes": choice_per_key(entities, list(definitions))},
            archetype_definitions=definitions,
            tagged_text=tagged,
            entities=entities,
        )
        raw = reply.get("archetypes")
        answers = {k: v for k, v in raw.items() if isinstance(k, str)} if isinstance(raw, dict) else {}
        return TaggedAnswers(entities, surfaces, answers, reply.key_probabilities(answers, entities, surfaces), record)


class ArchetypeClassifier(TaggedSpanClassifier):
    """One request per sentence for all its entities; an answer outside the 14 is repaired to Misc.

    ``keys`` names each span in the request and the reply (the program passes
    :func:`~samner_dspy.tagging.occurrence_keys`, so two occurrences of one string can get two archetypes); by
    default a span is named by its text, and occurrences of one string share one answer.
    """

    def forward(self, text: str, spans: list[Span], keys: list[str] | None = None) -> dspy.Prediction:
        asked = self.ask("archetype", text, spans, keys, archetype_definitions())
        record = asked.record
        assigned: dict[str, str] = {}
        for entity in asked.entities:
            answer = asked.answer(entity)
            archetype = match_archetype(answer)
            if archetype is None:
                reason = "no archetype given" if answer is None else f"answer {answer!r} is not an archetype"
                record.repair(entity, f"{reason}; set to {FALLBACK_ARCHETYPE}")
                archetype = FALLBACK_ARCHETYPE
            assigned[entity] = archetype
        record.outputs = {"archetypes": assigned}
        if asked.probabilities:
            record.outputs["probabilities"] = asked.probabilities
        return dspy.Prediction(archetypes=assigned, probabilities=asked.probabilities, record=record)
