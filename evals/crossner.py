"""CrossNER read into sentences with text and character-offset gold entities.

Two sources give identical sentences: the original BIO files (a local ``data_dir``) and the Hugging Face hub copy
(``DFKI-SLT/cross_ner``, integer tags with ClassLabel names), so evaluations need no local data to run.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from samner_dspy.formats.labelled import Sentence, bio_sentence, read_bio_file
from samner_dspy.schema import CROSSNER_DOMAINS, crossner_label_name

HF_DATASET = "DFKI-SLT/cross_ner"
# The hub copy also carries CoNLL-2003 under the same tag set.
HF_CONFIGS: tuple[str, ...] = (*CROSSNER_DOMAINS, "conll2003")
# The files call the development split "dev", the hub "validation"; both names are accepted everywhere.
_FILE_SPLITS = {"train": "train", "dev": "dev", "validation": "dev", "test": "test"}
_HF_SPLITS = {"train": "train", "dev": "validation", "validation": "validation", "test": "test"}


def read_bio(path: str | Path) -> Iterator[Sentence]:
    """Sentences of a CrossNER file (``token<TAB>tag`` lines, blank lines between sentences), labels named as the
    schemas name them."""
    return read_bio_file(path, crossner_label_name, layout="token-first")


def _split(split: str, names: Mapping[str, str]) -> str:
    if split not in names:
        raise ValueError(f"unknown CrossNER split {split!r}; choose one of train, dev (or validation), test")
    return names[split]


def sentences_from_hf(
    dataset: Iterable[Mapping[str, Any]], tag_names: Sequence[str] | None = None
) -> Iterator[Sentence]:
    """Sentences of a hub-format split (``tokens`` and integer ``ner_tags``), read like the BIO files.

    The integer tags are named by the split's own ClassLabel (``features["ner_tags"].feature.names``), not a copied
    list, so a re-ordered tag set on the hub cannot silently mislabel entities; plain iterables of dicts pass
    ``tag_names`` instead.
    """
    if tag_names is None:
        features = getattr(dataset, "features", None)
        if features is None or "ner_tags" not in features:
            raise ValueError("a dataset without ner_tags features needs tag_names")
        tag_names = features["ner_tags"].feature.names
    for row in dataset:
        yield bio_sentence(list(row["tokens"]), [tag_names[tag] for tag in row["ner_tags"]], crossner_label_name)


def load_hf(domain: str, split: str = "test", dataset_id: str = HF_DATASET) -> list[Sentence]:
    """One domain's split from the Hugging Face hub; ``datasets`` is imported here, so it stays an optional extra."""
    try:
        import datasets
    except ImportError:
        raise ImportError(
            "loading CrossNER from the Hugging Face hub needs the 'datasets' package: pip install 'samner-dspy[eval]'"
        ) from None
    split = _split(split, _HF_SPLITS)
    try:
        dataset = datasets.load_dataset(dataset_id, domain, split=split)
    except RuntimeError as exc:
        if "script" not in str(exc).lower():
            raise
        # datasets >= 4 runs no loading scripts; the hub keeps a Parquet conversion of every such dataset.
        dataset = datasets.load_dataset(dataset_id, domain, split=split, revision="refs/convert/parquet")
    return list(sentences_from_hf(dataset))


def load_crossner(domain: str, split: str = "test", data_dir: str | Path | None = None) -> list[Sentence]:
    """One domain's split: from ``data_dir/<domain>/<split>.txt`` when given, else from the hub."""
    if data_dir is None:
        if domain not in HF_CONFIGS:
            raise ValueError(f"unknown CrossNER domain {domain!r}; choose one of {', '.join(HF_CONFIGS)}")
        return load_hf(domain, split)
    path = Path(data_dir) / domain / f"{_split(split, _FILE_SPLITS)}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"no CrossNER file for domain {domain!r}, split {split!r}: {path} does not exist")
    return list(read_bio(path))
