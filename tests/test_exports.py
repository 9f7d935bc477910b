"""Exports: each format written and read back gives the same entities; misaligned spans follow the policy."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from samner_dspy.formats.exports import (
    bio_tags,
    entities_from_bio,
    from_gliner,
    from_label_studio,
    read_results,
    to_conll,
    to_gliner,
    to_label_studio,
    tokenize,
)
from samner_dspy.tracing import Trace
from samner_dspy.types import Document, Entity
from tests.conftest import require

TEXT = "Zoë Müller (CEO of Acme-Corp) moved to São Paulo."
ENTITIES = (
    Entity("Zoë Müller", "person", 0, 10, "Person", ("anchor", "explorer"), 0.9),
    Entity("Acme-Corp", "organisation", 19, 28, "Organization", ("anchor",), 0.42),
    Entity("São Paulo", "city", 39, 48, "Location", ("explorer",), None),
)


def document(text: str, entities, index: int = 0, trace: Trace | None = None) -> Document:
    return Document(text=text, entities=list(entities), trace=trace, key={"index": index})


ITEM = document(TEXT, ENTITIES, 3, Trace.from_dict({"stages": [{"stage": "anchor"}]}))


def test_fixture_offsets_are_true():
    assert all(TEXT[e.start : e.end] == e.text for e in ENTITIES)


def test_gliner_dicts_round_trip_and_carry_the_score():
    spans = to_gliner(ITEM)
    assert spans[1] == {"text": "Acme-Corp", "label": "organisation", "start": 19, "end": 28, "score": 0.42}
    back = from_gliner(TEXT, spans, 3)
    assert [(e.text, e.label, e.start, e.end, e.score) for e in back.entities] == [
        (e.text, e.label, e.start, e.end, e.score) for e in ENTITIES
    ]


def test_label_studio_tasks_round_trip_through_json():
    task = to_label_studio(ITEM)
    region = task["predictions"][0]["result"][1]
    assert region["from_name"] == "label" and region["to_name"] == "text" and region["type"] == "labels"
    assert region["value"] == {"start": 19, "end": 28, "text": "Acme-Corp", "labels": ["organisation"]}
    assert region["score"] == 0.42 and task["predictions"][0]["score"] == 0.42
    assert "score" not in task["predictions"][0]["result"][2], "an unscored entity has no score"
    back = from_label_studio(json.loads(json.dumps(task)))
    assert back == document(TEXT, ENTITIES, 3)


def test_conll_round_trips_token_aligned_entities():
    tokens, tags, left_out = bio_tags(TEXT, ENTITIES)
    assert left_out == []
    assert [TEXT[s:e] for s, e in tokens][:6] == ["Zoë", "Müller", "(", "CEO", "of", "Acme"]
    assert tags[5:8] == ["B-organisation", "I-organisation", "I-organisation"]  # Acme - Corp
    lines = "".join(to_conll([ITEM, ITEM]))
    assert lines.count("\n\n") == 2 and "Müller\tI-person\n" in lines
    back = entities_from_bio(TEXT, tokens, tags)
    assert [(e.text, e.label, e.start, e.end) for e in back] == [(e.text, e.label, e.start, e.end) for e in ENTITIES]


def test_a_span_that_cuts_a_token_takes_the_whole_token_and_overlaps_are_left_out():
    text = "Parisians met in Paris."
    cut = Entity("Paris", "city", 0, 5)
    inner = Entity("aris", "city", 18, 22)
    overlapping = Entity("Paris", "city", 17, 22)
    tokens, tags, left_out = bio_tags(text, [cut, inner, overlapping])
    assert [e.text for e in entities_from_bio(text, tokens, tags)] == ["Parisians", "Paris"]
    assert left_out == [inner], "the longer span starting first wins the token"


def test_annotate_output_is_read_back_and_a_torn_line_skipped(tmp_path):
    path = tmp_path / "out.jsonl"
    record = {"index": 3, "text": TEXT, "entities": [e.to_dict() for e in ENTITIES], "trace": ITEM.trace.to_dict()}
    path.write_text(json.dumps(record) + "\n" + '{"index": 4, "te', encoding="utf-8")
    (item,) = read_results(path)
    assert item == ITEM and item.trace == ITEM.trace


@pytest.fixture(scope="module")
def spacy_docs():
    require(importlib.util.find_spec("spacy") is not None, "spaCy (the 'spacy' extra)")
    from samner_dspy.formats import spacy_docs

    return spacy_docs


def test_spacy_docbin_round_trips_entities_scores_and_traces(spacy_docs, tmp_path):
    path = tmp_path / "out.spacy"
    assert spacy_docs.write_docbin([ITEM], path) == 1
    (doc,) = spacy_docs.read_docbin(path)
    assert [(e.text, e.label_) for e in doc.ents] == [
        ("Zoë Müller", "person"),
        ("Acme-Corp", "organisation"),
        ("São Paulo", "city"),
    ]
    assert doc.ents[1]._.samner_score == 0.42 and tuple(doc.ents[1]._.samner_sources) == ("anchor",)
    assert doc.ents[0]._.samner_trace == ITEM.trace.to_dict()
    back = spacy_docs.from_doc(doc)
    assert back == ITEM and back.trace == ITEM.trace


def test_spacy_alignment_modes_follow_the_documented_policy(spacy_docs):
    text = "Parisians met in Paris."
    item = document(text, (Entity("Paris", "city", 0, 5), Entity("Paris", "city", 17, 22)))
    expanded = spacy_docs.to_doc(item, alignment="expand")
    assert [(e.text, e.start_char) for e in expanded.ents] == [("Parisians", 0), ("Paris", 17)]
    strict = spacy_docs.to_doc(item, alignment="strict")
    assert [e.text for e in strict.ents] == ["Paris"]
    assert [d["start"] for d in strict._.samner_left_out] == [0]
    overlapping = document(text, (Entity("Parisians met", "x", 0, 13), Entity("met in", "y", 10, 16)))
    assert [e.label_ for e in spacy_docs.to_doc(overlapping).ents] == ["x"]
    with pytest.raises(ValueError, match="alignment"):
        spacy_docs.to_doc(item, alignment="loose")


def test_tokenize_keeps_offsets_into_the_text():
    text = "a\u00a0b—c  d"
    assert [text[s:e] for s, e in tokenize(text)] == ["a", "b", "—", "c", "d"]


def _export(*args: object) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "samner_dspy.cli", "export", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_the_export_command_writes_every_format(tmp_path):
    results = tmp_path / "out.jsonl"
    record = {"index": 3, "text": TEXT, "entities": [e.to_dict() for e in ENTITIES], "trace": ITEM.trace.to_dict()}
    results.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")

    gliner = _export(results, "--format", "gliner")
    assert gliner.returncode == 0, gliner.stderr
    assert json.loads(gliner.stdout)["entities"] == to_gliner(ITEM)
    conll = _export(results, "--format", "conll", "-o", tmp_path / "out.conll")
    assert conll.returncode == 0 and (tmp_path / "out.conll").read_text(encoding="utf-8") == "".join(to_conll([ITEM]))
    studio = _export(results, "--format", "label-studio")
    assert [from_label_studio(task) for task in json.loads(studio.stdout)] == [document(TEXT, ENTITIES, 3)]
    refused = _export(results, "--format", "spacy")
    assert refused.returncode == 2 and "--output" in refused.stderr
    missing = _export(tmp_path / "nothing.jsonl", "--format", "gliner")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
