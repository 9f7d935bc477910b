"""The values the pipeline hands back to callers."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

TYPED_BY = ("calibrator", "matcher", "direct_typing", "anchor", "direct")
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
    ``direct`` (the one direct prompt); None where not recorded (gold, imported or older results)."""

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["sources"] = list(self.sources)
        return data


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
