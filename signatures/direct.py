"""Single-request prompting, the baselines SAM-NER is measured against: one request extracts and types."""

import dspy


class ExtractTypedEntities(dspy.Signature):
    """Extract the named entities mentioned in the text and file each under one of the target labels,
    using the label definitions. Copy each mention exactly as it is written in the text. Prefer the most
    specific label that fits. Give an empty list for a label with no mention."""

    label_definitions: dict[str, str] = dspy.InputField(desc="the target labels with their definitions")
    text: str = dspy.InputField(desc="the text to extract from")
    entities: dict[str, list[str]] = dspy.OutputField(desc="for every label, the mentions of that label")


class ExtractEntities(dspy.Signature):
    """Extract all named entities from the text."""

    entity_types: list[str] = dspy.InputField(desc="the label names, and nothing else about them")
    text: str = dspy.InputField(desc="the text to extract from")
    entities: list[dict[str, str]] = dspy.OutputField(desc='each entity as {"text": mention, "type": label}')
