"""The CrossNER schemas an evaluation sends: built-in, or label definitions read from a file, under either naming.

``samner eval --definitions FILE`` reads definitions in two shapes:

- one schema, ``{label: definition}`` (as ``--schema`` takes it), for an evaluation of a single domain;
- one schema per domain, ``{domain: {label: definition}}``: the shape of the SAM-NER authors' released
  ``schema_define_crossNER.json``, so a reproduction can use their definitions without this project copying
  them.

Labels may be CrossNER's raw tags (``programlang``, as the authors' file writes them) or this project's names
(``programming language``); either is mapped onto the naming the evaluation uses. ``label_names="raw"`` sends
the raw tags, as the authors' prompts do, and renames gold to match, so strict scores stay comparable.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from samner_dspy.data import load_data
from samner_dspy.errors import SchemaError
from samner_dspy.formats.labelled import Sentence
from samner_dspy.schema import Schema, crossner_schema

LabelNames = Literal["readable", "raw"]
LABEL_NAMES: tuple[str, ...] = ("readable", "raw")


def _raw_names() -> dict[str, str]:
    """CrossNER tag -> this project's label name (``programlang`` -> ``programming language``)."""
    return load_data("crossner_schemas")["label_names"]


def _builtin(domain: str) -> dict[str, str]:
    """A domain's built-in definitions keyed by raw tag, in the built-in order."""
    domains: dict[str, dict[str, str]] = load_data("crossner_schemas")["domains"]
    crossner_schema(domain)  # an unknown domain fails here, with the list of known ones
    return domains[domain]


def _name(raw: str, label_names: LabelNames) -> str:
    return raw if label_names == "raw" else _raw_names()[raw]


def builtin_schema(domain: str, label_names: LabelNames = "readable") -> Schema:
    """A domain's built-in schema, its labels named the readable way or as CrossNER's raw tags."""
    _check_naming(label_names)
    definitions = _builtin(domain)
    return Schema({_name(raw, label_names): text for raw, text in definitions.items()}, name=f"crossner:{domain}")


def _check_naming(label_names: str) -> None:
    if label_names not in LABEL_NAMES:
        raise SchemaError(f"unknown label naming {label_names!r}; choose one of {', '.join(LABEL_NAMES)}")


def read_definitions(path: str | Path) -> dict[str, Any]:
    """The parsed JSON object of a definitions file, or a :class:`SchemaError` naming what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise SchemaError(f"definitions file {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SchemaError(f"definitions file {str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not data:
        raise SchemaError(
            f"definitions file {str(path)!r} must hold a JSON object: {{label: definition}} or "
            f"{{domain: {{label: definition}}}}, got {type(data).__name__ if data else 'an empty one'}"
        )
    return data


def _per_domain(data: Mapping[str, Any], source: str) -> bool:
    """True for ``{domain: {label: definition}}``, False for one ``{label: definition}``; mixed is an error."""
    nested = [key for key, value in data.items() if isinstance(value, dict)]
    if nested and len(nested) < len(data):
        flat = next(key for key in data if key not in nested)
        raise SchemaError(
            f"definitions file {source!r} mixes domains (objects, e.g. {nested[0]!r}) with labels "
            f"(e.g. {flat!r}): give {{label: definition}} or {{domain: {{label: definition}}}}"
        )
    return bool(nested)


def definitions_schema(
    definitions: Mapping[str, Any], domain: str, label_names: LabelNames = "readable", source: str = "definitions"
) -> Schema:
    """One domain's schema from ``{label: definition}``: every label of the domain defined, no other label.

    A key may be the raw CrossNER tag or this project's name for it; the file's order is kept, since it is the
    order the prompts list the labels in.
    """
    _check_naming(label_names)
    builtin = _builtin(domain)
    by_key = {raw.casefold(): raw for raw in builtin} | {_raw_names()[raw].casefold(): raw for raw in builtin}
    chosen: dict[str, str] = {}
    for key, text in definitions.items():
        raw = by_key.get(key.strip().casefold()) if isinstance(key, str) else None
        if raw is None:
            raise SchemaError(
                f"{source}: {key!r} is not a label of CrossNER domain {domain!r}; its labels are " + ", ".join(builtin)
            )
        if raw in chosen:
            raise SchemaError(f"{source}: label {raw!r} of domain {domain!r} is defined twice")
        if not isinstance(text, str) or not text.strip():
            raise SchemaError(f"{source}: the definition of {key!r} in domain {domain!r} must be a non-empty string")
        chosen[raw] = text
    missing = [raw for raw in builtin if raw not in chosen]
    if missing:
        raise SchemaError(f"{source}: domain {domain!r} has no definition for {', '.join(missing)}")
    return Schema({_name(raw, label_names): text for raw, text in chosen.items()}, name=f"crossner:{domain}")


def eval_schemas(
    domains: Sequence[str], definitions: str | Path | None = None, label_names: LabelNames = "readable"
) -> dict[str, Schema]:
    """The schema each evaluated domain sends: built-in, or from a definitions file (see the module docstring)."""
    _check_naming(label_names)
    if definitions is None:
        return {domain: builtin_schema(domain, label_names) for domain in domains}
    source = str(definitions)
    data = read_definitions(definitions)
    if not _per_domain(data, source):
        if len(domains) != 1:
            raise SchemaError(
                f"definitions file {source!r} holds one schema ({{label: definition}}) but {len(domains)} domains "
                f"are evaluated; give {{domain: {{label: definition}}}} or evaluate one domain (--domains)"
            )
        return {domains[0]: definitions_schema(data, domains[0], label_names, source)}
    missing = [domain for domain in domains if domain not in data]
    if missing:
        raise SchemaError(
            f"definitions file {source!r} has no domain {', '.join(map(repr, missing))}; it has {', '.join(data)}"
        )
    return {domain: definitions_schema(data[domain], domain, label_names, f"{source}, {domain}") for domain in domains}


def named_gold(sentences: Iterable[Sentence], label_names: LabelNames = "readable") -> list[Sentence]:
    """Sentences whose gold labels use the evaluation's naming (the readers give readable names)."""
    _check_naming(label_names)
    sentences = list(sentences)
    if label_names == "readable":
        return sentences
    raw_of = {name: raw for raw, name in _raw_names().items()}
    return [
        replace(sentence, entities=tuple(replace(e, label=raw_of[e.label]) for e in sentence.entities))
        for sentence in sentences
    ]
