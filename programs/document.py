"""Long documents: annotate overlapping windows, map offsets back, merge what the overlaps found twice."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

import dspy

from samner_dspy.grounding import resolve_overlaps
from samner_dspy.modes import DEFAULT_MAX_CHARS, DEFAULT_OVERLAP
from samner_dspy.programs.batch import ordered_map
from samner_dspy.tracing import Trace, WindowTrace, window_cores
from samner_dspy.types import Document, Entity, Span

_SENTENCE_END = re.compile(r"[.!?。！？]\s+|\n\s*")


@dataclass(frozen=True)
class Window:
    start: int
    end: int
    core_start: int
    core_end: int
    """Entities are kept from the window whose core holds their midpoint: the cores tile the document."""


def _cut(text: str, start: int, limit: int) -> int:
    """Where a window starting at ``start`` should end: a sentence end, else a space, else ``limit``."""
    if limit >= len(text):
        return len(text)
    floor = start + (limit - start) // 2
    ends = [m.end() for m in _SENTENCE_END.finditer(text, floor, limit)]
    if ends:
        return ends[-1]
    space = text.rfind(" ", floor, limit)
    return space + 1 if space > start else limit


def windows(text: str, max_chars: int, overlap: int) -> list[Window]:
    """Cover ``text`` with windows of at most ``max_chars`` that overlap by about ``overlap`` characters."""
    if max_chars < 1 or not 0 <= overlap < max_chars:
        raise ValueError(f"need max_chars >= 1 and 0 <= overlap < max_chars, got {max_chars} and {overlap}")
    bounds: list[tuple[int, int]] = []
    start = 0
    while True:
        end = _cut(text, start, start + max_chars)
        bounds.append((start, end))
        if end >= len(text):
            break
        restart = max(end - overlap, start + 1)
        space = text.find(" ", restart, end)
        start = space + 1 if overlap and space != -1 else restart
    cores = window_cores(bounds, len(text))
    return [Window(start, end, *core) for (start, end), core in zip(bounds, cores, strict=True)]


def merge_window_entities(text: str, found: list[tuple[Window, list[Entity]]]) -> list[Entity]:
    """Shift each window's entities into document offsets, keep those centred in the window's core, and
    resolve any remaining overlap in favour of the longer mention."""
    shifted: dict[Span, Entity] = {}
    for window, entities in found:
        for entity in entities:
            start, end = entity.start + window.start, entity.end + window.start
            if not window.core_start <= (start + end) // 2 < window.core_end:
                continue
            span = Span(start, end, text[start:end])
            shifted.setdefault(span, replace(entity, text=span.text, start=start, end=end))
    kept, _ = resolve_overlaps(list(shifted))
    return [shifted[span] for span in kept]


class Deferred(BaseException):
    """A stage of this text is answered later (the Ray steps and request rounds): the text's other windows go
    on, then the whole text is deferred. A BaseException, so no stage or batch takes it for a failure."""


def annotate_document(
    annotate: Callable[[str], dspy.Prediction],
    text: str,
    max_chars: int = DEFAULT_MAX_CHARS,
    overlap: int = DEFAULT_OVERLAP,
    concurrency: int = 1,
) -> dspy.Prediction:
    """Run ``annotate`` on every window; entities come back in document offsets, and the one trace holds each
    window's (``trace.windows``). A window that fails is reported there, with its error, not silently missing."""
    parts = [w for w in windows(text, max_chars, overlap) if text[w.start : w.end].strip()]
    deferred = []

    def run(part: str) -> dspy.Prediction | None:
        try:
            return annotate(part)
        except Deferred:
            deferred.append(part)
            return None

    outcomes = list(ordered_map(run, (text[w.start : w.end] for w in parts), concurrency))
    if deferred:
        raise Deferred
    found = [(window, item.prediction.entities) for window, item in zip(parts, outcomes, strict=True) if item.ok]
    trace = Trace(
        windows=[
            WindowTrace(w.start, w.end, item.prediction.trace if item.ok else None, item.error)
            for w, item in zip(parts, outcomes, strict=True)
        ]
    )
    return Document(text=text, entities=merge_window_entities(text, found), trace=trace)
