"""Entity discovery: used by both the anchor and the explorer extractor."""

import dspy


class ExtractSpans(dspy.Signature):
    """Extract the named entities of the given types that are mentioned in the text.
    Copy each mention exactly as it is written in the text. Give an empty list for a type with no mention."""

    entity_types: list[str] = dspy.InputField(desc="the entity types to look for")
    text: str = dspy.InputField(desc="the text to extract from")
    entities: dict[str, list[str]] = dspy.OutputField(
        desc="for every entity type, the list of mentions of that type copied from the text"
    )
