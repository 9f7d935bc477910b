"""Results in the formats other tools read: GLiNER-style dicts, CoNLL BIO, Label Studio pre-annotations.

Every writer here has a reader, so a tool's edits can come back and tests can check a round trip. spaCy
``Doc``/``DocBin`` output lives in :mod:`samner_dspy.formats.spacy_docs` (spaCy is an optional extra).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from samner_dspy.formats.records import read_records
from samner_dspy.types import Document, Entity

TOKEN = re.compile(r"\w+|[^\w\s]")
"""BIO tokens: runs of word characters, and every other non-space character on its own."""
LABEL_STUDIO_FROM = "label"
LABEL_STUDIO_TO = "text"


def read_results(path: str | Path) -> Iterator[Document]:
    """The documents of an annotate output (JSON Lines records, :meth:`Document.to_dict`); torn lines skipped."""
    for number, record in enumerate(read_records(path)):
        yield Document.from_dict(record, number)


# --- GLiNER-style dicts ------------------------------------------------------------------------------------


def to_gliner(item: Document) -> list[dict[str, Any]]:
    """What ``GLiNER.predict_entities`` returns: ``text``, ``label``, ``start``, ``end``, ``score``."""
    return [{"text": e.text, "label": e.label, "start": e.start, "end": e.end, "score": e.score} for e in item.entities]


def from_gliner(text: str, spans: Iterable[dict[str, Any]], index: int = 0) -> Document:
    return Document(text=text, entities=[Entity.from_dict(span) for span in spans], trace=None, key={"index": index})


# --- CoNLL BIO ---------------------------------------------------------------------------------------------


def tokenize(text: str) -> list[tuple[int, int]]:
    """Token offsets of ``text`` under :data:`TOKEN`."""
    return [match.span() for match in TOKEN.finditer(text)]


def bio_tags(text: str, entities: Iterable[Entity]) -> tuple[list[tuple[int, int]], list[str], list[Entity]]:
    """IOB2 tags over :func:`tokenize`, and the entities the tags could not hold.

    Policy for a span that cuts a token: it takes every token it touches (``Paris`` inside ``Parisian`` tags
    the whole token). An entity whose tokens another, earlier-starting (then longer) entity already holds, or
    that touches no token, is left out and returned so the caller can report it.
    """
    tokens = tokenize(text)
    tags = ["O"] * len(tokens)
    left_out: list[Entity] = []
    for entity in sorted(entities, key=lambda e: (e.start, -(e.end - e.start))):
        covered = [i for i, (start, end) in enumerate(tokens) if start < entity.end and end > entity.start]
        if not covered or any(tags[i] != "O" for i in covered):
            left_out.append(entity)
            continue
        tags[covered[0]] = f"B-{entity.label}"
        for i in covered[1:]:
            tags[i] = f"I-{entity.label}"
    return tokens, tags, left_out


def entities_from_bio(text: str, tokens: list[tuple[int, int]], tags: list[str]) -> list[Entity]:
    """Entities of IOB2 ``tags`` over token offsets of ``text`` (an ``I-`` without its ``B-`` starts one)."""
    entities: list[Entity] = []
    begin: int | None = None
    label = ""
    for index, tag in enumerate([*tags, "O"]):
        inside = tag.startswith("I-") and begin is not None and tag[2:] == label
        if begin is not None and not inside:
            start, end = tokens[begin][0], tokens[index - 1][1]
            entities.append(Entity(text[start:end], label, start, end))
            begin = None
        if tag.startswith(("B-", "I-")) and not inside:
            begin, label = index, tag[2:]
    return entities


def to_conll(items: Iterable[Document]) -> Iterator[str]:
    """``token<TAB>tag`` lines, a blank line after each text (the CrossNER/CoNLL layout); ``samner eval
    --format bio`` reads it back."""
    for item in items:
        tokens, tags, _ = bio_tags(item.text, item.entities)
        for (start, end), tag in zip(tokens, tags, strict=True):
            yield f"{item.text[start:end]}\t{tag}\n"
        yield "\n"


# --- Label Studio ------------------------------------------------------------------------------------------


def to_label_studio(item: Document, model_version: str = "samner-dspy") -> dict[str, Any]:
    """A Label Studio task with the entities as a pre-annotation for a ``<Labels name="label"
    toName="text">`` over ``<Text name="text" value="$text">``; the prediction's score is the lowest entity's."""
    scores = [e.score for e in item.entities if e.score is not None]
    result = [
        {
            "id": f"e{item.index}-{n}",
            "from_name": LABEL_STUDIO_FROM,
            "to_name": LABEL_STUDIO_TO,
            "type": "labels",
            "value": {"start": e.start, "end": e.end, "text": e.text, "labels": [e.label]},
            **({"score": e.score} if e.score is not None else {}),
            "meta": {"archetype": e.archetype, "sources": list(e.sources), "alignment_status": e.alignment_status},
        }
        for n, e in enumerate(item.entities)
    ]
    prediction = {"model_version": model_version, "result": result, **({"score": min(scores)} if scores else {})}
    return {"data": {"text": item.text, "index": item.index}, "predictions": [prediction]}


def from_label_studio(task: dict[str, Any]) -> Document:
    """A task's first prediction (or, once annotated, its first annotation) as entities."""
    source = (task.get("annotations") or task.get("predictions") or [{}])[0]
    entities = []
    for region in source.get("result") or []:
        if region.get("type") != "labels":
            continue
        value = region["value"]
        meta = region.get("meta") or {}
        entity = Entity(value["text"], value["labels"][0], value["start"], value["end"], meta.get("archetype"))
        entities.append(
            replace(
                entity,
                sources=tuple(meta.get("sources") or ()),
                score=region.get("score"),
                alignment_status=meta.get("alignment_status"),
            )
        )
    data = task["data"]
    return Document(text=data["text"], entities=entities, trace=None, key={"index": int(data.get("index", 0))})
