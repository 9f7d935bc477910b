"""Labelled files in every accepted layout read into the same sentences, for evaluation and training alike."""

from __future__ import annotations

import json

import pytest

from samner_dspy.formats.labelled import bio_layout, guess_format, read_bio_file, read_gliner_file, read_labelled

TOKENS = ["Ada", "Lovelace", "met", "Charles", "Babbage", "in", "London", "."]
TAGS = ["B-person", "I-person", "O", "B-person", "I-person", "O", "B-city", "O"]
EXPECTED = [("Ada Lovelace", "person", 0, 12), ("Charles Babbage", "person", 17, 32), ("London", "city", 36, 42)]


def gold(sentence):
    return [(e.text, e.label, e.start, e.end) for e in sentence.entities]


def write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("layout", "line"),
    [
        ("token-first", "{token}\t{tag}"),
        ("tag-first", "{tag}\t{token}"),  # MIT Movie and Restaurant
        ("token-first", "{token} NNP B-NP {tag}"),  # CoNLL's four columns, space-separated
    ],
)
def test_token_tag_files_in_either_order_give_the_same_sentence(tmp_path, layout, line):
    lines = ["-DOCSTART-\tO", ""] + [line.format(token=t, tag=g) for t, g in zip(TOKENS, TAGS, strict=True)]
    path = write(tmp_path / "data.txt", [*lines, "", line.format(token="Hi", tag="O")])
    assert bio_layout(path) == layout
    first, second = list(read_bio_file(path))
    assert first.text == "Ada Lovelace met Charles Babbage in London ." and gold(first) == EXPECTED
    assert (second.text, second.entities) == ("Hi", ())


def test_a_token_that_looks_like_a_tag_does_not_flip_the_layout(tmp_path):
    path = write(tmp_path / "data.txt", ["O\tO", "Ada\tB-person", "O\tO"])  # the letter O as a token
    assert bio_layout(path) == "token-first"
    assert gold(next(read_bio_file(path))) == [("Ada", "person", 2, 5)]


def test_gliner_json_spans_are_inclusive_token_indices(tmp_path):
    records = [{"tokenized_text": TOKENS, "ner": [[0, 1, "person"], [3, 4, "person"], [6, 6, "city"]]}]
    path = tmp_path / "train.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    assert guess_format(path) == "gliner"
    assert [gold(s) for s in read_labelled(path)] == [EXPECTED]


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ({"tokenized_text": []}, "a JSON list"),
        ([{"tokenized_text": "Ada"}], "'tokenized_text', a list of strings"),
        ([{"tokenized_text": ["Ada"], "ner": [[0, 1, "person"]]}], "outside the 1 tokens"),
        ([{"tokenized_text": ["Ada", "B"], "ner": [[0, 1, "person"], [1, 1, "x"]]}], "overlaps another"),
        ([{"tokenized_text": ["Ada"], "ner": [[0, "person"]]}], "must be [first token, last token, label]"),
    ],
)
def test_bad_gliner_records_are_refused_with_the_problem_named(tmp_path, records, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        list(read_gliner_file(path))


def test_formats_are_guessed_from_the_extension_and_a_missing_file_is_named(tmp_path):
    assert [guess_format(n) for n in ("a.jsonl", "a.json", "a.spacy", "a.txt", "a.conll")] == [
        "jsonl",
        "gliner",
        "docbin",
        "bio",
        "bio",
    ]
    with pytest.raises(FileNotFoundError, match=r"missing\.txt"):
        read_labelled(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="unknown data format 'xml'"):
        read_labelled(write(tmp_path / "a.txt", ["Ada\tO"]), "xml")  # type: ignore[arg-type]
