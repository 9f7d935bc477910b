"""The typed stage signatures of SAM-NER: data that says what each stage reads and writes."""

from samner_dspy.signatures.archetype import ClassifyArchetype
from samner_dspy.signatures.calibrate import CalibrateEntity, CalibrateType, TypeEntities
from samner_dspy.signatures.direct import ExtractEntities, ExtractTypedEntities
from samner_dspy.signatures.extract import ExtractSpans
from samner_dspy.signatures.verify import VerifySpan

__all__ = [
    "CalibrateEntity",
    "CalibrateType",
    "ClassifyArchetype",
    "ExtractEntities",
    "ExtractSpans",
    "ExtractTypedEntities",
    "TypeEntities",
    "VerifySpan",
]
