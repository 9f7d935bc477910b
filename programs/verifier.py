"""CCR's verification mode: the anchor confirms or rejects uncorroborated explorer candidates."""

from __future__ import annotations

import dspy

from samner_dspy.constraints import subset_of
from samner_dspy.programs.base import LMStage
from samner_dspy.schema import Schema
from samner_dspy.signatures import VerifySpan
from samner_dspy.tracing import StageRecord


class SpanVerifier(LMStage):
    """One request per sentence, whatever the number of candidates; answers outside them are ignored. The anchor's
    endpoint answers it; its record's requests are counted under the consensus stage that asks."""

    def __init__(self, adapter: dspy.Adapter | None = None) -> None:
        super().__init__("anchor", adapter)
        self.predict = dspy.Predict(VerifySpan)

    def forward(self, text: str, schema: Schema, candidates: list[str]) -> dspy.Prediction:
        record = StageRecord("verifier", inputs={"candidates": list(candidates)})
        reply = self.call_lm(
            self.predict,
            record,
            {"confirmed": subset_of(candidates)},
            entity_types=schema.labels,
            text=text,
            candidates=candidates,
        )
        answers = reply.get("confirmed") or []
        confirmed = {c for c in candidates if c in {a for a in answers if isinstance(a, str)}}
        return dspy.Prediction(confirmed=confirmed, answered=reply.answered, record=record)
