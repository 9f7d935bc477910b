"""Results as spaCy ``Doc`` objects and ``DocBin`` files, for spaCy pipelines, training and displaCy.

spaCy is the optional ``spacy`` extra and is imported here only. Entities become ``doc.ents`` through
``doc.char_span(start, end, label, alignment_mode=...)``; spaCy's tokens need not match the entity offsets:

- ``expand`` (default) widens a span to the tokens it touches, ``contract`` narrows it to the tokens it
  covers whole, ``strict`` keeps only spans that already fall on token boundaries;
- a span that cannot be made (``strict`` misalignment, nothing left after ``contract``) or that overlaps one
  already placed (earlier start, then longer, wins) is left out and listed in ``doc._.samner_left_out``.

Extension attributes: ``span._.samner_score``, ``span._.samner_archetype``, ``span._.samner_sources``,
``span._.samner_trace`` (the text's trace, read from ``doc._.samner_trace``) and ``doc._.samner_index``.
``DocBin(store_user_data=True)`` keeps them, so :func:`read_docbin` gives the same entities and scores back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from samner_dspy.tracing import Trace
from samner_dspy.types import Document, Entity

Alignment = Literal["expand", "contract", "strict"]
ALIGNMENTS: tuple[str, ...] = ("expand", "contract", "strict")


def _spacy() -> Any:
    try:
        import spacy
    except ImportError:
        raise ImportError("spaCy export needs the 'spacy' package: pip install 'samner-dspy[spacy]'") from None
    return spacy


def _get_trace(doc: Any) -> dict[str, Any] | None:
    return json.loads(doc._.samner_trace_json) if doc._.samner_trace_json else None


def _set_trace(doc: Any, trace: dict[str, Any] | None) -> None:
    doc._.samner_trace_json = None if trace is None else json.dumps(trace, ensure_ascii=False)


def register_extensions() -> None:
    """Declare the ``samner_*`` extension attributes (idempotent)."""
    from spacy.tokens import Doc, Span

    for name in ("samner_score", "samner_archetype", "samner_sources"):
        if not Span.has_extension(name):
            Span.set_extension(name, default=None)
    if not Span.has_extension("samner_trace"):
        Span.set_extension("samner_trace", getter=lambda span: span.doc._.samner_trace)
    for name in ("samner_trace_json", "samner_index", "samner_left_out"):
        if not Doc.has_extension(name):
            Doc.set_extension(name, default=None)
    if not Doc.has_extension("samner_trace"):
        # Kept as JSON text: DocBin's msgpack would turn the trace's lists into tuples.
        Doc.set_extension("samner_trace", getter=_get_trace, setter=_set_trace)


def blank_nlp(lang: str = "en") -> Any:
    """A tokenizer-only pipeline: no model download is needed to build Docs."""
    return _spacy().blank(lang)


def to_doc(item: Document, nlp: Any = None, alignment: Alignment = "expand") -> Any:
    """A ``Doc`` of ``item.text`` whose ``ents`` are the entities, aligned under ``alignment`` (see above)."""
    if alignment not in ALIGNMENTS:
        raise ValueError(f"unknown alignment {alignment!r}; choose one of {', '.join(ALIGNMENTS)}")
    nlp = nlp or blank_nlp()
    register_extensions()
    doc = nlp.make_doc(item.text)
    spans, taken, left_out = [], set(), []
    for entity in sorted(item.entities, key=lambda e: (e.start, -(e.end - e.start))):
        span = doc.char_span(entity.start, entity.end, label=entity.label, alignment_mode=alignment)
        tokens = set(range(span.start, span.end)) if span is not None else set()
        if not tokens or tokens & taken:
            left_out.append(entity.to_dict())
            continue
        taken |= tokens
        span._.samner_score = entity.score
        span._.samner_archetype = entity.archetype
        span._.samner_sources = list(entity.sources)
        spans.append(span)
    doc.ents = spans
    trace = item.get("trace")
    doc._.samner_trace = trace.to_dict() if trace is not None else None
    doc._.samner_index = item.index
    doc._.samner_left_out = left_out
    return doc


def from_doc(doc: Any) -> Document:
    """The entities of ``doc.ents`` with their ``samner_*`` attributes (offsets as spaCy aligned them)."""
    register_extensions()
    entities = [
        Entity(
            span.text,
            span.label_,
            span.start_char,
            span.end_char,
            span._.samner_archetype,
            tuple(span._.samner_sources or ()),
            span._.samner_score,
        )
        for span in doc.ents
    ]
    trace = doc._.samner_trace
    key = {"index": doc._.samner_index or 0}
    return Document(text=doc.text, entities=entities, trace=Trace.from_dict(trace) if trace else None, key=key)


def write_docbin(items: Iterable[Document], path: str | Path, nlp: Any = None, alignment: Alignment = "expand") -> int:
    """Write a ``.spacy`` file (``DocBin`` with user data, so scores and traces survive); returns how many."""
    from spacy.tokens import DocBin

    nlp = nlp or blank_nlp()
    docbin = DocBin(store_user_data=True)
    count = 0
    for item in items:
        docbin.add(to_doc(item, nlp, alignment))
        count += 1
    docbin.to_disk(path)
    return count


def read_docbin(path: str | Path, nlp: Any = None) -> Iterator[Any]:
    """The Docs of a ``.spacy`` file, with the ``samner_*`` attributes where it was written here."""
    from spacy.tokens import DocBin

    register_extensions()
    nlp = nlp or blank_nlp()
    yield from DocBin().from_disk(path).get_docs(nlp.vocab)
