"""The ``<ENT>`` markup the archetype classifier reads, shared by inference and training-data builders."""

from __future__ import annotations

import re

from samner_dspy.types import Span

OPEN_TAG = "<ENT>"
CLOSE_TAG = "</ENT>"
TAG_LOOKALIKE = re.compile(r"<\s*/?\s*ENT\b[^<>]*>", re.IGNORECASE)
"""Anything a reader could take for our tag: any case, inner spaces, attributes, self-closing."""


def escape_tags(text: str) -> str:
    """Neutralise tag look-alikes in the caller's text, so only our markup reads as a tag."""
    return TAG_LOOKALIKE.sub(lambda m: f"&lt;{m.group()[1:-1]}&gt;", text)


def tag_entities(text: str, spans: list[Span]) -> str:
    """``text`` with every span wrapped in ``<ENT>…</ENT>``; spans must not overlap."""
    pieces: list[str] = []
    cursor = 0
    for span in sorted(spans, key=lambda s: s.start):
        if span.start < cursor:
            raise ValueError(f"overlapping spans cannot be tagged: {span} starts before {cursor}")
        pieces.append(escape_tags(text[cursor : span.start]))
        pieces.append(f"{OPEN_TAG}{escape_tags(text[span.start : span.end])}{CLOSE_TAG}")
        cursor = span.end
    pieces.append(escape_tags(text[cursor:]))
    return "".join(pieces)
