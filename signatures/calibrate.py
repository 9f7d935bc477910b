"""Definition-guided calibration: archetype-level predictions resolved to the caller's labels."""

import dspy


class CalibrateType(dspy.Signature):
    """Assign every entity one label from the target labels, using the label definitions. Each entity
    comes with its archetype and the archetype's definition: choose a label compatible with that
    archetype and the context. Prefer the most specific label that fits (for example researcher over
    person, country over location)."""

    label_definitions: dict[str, str] = dspy.InputField(desc="the target labels with their definitions")
    archetype_definitions: dict[str, str] = dspy.InputField(desc="the definitions of the entities' archetypes")
    text: str = dspy.InputField(desc="the text the entities come from")
    entities: dict[str, str] = dspy.InputField(desc="every entity with its archetype")
    labels: dict[str, str] = dspy.OutputField(desc="for every entity, one target label")


class CalibrateEntity(dspy.Signature):
    """Assign the entity one label from the target labels, using the label definitions. The entity's
    archetype and its definition constrain the choice: choose a label compatible with that archetype and
    the context. Prefer the most specific label that fits."""

    label_definitions: dict[str, str] = dspy.InputField(desc="the target labels with their definitions")
    text: str = dspy.InputField(desc="the text the entity comes from")
    entity: str = dspy.InputField(desc="the entity mention")
    archetype: str = dspy.InputField(desc="the entity's archetype")
    archetype_definition: str = dspy.InputField(desc="the definition of that archetype")
    label: str = dspy.OutputField(desc="one target label")


class TypeEntities(dspy.Signature):
    """Assign every entity one label from the target labels, using the label definitions and the context.
    Prefer the most specific label that fits (for example researcher over person, country over location).
    """

    label_definitions: dict[str, str] = dspy.InputField(desc="the target labels with their definitions")
    text: str = dspy.InputField(desc="the text the entities come from")
    entities: list[str] = dspy.InputField(desc="the entity mentions")
    labels: dict[str, str] = dspy.OutputField(desc="for every entity, one target label")
