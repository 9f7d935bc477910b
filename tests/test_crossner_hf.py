"""The hub loader against local fixtures in DFKI-SLT/cross_ner's exact format, built from the real BIO files."""

import sys
from itertools import islice

import datasets
import pytest

from samner_dspy.evals import crossner
from samner_dspy.evals.crossner import (
    HF_DATASET,
    load_crossner,
    load_hf,
    read_bio,
    sentences_from_hf,
)

# The hub's shared ClassLabel: "O", then B-/I- for each of CrossNER's 39 labels in alphabetical order.
LABELS = (
    "academicjournal album algorithm astronomicalobject award band book chemicalcompound chemicalelement conference "
    "country discipline election enzyme event field literarygenre location magazine metrics misc musicalartist "
    "musicalinstrument musicgenre organisation person poem politicalparty politician product programlang protein "
    "researcher scientist song task theory university writer"
).split()
TAG_NAMES = ["O", *(f"{prefix}-{label}" for label in LABELS for prefix in "BI")]
FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "tokens": datasets.Sequence(datasets.Value("string")),
        "ner_tags": datasets.Sequence(datasets.ClassLabel(names=TAG_NAMES)),
    }
)


def hub_fixture(sentences):
    """A split as the hub serves it: string ids, token lists, and tags as ClassLabel integers."""
    index = {name: i for i, name in enumerate(TAG_NAMES)}
    return datasets.Dataset.from_dict(
        {
            "id": [str(i) for i in range(len(sentences))],
            "tokens": [list(s.tokens) for s in sentences],
            "ner_tags": [[index[tag] for tag in s.tags] for s in sentences],
        },
        features=FEATURES,
    )


@pytest.fixture(scope="module")
def music_test(crossner_dir):
    return list(islice(read_bio(crossner_dir / "music" / "test.txt"), 50))


def test_tag_names_match_the_public_class_label():
    assert len(TAG_NAMES) == 79
    assert TAG_NAMES[:5] == ["O", "B-academicjournal", "I-academicjournal", "B-album", "I-album"]
    assert TAG_NAMES[-2:] == ["B-writer", "I-writer"]


def test_hub_rows_become_the_same_sentences_as_the_bio_file(music_test):
    fixture = hub_fixture(music_test)
    assert fixture.features["ner_tags"].feature.names == TAG_NAMES
    assert isinstance(fixture[0]["ner_tags"][0], int)
    sentences = list(sentences_from_hf(fixture))
    assert sentences == music_test
    assert sum(len(s.entities) for s in sentences) > 50
    assert {e.label for s in sentences for e in s.entities} >= {"musical artist", "album"}


def test_plain_rows_need_tag_names(music_test):
    rows = [{"tokens": list(s.tokens), "ner_tags": [TAG_NAMES.index(t) for t in s.tags]} for s in music_test[:5]]
    assert list(sentences_from_hf(rows, tag_names=TAG_NAMES)) == music_test[:5]
    with pytest.raises(ValueError, match="tag_names"):
        list(sentences_from_hf(rows))


def test_the_on_disk_format_round_trips(music_test, tmp_path):
    hub_fixture(music_test).save_to_disk(str(tmp_path))
    reloaded = datasets.load_from_disk(str(tmp_path))
    assert reloaded.features == FEATURES
    assert list(sentences_from_hf(reloaded)) == music_test


def test_load_hf_asks_the_hub_for_the_domain_config_and_split(music_test, monkeypatch):
    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return hub_fixture(music_test)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert load_hf("music", "dev") == music_test
    assert load_crossner("music") == music_test
    assert calls == [
        (("DFKI-SLT/cross_ner", "music"), {"split": "validation"}),
        ((HF_DATASET, "music"), {"split": "test"}),
    ]
    with pytest.raises(ValueError, match="unknown CrossNER split 'eval'"):
        load_hf("music", "eval")
    with pytest.raises(ValueError, match="unknown CrossNER domain 'medicine'"):
        load_crossner("medicine")
    assert len(calls) == 2


def test_load_hf_names_the_extra_when_datasets_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match=r"pip install 'samner-dspy\[eval\]'"):
        load_hf("music")


def test_load_crossner_reads_the_local_files(crossner_dir, music_test):
    assert load_crossner("music", "test", data_dir=crossner_dir)[:50] == music_test
    dev = load_crossner("ai", "dev", data_dir=str(crossner_dir))
    assert dev == load_crossner("ai", "validation", data_dir=crossner_dir)
    assert dev == list(read_bio(crossner_dir / "ai" / "dev.txt"))
    with pytest.raises(FileNotFoundError, match="'medicine'") as missing:
        load_crossner("medicine", data_dir=crossner_dir)
    assert str(crossner_dir / "medicine" / "test.txt") in str(missing.value)
    with pytest.raises(ValueError, match="unknown CrossNER split 'eval'"):
        load_crossner("music", "eval", data_dir=crossner_dir)


def test_module_exposes_the_public_dataset_id():
    assert crossner.HF_DATASET == "DFKI-SLT/cross_ner"
    assert crossner.HF_CONFIGS == ("ai", "literature", "music", "politics", "science", "conll2003")


def test_load_hf_falls_back_to_the_parquet_conversion_of_a_script_dataset(monkeypatch, music_test):
    import datasets

    from samner_dspy.evals.crossner import load_hf

    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append(kwargs.get("revision"))
        if kwargs.get("revision") is None:
            raise RuntimeError("Dataset scripts are no longer supported, but found cross_ner.py")
        return hub_fixture(music_test)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert load_hf("music", "test") == music_test
    assert calls == [None, "refs/convert/parquet"]
