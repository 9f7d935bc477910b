"""CrossNER's BIO files read into sentences with text and character-offset gold entities."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from samner_dspy.schema import crossner_label_name


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


def _sentence(tokens: list[str], tags: list[str]) -> Sentence:
    """Join tokens with single spaces and turn BIO runs into natural-language-labelled character spans."""
    starts, cursor = [], 0
    for token in tokens:
        starts.append(cursor)
        cursor += len(token) + 1
    text = " ".join(tokens)
    entities: list[GoldEntity] = []
    begin: int | None = None
    label = ""
    for index, tag in enumerate([*tags, "O"]):
        inside = tag.startswith("I-") and begin is not None and tag[2:] == label
        if begin is not None and not inside:
            end = starts[index - 1] + len(tokens[index - 1])
            entities.append(GoldEntity(text[starts[begin] : end], crossner_label_name(label), starts[begin], end))
            begin = None
        if tag.startswith(("B-", "I-")) and not inside:
            begin, label = index, tag[2:]
    return Sentence(tuple(tokens), tuple(tags), text, tuple(entities))


def read_bio(path: str | Path) -> Iterator[Sentence]:
    """Sentences of a CrossNER file (``token<TAB>tag`` lines, blank lines between sentences)."""
    tokens: list[str] = []
    tags: list[str] = []
    with Path(path).open(encoding="utf-8") as handle:
        for line in handle:
            line = line.rstrip("\n")
            if not line.strip():
                if tokens:
                    yield _sentence(tokens, tags)
                tokens, tags = [], []
                continue
            token, _, tag = line.rpartition("\t")
            if not token:
                token, _, tag = line.rpartition(" ")
            tokens.append(token)
            tags.append(tag.strip() or "O")
    if tokens:
        yield _sentence(tokens, tags)
