"""DSPy modules, one per SAM-NER stage, composed into :class:`SAMNER`."""

from samner_dspy.programs.archetype import ArchetypeClassifier
from samner_dspy.programs.calibrator import DirectTyper, TypeCalibrator
from samner_dspy.programs.consensus import ConsensusRefiner, NoiseRule
from samner_dspy.programs.direct import DirectNER
from samner_dspy.programs.extractor import SpanExtractor
from samner_dspy.programs.samner import SAMNER
from samner_dspy.programs.verifier import SpanVerifier

__all__ = [
    "SAMNER",
    "ArchetypeClassifier",
    "ConsensusRefiner",
    "DirectNER",
    "DirectTyper",
    "NoiseRule",
    "SpanExtractor",
    "SpanVerifier",
    "TypeCalibrator",
]
