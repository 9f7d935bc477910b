"""JSON schemas for constrained decoding, built per request because allowed values depend on the input."""

from __future__ import annotations

from typing import Any

JsonSchema = dict[str, Any]


def closed_object(properties: dict[str, JsonSchema]) -> JsonSchema:
    """An object with exactly these properties, all required, nothing else."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def string_lists(keys: list[str]) -> JsonSchema:
    """``{key: [string, ...]}`` for every key: an extractor's answer."""
    return closed_object({key: {"type": "array", "items": {"type": "string"}} for key in keys})


def subset_of(values: list[str]) -> JsonSchema:
    """A list whose items are drawn from ``values``: a verifier's answer."""
    return {"type": "array", "items": {"type": "string", "enum": list(values)}}


def choice_per_key(keys: list[str], choices: list[str]) -> JsonSchema:
    """``{key: one of choices}`` for every key: an archetype or label per entity."""
    return closed_object({key: {"type": "string", "enum": list(choices)} for key in keys})


def one_of(choices: list[str]) -> JsonSchema:
    return {"type": "string", "enum": list(choices)}
