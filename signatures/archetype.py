"""Abstract mediation: one universal archetype per marked entity."""

import dspy


class ClassifyArchetype(dspy.Signature):
    """Each entity is marked in the text with <ENT> and </ENT> tags. Assign every marked entity the one
    archetype, from the given archetypes, that best describes what it refers to in this text."""

    archetype_definitions: dict[str, str] = dspy.InputField(desc="the allowed archetypes with their definitions")
    tagged_text: str = dspy.InputField(desc="the text with every entity marked as <ENT>entity</ENT>")
    entities: list[str] = dspy.InputField(desc="the marked entities, in order of first appearance")
    archetypes: dict[str, str] = dspy.OutputField(
        desc="for every entity, the name of its archetype: one key of archetype_definitions, such as Person or Location"
    )
