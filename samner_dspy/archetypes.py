"""The 14 universal archetypes of SAM-NER and the deterministic projection of fine-grained types onto them.

Both come from the paper's appendix B (tables 4 and 5) and ship as package data, so training-data
builders and the classifier stage read one source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from samner_dspy.data import load_data


@dataclass(frozen=True)
class Archetype:
    name: str
    definition: str
    fine_grained_types: tuple[str, ...]


def normalize_type_name(name: str) -> str:
    """Case-, underscore- and spacing-insensitive key, so ``Cell_Type`` and ``cell type`` project alike."""
    return re.sub(r"\s+", " ", re.sub(r"[_\-]", " ", name)).strip().casefold()


@cache
def load_archetypes() -> tuple[Archetype, ...]:
    data = load_data("archetypes")
    return tuple(
        Archetype(item["name"], item["definition"], tuple(item["fine_grained_types"])) for item in data["archetypes"]
    )


def archetype_names() -> tuple[str, ...]:
    return tuple(archetype.name for archetype in load_archetypes())


@cache
def archetype_definitions() -> dict[str, str]:
    return {archetype.name: archetype.definition for archetype in load_archetypes()}


FALLBACK_ARCHETYPE: str = load_data("archetypes")["fallback"]


@cache
def _projection() -> dict[str, str]:
    table: dict[str, str] = {}
    for archetype in load_archetypes():
        table[normalize_type_name(archetype.name)] = archetype.name
        for fine in archetype.fine_grained_types:
            table[normalize_type_name(fine)] = archetype.name
    return table


def project_type(fine_grained_type: str) -> str:
    """The archetype of a fine-grained type (appendix B); types the table does not know project to Misc."""
    return _projection().get(normalize_type_name(fine_grained_type), FALLBACK_ARCHETYPE)


@cache
def _training_table() -> tuple[dict[str, str | None], frozenset[str]]:
    data = load_data("type_archetypes")
    table = {
        normalize_type_name(name): archetype for types in data["corpora"].values() for name, archetype in types.items()
    }
    return table, frozenset(normalize_type_name(name) for name in data["drop"])


def project_training_type(fine_grained_type: str) -> str | None:
    """The archetype of a training corpus's type as ``data/type_archetypes.json`` writes it (written once, for
    every type of the corpora in ``../shared/data/train``, from their names and definitions); None for a value
    type it leaves out (dates, amounts); a type it does not list projects as appendix B does."""
    table, drop = _training_table()
    key = normalize_type_name(fine_grained_type)
    if key in drop:
        return None
    return table[key] if key in table else project_type(fine_grained_type)


@cache
def _crossner_table() -> dict[tuple[str, str], str]:
    from samner_dspy.schema import crossner_label_name

    table: dict[tuple[str, str], str] = {}
    for domain, labels in load_data("crossner_archetypes")["domains"].items():
        for raw, archetype in labels.items():
            table[domain, normalize_type_name(raw)] = archetype
            table[domain, normalize_type_name(crossner_label_name(raw))] = archetype
    return table


def crossner_archetype(domain: str, label: str) -> str | None:
    """The archetype of a CrossNER label (its tag, ``musicalartist``, or its name, ``musical artist``), from
    ``data/crossner_archetypes.json``, written once from the labels' names and definitions and never from
    CrossNER's sentences; None for a domain or label it does not hold."""
    return _crossner_table().get((domain, normalize_type_name(label)))


def project_schema(fine_grained_types: list[str] | tuple[str, ...]) -> list[str]:
    """The abstract schema of an instance: its types projected, de-duplicated, in first-seen order."""
    return list(dict.fromkeys(project_type(name) for name in fine_grained_types))


def match_archetype(answer: object) -> str | None:
    """The archetype an LM answer names, tolerant of case and spacing; None when it names none."""
    if not isinstance(answer, str):
        return None
    key = normalize_type_name(answer)
    for name in archetype_names():
        if normalize_type_name(name) == key:
            return name
    return None
