"""Target schemas: labels with natural-language definitions, validated once at the boundary."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from samner_dspy.data import load_data
from samner_dspy.errors import SchemaError

NO_LABEL = "none"
"""The answer a typing stage gives for an entity that fits no label; it cannot be a label itself."""

CROSSNER_DOMAINS: tuple[str, ...] = ("ai", "literature", "music", "politics", "science")


def _label_key(label: str) -> str:
    return re.sub(r"[\s_\-]+", " ", label).strip().casefold()


class Schema(Mapping[str, str]):
    """An ordered, immutable ``{label: definition}`` mapping.

    Build one from a mapping, a list of labels, another ``Schema``, or a name such as ``crossner:music``
    with :meth:`Schema.coerce`. Labels given without a definition are defined by their own name.
    """

    __slots__ = ("_definitions", "_keys", "name")

    def __init__(self, definitions: Mapping[str, str], name: str | None = None) -> None:
        if not isinstance(definitions, Mapping):
            raise SchemaError(f"a schema must be a mapping of label to definition, got {type(definitions).__name__}")
        if not definitions:
            raise SchemaError("the schema is empty: give at least one label")
        cleaned: dict[str, str] = {}
        keys: dict[str, str] = {}
        for label, definition in definitions.items():
            if not isinstance(label, str):
                raise SchemaError(f"schema labels must be strings, got {label!r} ({type(label).__name__})")
            stripped = label.strip()
            if not stripped:
                raise SchemaError(f"schema label {label!r} is empty or only whitespace")
            if definition is None:
                definition = ""
            if not isinstance(definition, str):
                raise SchemaError(
                    f"the definition of label {stripped!r} must be a string, got {type(definition).__name__}"
                )
            key = _label_key(stripped)
            if key == NO_LABEL:
                raise SchemaError(f"{stripped!r} is reserved for 'no label applies'; rename that label")
            if key in keys:
                raise SchemaError(f"duplicate schema label {stripped!r} (same as {keys[key]!r})")
            keys[key] = stripped
            cleaned[stripped] = definition.strip() or stripped
        self._definitions = cleaned
        self._keys = keys
        self.name = name

    @classmethod
    def coerce(cls, value: Schema | Mapping[str, str] | Iterable[str] | str) -> Schema:
        """Accept every schema form the public API documents, or raise :class:`SchemaError`."""
        if isinstance(value, Schema):
            return value
        if isinstance(value, str):
            return cls.from_name(value)
        if isinstance(value, Mapping):
            return cls(value)
        if isinstance(value, Iterable):
            labels = list(value)
            if any(not isinstance(label, str) for label in labels):
                bad = next(label for label in labels if not isinstance(label, str))
                raise SchemaError(f"schema labels must be strings, got {bad!r} ({type(bad).__name__})")
            seen: dict[str, str] = {}
            for label in labels:
                if label.strip() in seen:
                    raise SchemaError(f"duplicate schema label {label.strip()!r}")
                seen[label.strip()] = ""
            return cls(dict.fromkeys(labels, ""))
        raise SchemaError(f"cannot read a schema from {type(value).__name__}: give a mapping, a list or a name")

    @classmethod
    def from_name(cls, name: str) -> Schema:
        """A built-in schema by name: ``crossner:<domain>``."""
        prefix, _, domain = name.partition(":")
        if prefix.strip().lower() != "crossner" or not domain:
            raise SchemaError(
                f"unknown schema name {name!r}; built-in schemas are "
                + ", ".join(f"crossner:{d}" for d in CROSSNER_DOMAINS)
            )
        return crossner_schema(domain.strip().lower())

    @classmethod
    def parse_arg(cls, value: str) -> Schema:
        """Read a schema given on a command line: a name, inline JSON, a JSON file, or ``a,b,c``."""
        text = value.strip()
        if not text:
            raise SchemaError("the schema argument is empty")
        if text.lower().startswith("crossner:"):
            return cls.from_name(text)
        if text[0] in "{[":
            try:
                return cls.coerce(json.loads(text))
            except json.JSONDecodeError as exc:
                raise SchemaError(f"the inline schema is not valid JSON: {exc}") from exc
        path = Path(text)
        if path.suffix.lower() == ".json" or path.is_file():
            if not path.is_file():
                raise SchemaError(f"schema file {text!r} does not exist")
            try:
                return cls.coerce(json.loads(path.read_text(encoding="utf-8")))
            except json.JSONDecodeError as exc:
                raise SchemaError(f"schema file {text!r} is not valid JSON: {exc}") from exc
        return cls.coerce([label for label in text.split(",") if label.strip()] or [""])

    def __getitem__(self, label: str) -> str:
        return self._definitions[label]

    def __iter__(self) -> Iterator[str]:
        return iter(self._definitions)

    def __len__(self) -> int:
        return len(self._definitions)

    def __repr__(self) -> str:
        shown = self.name or ", ".join(self._definitions)
        return f"Schema({shown})"

    @property
    def labels(self) -> list[str]:
        return list(self._definitions)

    def match_label(self, answer: object) -> str | None:
        """The schema label an LM answer names, repairing case and spacing; None if it names none."""
        if not isinstance(answer, str):
            return None
        return self._keys.get(_label_key(answer))

    def to_dict(self) -> dict[str, str]:
        return dict(self._definitions)

    def person_role(self) -> tuple[str, str] | None:
        """``(person label, role label)`` where the schema's ``person`` definition excludes one of its labels
        ("a named person who is not a writer"), or None.

        Schemas for a field pair ``person`` with the field's one role (writer, researcher, politician) and keep
        ``person`` for everyone else; small models file nearly every such mention under ``person``."""
        general = self.match_label("person")
        if general is None:
            return None
        others = sorted((label for label in self._definitions if label != general), key=len, reverse=True)
        names = "|".join(re.escape(label) for label in others)
        excluded = re.search(rf"\bnot (?:an? |the )?({names})\b", self._definitions[general], re.IGNORECASE)
        return (general, self._keys[_label_key(excluded.group(1))]) if names and excluded else None

    def without_examples(self) -> Schema:
        """Each definition cut to its first sentence, less any ``such as``/``for example``/``e.g.`` clause.

        A small model copies the examples of a definition into its answer (``NeurIPS``, ``France``) whether or
        not the text holds them, so a reviewer asks for the baseline without them (``direct-short``). On the
        embedded 0.5B it copies fewer, yet scores lower on dev than with them (README, "Evaluation on CrossNER").
        """
        return Schema({label: _without_examples(text) for label, text in self._definitions.items()}, name=self.name)


_EXAMPLE_CLAUSE = re.compile(r",?\s+(?:such as|for example|for instance|e\.g\.|like)\s.*$", re.IGNORECASE | re.DOTALL)
_FIRST_SENTENCE = re.compile(r"^(.*?[.!?])(?:\s|$)", re.DOTALL)


def _without_examples(definition: str) -> str:
    first = _FIRST_SENTENCE.match(definition)
    sentence = (first.group(1) if first else definition).strip()
    cut = _EXAMPLE_CLAUSE.sub("", sentence.rstrip(".!?")).strip()
    return f"{cut}." if cut and cut != sentence.rstrip(".!?") else sentence


def crossner_label_name(raw_label: str) -> str:
    """The natural-language name of a CrossNER tag (``programlang`` -> ``programming language``)."""
    names: dict[str, str] = load_data("crossner_schemas")["label_names"]
    try:
        return names[raw_label]
    except KeyError:
        raise SchemaError(f"unknown CrossNER label {raw_label!r}") from None


def crossner_schema(domain: str) -> Schema:
    """The built-in schema of one CrossNER domain, with natural-language labels and definitions."""
    domains: dict[str, dict[str, str]] = load_data("crossner_schemas")["domains"]
    if domain not in domains:
        raise SchemaError(f"unknown CrossNER domain {domain!r}; choose one of {', '.join(CROSSNER_DOMAINS)}")
    return Schema(
        {crossner_label_name(raw): definition for raw, definition in domains[domain].items()},
        name=f"crossner:{domain}",
    )
