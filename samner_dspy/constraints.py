"""JSON schemas for constrained decoding, built per request because allowed values depend on the input."""

from __future__ import annotations

from typing import Any

JsonSchema = dict[str, Any]


def response_format(json_schema: JsonSchema, name: str, dialect: str) -> dict[str, Any]:
    """A chat request's ``response_format`` constraining the reply to ``json_schema``: OpenAI's (and vLLM's)
    ``json_schema`` type, or with ``dialect="llama_cpp"`` llama-cpp-python's ``json_object`` with a ``schema``."""
    if dialect == "llama_cpp":
        return {"type": "json_object", "schema": json_schema}
    return {"type": "json_schema", "json_schema": {"name": name, "schema": json_schema}}


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


def reply_tokens(schema: JsonSchema) -> int | None:
    """About how many tokens the longest reply ``schema`` allows takes, or None when it is unbounded (free text).

    Generous on purpose (about 3 characters a token, room for the spaces and newlines a model may put between
    items): the budget of a typing request grows with its entities, so a long entity list is never cut off at
    a fixed limit and loses the entities at its end.
    """
    if "enum" in schema:
        return 2 + max((len(str(choice)) for choice in schema["enum"]), default=0) // 3 + 1
    kind = schema.get("type")
    if kind == "object":
        total = 2
        for key, value in (schema.get("properties") or {}).items():
            inner = reply_tokens(value)
            if inner is None:
                return None
            total += len(key) // 3 + 4 + inner
        return total
    if kind == "array" and "enum" in (items := schema.get("items") or {}):
        return 2 + sum(len(str(choice)) // 3 + 4 for choice in items["enum"])
    if kind in ("boolean", "integer", "number"):
        return 4
    return None
