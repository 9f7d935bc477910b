"""Any labelled data for ``samner eval``: BIO/CoNLL files, JSON Lines with character spans, GLiNER's JSON, spaCy
DocBin, read by :mod:`samner_dspy.formats.labelled` into the sentences CrossNER gives, so the runner, resume and report
are the same.
Gold labels are matched against the schema (case and spacing repaired); a label the schema lacks is an error,
since the program could never predict it and every such mention would count as a silent miss.
"""

from __future__ import annotations

from pathlib import Path

from samner_dspy.formats.labelled import DATA_FORMATS, DataFormat, GoldEntity, Sentence, guess_format, read_labelled
from samner_dspy.schema import Schema

__all__ = ["DATA_FORMATS", "DataFormat", "guess_format", "load_labelled"]


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
    return [_matched(s, schema, f"{path}, sentence {n}") for n, s in enumerate(read_labelled(path, data_format))]
