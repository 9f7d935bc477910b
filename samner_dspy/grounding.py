"""Locating model-produced strings in the caller's text.

LLMs return strings, not offsets, and may change case or spacing, or invent text. Every string is
matched back to the source here; what cannot be matched is reported, never returned.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from samner_dspy.types import Candidate, Span

AlignmentStatus = Literal["exact", "case", "whitespace"]
ALIGNMENTS: tuple[AlignmentStatus, ...] = ("exact", "case", "whitespace")
"""How a string matched the text, strict to loose (LangExtract records the like per extraction): as written;
ignoring case; ignoring case and the amount of whitespace."""


@dataclass(frozen=True)
class Located:
    """Where one candidate string occurs in the text, as the text spells it, and how it matched."""

    candidate: str
    surface: str
    spans: tuple[Span, ...]
    alignment_status: AlignmentStatus = "exact"

    def as_candidate(self, sources: tuple[str, ...], types: tuple[str, ...] = ()) -> Candidate:
        """The candidate these occurrences make, so grounding reads the spans instead of locating again."""
        return Candidate(self.surface, sources, types, self.spans, self.alignment_status)


@dataclass(frozen=True)
class Unlocated:
    candidate: str
    reason: str


def mention_key(surface: str) -> str:
    """Two strings name the same mention when they match ignoring case and spacing."""
    return " ".join(surface.split()).casefold()


_UNSPACED_SCRIPTS = ("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "THAI", "LAO", "KHMER", "MYANMAR", "TIBETAN")


def _unspaced(char: str) -> bool:
    """Characters of scripts written without spaces between words, where words have no visible edge."""
    return unicodedata.east_asian_width(char) in ("W", "F") or unicodedata.name(char, "").startswith(_UNSPACED_SCRIPTS)


def _edge_ok(left: str, right: str) -> bool:
    """May a mention begin or end between these two characters?"""
    return not (left.isalnum() and right.isalnum()) or _unspaced(left) or _unspaced(right)


def _at_word_boundary(text: str, start: int, end: int) -> bool:
    before_ok = start == 0 or _edge_ok(text[start - 1], text[start])
    after_ok = end == len(text) or _edge_ok(text[end - 1], text[end])
    return before_ok and after_ok


def _occurrences(text: str, pattern: re.Pattern[str]) -> list[Span]:
    return [Span(m.start(), m.end(), m.group(0)) for m in pattern.finditer(text) if m.end() > m.start()]


def locate(text: str, candidate: object) -> Located | Unlocated:
    """Find every occurrence of ``candidate`` in ``text``.

    Matching is tried from strict to loose: exact, then ignoring case, then ignoring case and the amount
    of whitespace. Only whole-word occurrences count, so "art" never matches inside "start"; in scripts
    written without spaces (CJK, Thai) any position is a word edge.
    """
    if not isinstance(candidate, str):
        return Unlocated(repr(candidate), "not a string")
    needle = candidate.strip()
    if not needle:
        return Unlocated(candidate, "empty string")
    words = needle.split()
    patterns = (
        re.compile(re.escape(needle)),
        re.compile(re.escape(needle), re.IGNORECASE),
        re.compile(r"\s+".join(re.escape(word) for word in words), re.IGNORECASE),
    )
    for pattern, status in zip(patterns, ALIGNMENTS, strict=True):
        spans = [s for s in _occurrences(text, pattern) if _at_word_boundary(text, s.start, s.end)]
        if spans:
            return Located(candidate, spans[0].text, tuple(spans), status)
    return Unlocated(candidate, "not found in the text as a whole word")


def resolve_overlaps(
    spans: list[Span], priority: Callable[[Span], tuple[int, ...]] | None = None
) -> tuple[list[Span], list[Span]]:
    """Keep the strongest of overlapping spans (flat NER, as in CrossNER); return (kept, discarded).

    Strength is ``priority`` (higher wins), then length, then the earlier start. The kept list is in text order.
    """

    def strength(span: Span) -> tuple[int, ...]:
        return (*(priority(span) if priority else ()), span.end - span.start, -span.start)

    kept: list[Span] = []
    discarded: list[Span] = []
    for span in sorted(set(spans), key=strength, reverse=True):
        if any(span.start < other.end and other.start < span.end for other in kept):
            discarded.append(span)
        else:
            kept.append(span)
    return sorted(kept, key=lambda s: s.start), discarded
