"""Any labelled data for ``samner eval``: BIO/CoNLL files, JSON Lines with character spans, spaCy DocBin.

Each reader gives the :class:`Sentence` objects CrossNER gives, so the runner, resume and report are the same.
Gold labels are matched against the schema (case and spacing repaired); a label the schema lacks is an error,
since the program could never predict it and every such mention would count as a silent miss.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from samner_dspy.evals.crossner import GoldEntity, Sentence, bio_sentence
from samner_dspy.exports import bio_tags
from samner_dspy.schema import Schema
from samner_dspy.types import Entity

DataFormat = Literal["bio", "jsonl", "docbin"]
DATA_FORMATS: tuple[str, ...] = ("bio", "jsonl", "docbin")


def guess_format(path: str | Path) -> DataFormat:
    """``.jsonl`` is JSON Lines, ``.spacy``/``.docbin`` a DocBin, anything else BIO."""
    suffix = Path(path).suffix.lower()
    return "jsonl" if suffix == ".jsonl" else "docbin" if suffix in (".spacy", ".docbin") else "bio"


def read_bio_file(path: str | Path) -> Iterator[Sentence]:
    """CoNLL-style BIO: the token in the first column, the tag in the last (tab- or space-separated), blank
    lines between sentences, ``-DOCSTART-`` lines skipped. Labels are kept as the tags spell them."""
    tokens: list[str] = []
    tags: list[str] = []
    with Path(path).open(encoding="utf-8") as handle:
        for line in [*handle, "\n"]:
            columns = line.rstrip("\n").split("\t") if "\t" in line else line.split()
            if not line.strip() or columns[0] == "-DOCSTART-":
                if tokens:
                    yield bio_sentence(tokens, tags, str)
                tokens, tags = [], []
                continue
            tokens.append(columns[0])
            tags.append(columns[-1].strip() if len(columns) > 1 else "O")


def _spans(record: dict, where: str) -> list[tuple[int, int, str]]:
    raw = record.get("entities", record.get("spans", record.get("label", [])))
    spans = []
    for span in raw:
        if isinstance(span, dict):
            spans.append((int(span["start"]), int(span["end"]), str(span["label"])))
        elif isinstance(span, list | tuple) and len(span) == 3:
            spans.append((int(span[0]), int(span[1]), str(span[2])))
        else:
            raise ValueError(f"{where}: a span must be {{start, end, label}} or [start, end, label], got {span!r}")
    return spans


def _sentence(text: str, spans: list[tuple[int, int, str]], where: str) -> Sentence:
    """A Sentence of ``text`` with gold spans; tokens and tags follow :func:`samner_dspy.exports.bio_tags`."""
    for start, end, _ in spans:
        if not 0 <= start < end <= len(text):
            raise ValueError(f"{where}: span [{start}, {end}) is outside the text ({len(text)} characters)")
    entities = [Entity(text[s:e], label, s, e) for s, e, label in spans]
    offsets, tags, _ = bio_tags(text, entities)
    gold = tuple(GoldEntity(e.text, e.label, e.start, e.end) for e in sorted(entities, key=lambda e: e.start))
    return Sentence(tuple(text[s:e] for s, e in offsets), tuple(tags), text, gold)


def read_jsonl_file(path: str | Path) -> Iterator[Sentence]:
    """One object per line: ``text`` and ``entities`` (or ``spans``, or doccano's ``label``), each span
    ``{"start", "end", "label"}`` or ``[start, end, label]`` in character offsets (end exclusive). A
    ``samner annotate -o`` output, corrected by hand, is such a file."""
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not valid JSON ({exc})") from exc
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise ValueError(f"{where}: expected an object with a string 'text' field")
            yield _sentence(record["text"], _spans(record, where), where)


def read_docbin_file(path: str | Path) -> Iterator[Sentence]:
    """The Docs of a spaCy ``.spacy`` file; gold is ``doc.ents`` (spaCy is the optional ``spacy`` extra)."""
    from samner_dspy.spacy_docs import read_docbin

    for doc in read_docbin(path):
        spans = [(span.start_char, span.end_char, span.label_) for span in doc.ents]
        yield _sentence(doc.text, spans, f"{path}, doc {doc._.samner_index or 0}")


def _matched(sentence: Sentence, schema: Schema, where: str) -> Sentence:
    entities = []
    for entity in sentence.entities:
        label = schema.match_label(entity.label)
        if label is None:
            raise ValueError(
                f"{where}: gold label {entity.label!r} is not in the schema ({', '.join(schema.labels)}); "
                "add it to the schema file, or rename the label in the data"
            )
        entities.append(GoldEntity(entity.text, label, entity.start, entity.end))
    return Sentence(sentence.tokens, sentence.tags, sentence.text, tuple(entities))


def load_labelled(path: str | Path, schema: Schema, data_format: DataFormat | None = None) -> list[Sentence]:
    """Every sentence of a labelled file, gold labels spelled as in ``schema``."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"labelled data file {path} does not exist")
    data_format = data_format or guess_format(path)
    readers = {"bio": read_bio_file, "jsonl": read_jsonl_file, "docbin": read_docbin_file}
    if data_format not in readers:
        raise ValueError(f"unknown data format {data_format!r}; choose one of {', '.join(DATA_FORMATS)}")
    return [_matched(s, schema, f"{path}, sentence {n}") for n, s in enumerate(readers[data_format](path))]
