"""Labelled text read from the common NER file formats into one shape: a sentence with character-offset gold.

Evaluation (``samner eval --data-file``) and training-data building (``samner build``) both read through here,
so a file means the same thing to both:

- BIO/CoNLL: a token and its tag per line, blank lines between sentences, ``-DOCSTART-`` skipped. The token is
  the first column and the tag the last (CoNLL's extra columns in between are ignored); MIT Movie and
  Restaurant write the tag first, which :func:`bio_layout` detects from the file itself.
- JSON Lines: ``{"text", "entities": [{"start", "end", "label"}]}`` (or ``[start, end, label]``, or doccano's
  ``label`` field), character offsets, end exclusive.
- GLiNER's training JSON: a list of ``{"tokenized_text": [...], "ner": [[first, last, label], ...]}``, token
  indices inclusive.
- spaCy DocBin (the optional ``spacy`` extra).
Tokens are joined with single spaces, so a sentence's text is reproducible from its tokens.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from samner_dspy.errors import DataFileError
from samner_dspy.formats.exports import bio_tags, entities_from_bio
from samner_dspy.formats.records import json_lines
from samner_dspy.types import Entity

DataFormat = Literal["bio", "jsonl", "gliner", "docbin"]
DATA_FORMATS: tuple[str, ...] = ("bio", "jsonl", "gliner", "docbin")
BioLayout = Literal["token-first", "tag-first"]
_TAG = re.compile(r"^(?:O|[BIES]-\S.*)$")
_SNIFF_LINES = 200


@dataclass(frozen=True)
class GoldEntity:
    text: str
    label: str
    start: int
    end: int


@dataclass(frozen=True)
class Sentence:
    """One sentence: its tokens and tags as in the file, the text they join into, and gold entities."""

    tokens: tuple[str, ...]
    tags: tuple[str, ...]
    text: str
    entities: tuple[GoldEntity, ...]


def bio_sentence(tokens: list[str], tags: list[str], label_name: Callable[[str], str] = str) -> Sentence:
    """Join tokens with single spaces and turn BIO runs into character spans labelled ``label_name(tag)``."""
    offsets, cursor = [], 0
    for token in tokens:
        offsets.append((cursor, cursor + len(token)))
        cursor += len(token) + 1
    text = " ".join(tokens)
    entities = [GoldEntity(e.text, label_name(e.label), e.start, e.end) for e in entities_from_bio(text, offsets, tags)]
    return Sentence(tuple(tokens), tuple(tags), text, tuple(entities))


def _columns(line: str) -> list[str]:
    return line.rstrip("\n").split("\t") if "\t" in line else line.split()


def bio_layout(path: str | Path) -> BioLayout:
    """``tag-first`` when the first column of the file's opening lines is always a tag and the last is not
    (MIT's layout), else ``token-first`` (CoNLL's)."""
    first_tags = last_tags = lines = 0
    with Path(path).open(encoding="utf-8") as handle:
        for line in handle:
            columns = _columns(line)
            if len(columns) < 2 or columns[0] == "-DOCSTART-":
                continue
            lines += 1
            first_tags += bool(_TAG.match(columns[0]))
            last_tags += bool(_TAG.match(columns[-1].strip()))
            if lines >= _SNIFF_LINES:
                break
    return "tag-first" if lines and first_tags == lines and last_tags < lines else "token-first"


def read_bio_file(
    path: str | Path, label_name: Callable[[str], str] = str, layout: BioLayout | None = None
) -> Iterator[Sentence]:
    """Sentences of a BIO/CoNLL file, labels named ``label_name(tag)``; ``layout`` is detected when not given."""
    if layout not in (None, "token-first", "tag-first"):
        raise ValueError(f"layout must be 'token-first' or 'tag-first', got {layout!r}")
    tag_first = (layout or bio_layout(path)) == "tag-first"
    tokens: list[str] = []
    tags: list[str] = []
    with Path(path).open(encoding="utf-8") as handle:
        for line in [*handle, "\n"]:
            columns = _columns(line)
            if not line.strip() or columns[0] == "-DOCSTART-":
                if tokens:
                    yield bio_sentence(tokens, tags, label_name)
                tokens, tags = [], []
                continue
            if len(columns) == 1:
                tokens.append(columns[0])
                tags.append("O")
                continue
            token, tag = (columns[-1], columns[0]) if tag_first else (columns[0], columns[-1])
            tokens.append(token)
            tags.append(tag.strip() or "O")


def _spans(record: dict, where: str) -> list[tuple[int, int, str]]:
    raw = record.get("entities", record.get("spans", record.get("label", [])))
    spans = []
    for span in raw:
        if isinstance(span, dict):
            spans.append((int(span["start"]), int(span["end"]), str(span["label"])))
        elif isinstance(span, list | tuple) and len(span) == 3:
            spans.append((int(span[0]), int(span[1]), str(span[2])))
        else:
            raise DataFileError(f"{where}: a span must be {{start, end, label}} or [start, end, label], got {span!r}")
    return spans


def span_sentence(text: str, spans: list[tuple[int, int, str]], where: str) -> Sentence:
    """A Sentence of ``text`` with gold spans; tokens and tags follow :func:`samner_dspy.formats.exports.bio_tags`."""
    for start, end, _ in spans:
        if not 0 <= start < end <= len(text):
            raise DataFileError(f"{where}: span [{start}, {end}) is outside the text ({len(text)} characters)")
    entities = [Entity(text[s:e], label, s, e) for s, e, label in spans]
    offsets, tags, _ = bio_tags(text, entities)
    gold = tuple(GoldEntity(e.text, e.label, e.start, e.end) for e in sorted(entities, key=lambda e: e.start))
    return Sentence(tuple(text[s:e] for s, e in offsets), tuple(tags), text, gold)


def read_jsonl_file(path: str | Path) -> Iterator[Sentence]:
    """One object per line: ``text`` and its spans (see the module's docstring). A ``samner annotate -o``
    output, corrected by hand, is such a file."""
    with Path(path).open(encoding="utf-8") as handle:
        for where, record in json_lines(handle, path, need_text=True):
            yield span_sentence(record["text"], _spans(record, where), where)


def read_gliner_file(path: str | Path) -> Iterator[Sentence]:
    """GLiNER's training JSON: ``tokenized_text`` and ``ner`` spans of inclusive token indices."""
    try:
        records = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataFileError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(records, list):
        raise DataFileError(f"{path}: GLiNER's training data is a JSON list of records")
    for number, record in enumerate(records):
        where = f"{path}, record {number}"
        tokens = record.get("tokenized_text") if isinstance(record, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise DataFileError(f"{where}: expected 'tokenized_text', a list of strings")
        tags = ["O"] * len(tokens)
        for span in record.get("ner") or []:
            if not (isinstance(span, list | tuple) and len(span) == 3):
                raise DataFileError(f"{where}: an 'ner' span must be [first token, last token, label], got {span!r}")
            first, last, label = int(span[0]), int(span[1]), str(span[2])
            if not 0 <= first <= last < len(tokens):
                raise DataFileError(f"{where}: span {span!r} is outside the {len(tokens)} tokens")
            if any(tag != "O" for tag in tags[first : last + 1]):
                raise DataFileError(f"{where}: span {span!r} overlaps another")
            tags[first : last + 1] = [f"B-{label}"] + [f"I-{label}"] * (last - first)
        yield bio_sentence(tokens, tags)


def read_docbin_file(path: str | Path) -> Iterator[Sentence]:
    """The Docs of a spaCy ``.spacy`` file; gold is ``doc.ents`` (spaCy is the optional ``spacy`` extra)."""
    from samner_dspy.formats.spacy_docs import read_docbin

    for doc in read_docbin(path):
        spans = [(span.start_char, span.end_char, span.label_) for span in doc.ents]
        yield span_sentence(doc.text, spans, f"{path}, doc {doc._.samner_index or 0}")


def guess_format(path: str | Path) -> DataFormat:
    """``.jsonl`` is JSON Lines, ``.json`` GLiNER's list, ``.spacy``/``.docbin`` a DocBin, anything else BIO."""
    suffix = Path(path).suffix.lower()
    formats: dict[str, DataFormat] = {".jsonl": "jsonl", ".json": "gliner", ".spacy": "docbin", ".docbin": "docbin"}
    return formats.get(suffix, "bio")


def read_labelled(path: str | Path, data_format: DataFormat | None = None) -> Iterator[Sentence]:
    """Every sentence of a labelled file, labels as the file spells them; the format is guessed when not given."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"labelled data file {path} does not exist")
    readers: dict[str, Callable[[str | Path], Iterator[Sentence]]] = {
        "bio": read_bio_file,
        "jsonl": read_jsonl_file,
        "gliner": read_gliner_file,
        "docbin": read_docbin_file,
    }
    data_format = data_format or guess_format(path)
    if data_format not in readers:
        raise ValueError(f"unknown data format {data_format!r}; choose one of {', '.join(DATA_FORMATS)}")
    return readers[data_format](path)
