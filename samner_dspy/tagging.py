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


def occurrence_keys(spans: list[Span]) -> list[str]:
    """A name per span, in the spans' order, that tells repeated occurrences apart so each can get its own
    answer: a string's first occurrence in the text is named by the string, later ones ``"Washington (2)"``,
    ``"Washington (3)"``. Where no string repeats, the names are the strings themselves."""
    names: dict[Span, str] = {}
    taken = {span.text for span in spans}
    seen: dict[str, int] = {}
    for span in sorted(spans, key=lambda s: s.start):
        count = seen[span.text] = seen.get(span.text, 0) + 1
        name = span.text
        while count > 1 and (name == span.text or name in taken):
            name = f"{span.text} ({count})"
            count += 1
        taken.add(name)
        names[span] = name
    return [names[span] for span in spans]


def tag_entities(text: str, spans: list[Span], keys: list[str] | None = None) -> str:
    """``text`` with every span wrapped in ``<ENT>…</ENT>``; spans must not overlap.

    ``keys`` (one per span, as :func:`occurrence_keys` names them) are written inside the tags instead of the
    spans' text, so the marked entities read as the keys a reply answers under."""
    pieces: list[str] = []
    cursor = 0
    names = dict(zip(spans, keys, strict=True)) if keys is not None else {}
    for span in sorted(spans, key=lambda s: s.start):
        if span.start < cursor:
            raise ValueError(f"overlapping spans cannot be tagged: {span} starts before {cursor}")
        pieces.append(escape_tags(text[cursor : span.start]))
        pieces.append(f"{OPEN_TAG}{escape_tags(names.get(span, text[span.start : span.end]))}{CLOSE_TAG}")
        cursor = span.end
    pieces.append(escape_tags(text[cursor:]))
    return "".join(pieces)


def name_occurrences(text: str, spans: list[Span], keys: list[str]) -> str:
    """``text`` with each occurrence whose key is not its own text written as the key (``Washington (2)``),
    so a prompt showing the plain text tells the occurrences apart; unchanged where no string repeats."""
    pieces: list[str] = []
    cursor = 0
    for span, key in sorted(zip(spans, keys, strict=True), key=lambda pair: pair[0].start):
        if key != span.text:
            pieces += [text[cursor : span.start], key]
            cursor = span.end
    return "".join([*pieces, text[cursor:]])
