"""Abstract mediation: every discovered entity gets one of the 14 universal archetypes."""

from __future__ import annotations

import dspy

from samner_dspy.archetypes import FALLBACK_ARCHETYPE, archetype_definitions, archetype_names, match_archetype
from samner_dspy.backends import StageBackend
from samner_dspy.confidence import answer_probabilities
from samner_dspy.constraints import choice_per_key
from samner_dspy.programs.base import LMStage, answer_for
from samner_dspy.signatures import ClassifyArchetype
from samner_dspy.tagging import tag_entities
from samner_dspy.tracing import StageRecord
from samner_dspy.types import Span


class ArchetypeClassifier(LMStage):
    """One request per sentence for all its entities; an answer outside the 14 is repaired to Misc.

    ``keys`` names each span in the request and the reply (the program passes
    :func:`~samner_dspy.tagging.occurrence_keys`, so two occurrences of one string can get two archetypes); by
    default a span is named by its text, and occurrences of one string share one answer.
    """

    def __init__(self, adapter: dspy.Adapter | None = None) -> None:
        super().__init__(adapter)
        self.predict = dspy.Predict(ClassifyArchetype)

    def forward(
        self, text: str, spans: list[Span], backend: StageBackend, keys: list[str] | None = None
    ) -> dspy.Prediction:
        names = keys if keys is not None else [span.text for span in spans]
        surfaces = {name: span.text for name, span in zip(names, spans, strict=True)}
        entities = list(dict.fromkeys(names))
        tagged = tag_entities(text, spans, keys)
        record = StageRecord("archetype", inputs={"tagged_text": tagged, "entities": entities})
        logprobs: list = []
        reply = self.call_lm(
            self.predict,
            backend,
            record,
            {"archetypes": choice_per_key(entities, list(archetype_names()))},
            logprobs,
            archetype_definitions=archetype_definitions(),
            tagged_text=tagged,
            entities=entities,
        )
        answers = (reply or {}).get("archetypes") or {}
        raw = answer_probabilities(logprobs[-1], answers) if logprobs and isinstance(answers, dict) else {}
        probabilities: dict[str, float] = {}
        assigned: dict[str, str] = {}
        for entity in entities:
            if (probability := answer_for(raw, entity, surfaces[entity])) is not None:
                probabilities[entity] = probability
            answer = answer_for(answers, entity, surfaces[entity])
            archetype = match_archetype(answer)
            if archetype is None:
                reason = "no archetype given" if answer is None else f"answer {answer!r} is not an archetype"
                record.repair(entity, f"{reason}; set to {FALLBACK_ARCHETYPE}")
                archetype = FALLBACK_ARCHETYPE
            assigned[entity] = archetype
        record.outputs = {"archetypes": assigned}
        if probabilities:
            record.outputs["probabilities"] = probabilities
        return dspy.Prediction(archetypes=assigned, probabilities=probabilities, record=record)
