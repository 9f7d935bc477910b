"""The values the pipeline hands back to callers."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import dspy

from samner_dspy.tracing import Trace

TYPED_BY = ("calibrator", "matcher", "direct_typing", "anchor", "direct", "person_role")
"""The stages that can give an entity its label."""


@dataclass(frozen=True)
class Entity:
    """One grounded mention: ``text == sentence[start:end]`` always holds for the caller's string."""

    text: str
    label: str
    start: int
    end: int
    archetype: str | None = None
    sources: tuple[str, ...] = field(default_factory=tuple)
    """Which extractors proposed it: ``anchor``, ``explorer`` or both."""
    score: float | None = None
    """Confidence in [0, 1] from the pipeline's evidence (see :mod:`samner_dspy.confidence`); None if unscored."""
    alignment_status: str | None = None
    """How the model's string matched the text (:data:`samner_dspy.grounding.ALIGNMENTS`: ``exact``, ``case``,
    ``whitespace``), as LangExtract's ``alignment_status``; None where not recorded (gold, imported results)."""
    typed_by: str | None = None
    """Which stage gave the label (:data:`TYPED_BY`): ``calibrator`` (the archetype and the definitions),
    ``matcher`` (the trained archetype classifier over the labels' definitions, ``calibration="matched"``),
    ``direct_typing`` (the definitions alone), ``anchor`` (the anchor's own type, no typing request) or
    ``direct`` (the one direct prompt), ``person_role`` (typed ``person``, filed under the schema's person role by
    ``person_role=True``); None where not recorded (gold, imported or older results)."""

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["sources"] = list(self.sources)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Entity:
        """An entity from :meth:`to_dict` output, or any dict with ``text``, ``label``, ``start``, ``end`` (GLiNER's,
        say): the fields it lacks are None, and keys that are not fields are ignored."""
        known = {f.name for f in fields(cls)}
        values = {name: value for name, value in data.items() if name in known}
        values["start"], values["end"] = int(data["start"]), int(data["end"])
        values["sources"] = tuple(data.get("sources") or ())
        return cls(**values)


@dataclass(frozen=True)
class Span:
    """A located occurrence of a discovered surface string, before it gets a label."""

    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Candidate:
    """A discovered surface string (spelled as in the text) and the extractors that proposed it."""

    surface: str
    sources: tuple[str, ...]
    types: tuple[str, ...] = ()
    """The entity types the extractors filed it under: a hint only, the label comes from calibration."""
    spans: tuple[Span, ...] = ()
    """Where it occurs, found once when the string was located (:func:`samner_dspy.grounding.locate`)."""
    alignment_status: str | None = None
    """How the string matched the text when located (``exact``, ``case``, ``whitespace``)."""


class Document(dspy.Prediction):
    """One annotated text, the one shape of a result: what a program returns, a line of JSON Lines output
    (:meth:`to_dict`, :meth:`from_dict`), what the exports and spaCy read and write, and what the view draws.

    ``text``; ``entities``, grounded :class:`Entity` objects; ``trace``, a :class:`~samner_dspy.tracing.Trace`
    (a long text's windows inside it; None for results imported from other tools); ``key``, where it stands in
    its input (``{"index": n}`` or ``{"id": ...}``; ``{}`` for a single call). A ``dspy.Prediction``, so a program
    returns it from ``forward`` and reads it by field, as DSPy's own modules do.
    """

    @classmethod
    def of(cls, result: dspy.Prediction, key: dict[str, Any]) -> Document:
        """A program's result (any prediction with ``text``, ``entities`` and ``trace``) at ``key`` of its input."""
        return cls(text=result.text, entities=list(result.entities), trace=result.get("trace"), key=dict(key))

    @property
    def index(self) -> int:
        return int((self.get("key") or {}).get("index", 0))

    def to_dict(self) -> dict[str, Any]:
        """The JSON Lines record: the key's fields, ``text``, ``entities`` and ``trace``."""
        trace = self.get("trace")
        return {
            **(self.get("key") or {}),
            "text": self.text,
            "entities": [entity.to_dict() for entity in self.entities],
            "trace": trace.to_dict() if trace is not None else None,
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any], number: int = 0) -> Document:
        """A record of :meth:`to_dict`; without a key of its own it is the ``number``-th of its file."""
        key = {"id": record["id"]} if "id" in record else {"index": int(record.get("index", number))}
        trace = record.get("trace")
        return cls(
            text=record["text"],
            entities=[Entity.from_dict(e) for e in record.get("entities") or []],
            trace=Trace.from_dict(trace) if trace else None,
            key=key,
        )

    def to_html(self, title: str = "samner view") -> str:
        """This result as the self-contained page of ``samner view``."""
        from samner_dspy.formats.view import render_html

        if not isinstance(self.get("text"), str):
            raise ValueError("this result does not hold its text: a Document needs text=")
        return render_html([self.to_dict()], title=title)

    def save_html(self, path: str | Path) -> Path:
        """Write :meth:`to_html` to ``path`` (one file; opens offline)."""
        path = Path(path)
        path.write_text(self.to_html(), encoding="utf-8")
        return path
