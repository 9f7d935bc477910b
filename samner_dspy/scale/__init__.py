"""Corpus scale: the SAM-NER stages as a distributed Ray Data batch pipeline (the ``ray`` extra)."""

from samner_dspy.scale.processors import HttpEndpoint, VllmEngine
from samner_dspy.scale.ray_data import CorpusRun, annotate_corpus, read_output

__all__ = ["CorpusRun", "HttpEndpoint", "VllmEngine", "annotate_corpus", "read_output"]
