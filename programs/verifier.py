"""CCR's verification mode: the anchor confirms or rejects uncorroborated explorer candidates."""

from __future__ import annotations

import dspy

from samner_dspy.backends import StageBackend
from samner_dspy.constraints import subset_of
from samner_dspy.programs.base import LMStage
from samner_dspy.schema import Schema
from samner_dspy.signatures import VerifySpan
from samner_dspy.tracing import StageRecord


class SpanVerifier(LMStage):
    """One request per sentence, whatever the number of candidates; answers outside them are ignored."""

    def __init__(self, adapter: dspy.Adapter | None = None) -> None:
        super().__init__(adapter)
        self.predict = dspy.Predict(VerifySpan)

    def forward(
        self, text: str, schema: Schema, candidates: list[str], backend: StageBackend, record: StageRecord
    ) -> dspy.Prediction:
        reply = self.call_lm(
            self.predict,
            backend,
            record,
            {"confirmed": subset_of(candidates)},
            entity_types=schema.labels,
            text=text,
            candidates=candidates,
        )
        answered = (reply or {}).get("confirmed") or []
        confirmed = {c for c in candidates if c in {a for a in answered if isinstance(a, str)}}
        return dspy.Prediction(confirmed=confirmed, answered=reply is not None)
