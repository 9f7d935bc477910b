"""Collaborative Consensus Refinement's verification request, answered by the anchor."""

import dspy


class VerifySpan(dspy.Signature):
    """Some candidate mentions were proposed as named entities of the given types by another extractor.
    Keep only the candidates that, in this text, name a specific entity of one of those types; leave out
    generic words, common nouns and fragments."""

    entity_types: list[str] = dspy.InputField(desc="the entity types of interest")
    text: str = dspy.InputField(desc="the text the candidates come from")
    candidates: list[str] = dspy.InputField(desc="the candidate mentions to check")
    confirmed: list[str] = dspy.OutputField(desc="the candidates that are real entity mentions, copied exactly")
