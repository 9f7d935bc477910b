"""Labelled data for `samner eval`: BIO, JSON Lines and DocBin read into the same sentences; the CLI runs them."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from samner_dspy.evals.datafiles import guess_format, load_labelled
from samner_dspy.formats.exports import to_conll
from samner_dspy.schema import Schema
from samner_dspy.serving.stand_in import stand_in_server
from samner_dspy.types import Document, Entity
from tests.conftest import require

SCHEMA = Schema({"person": "a named person", "city": "a named city"})
ITEMS = [
    Document(
        text="Zoë Müller moved to São Paulo.",
        entities=[Entity("Zoë Müller", "person", 0, 10), Entity("São Paulo", "city", 20, 29)],
        trace=None,
    ),
    Document(text="Nothing here.", entities=[], trace=None),
    Document(text="Ada met Bob in Paris.", entities=[Entity("Paris", "City", 15, 20)], trace=None),
]


def gold(sentences):
    return [[(e.text, e.label, e.start, e.end) for e in s.entities] for s in sentences]


EXPECTED = [
    [("Zoë Müller", "person", 0, 10), ("São Paulo", "city", 20, 29)],
    [],
    [("Paris", "city", 15, 20)],  # "City" is matched to the schema's spelling
]


def test_jsonl_spans_in_every_accepted_shape_give_the_gold(tmp_path):
    path = tmp_path / "gold.jsonl"
    lines = [
        {"text": ITEMS[0].text, "entities": [e.to_dict() for e in ITEMS[0].entities]},
        {"text": ITEMS[1].text, "spans": []},
        {"text": ITEMS[2].text, "label": [[15, 20, "City"]]},
    ]
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    sentences = load_labelled(path, SCHEMA)
    assert gold(sentences) == EXPECTED
    assert sentences[0].tokens[:2] == ("Zoë", "Müller") and sentences[0].tags[:2] == ("B-person", "I-person")


def test_bio_written_by_the_exporter_reads_back_as_the_same_mentions(tmp_path):
    path = tmp_path / "gold.conll"
    path.write_text("-DOCSTART- -X- O O\n\n" + "".join(to_conll(ITEMS)), encoding="utf-8")
    assert guess_format(path) == "bio"
    sentences = load_labelled(path, SCHEMA)
    # BIO text is the tokens joined by single spaces, so offsets are those of that text.
    assert [[(e.text, e.label) for e in s.entities] for s in sentences] == [
        [(t, label) for t, label, _, _ in sentence] for sentence in EXPECTED
    ]
    assert sentences[0].text == "Zoë Müller moved to São Paulo ."


def test_bio_files_with_conll_columns_keep_the_last_column_as_the_tag(tmp_path):
    path = tmp_path / "conll2003.txt"
    path.write_text("EU NNP B-NP B-org\nrejects VBZ B-VP O\n\n", encoding="utf-8")
    (sentence,) = load_labelled(path, Schema.coerce(["org"]), "bio")
    assert gold([sentence]) == [[("EU", "org", 0, 2)]]


def test_gold_labels_outside_the_schema_and_bad_spans_are_refused(tmp_path):
    path = tmp_path / "gold.jsonl"
    path.write_text(json.dumps({"text": "Ada", "entities": [[0, 3, "robot"]]}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="'robot' is not in the schema"):
        load_labelled(path, SCHEMA)
    path.write_text(json.dumps({"text": "Ada", "entities": [[0, 9, "person"]]}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="outside the text"):
        load_labelled(path, SCHEMA)
    with pytest.raises(FileNotFoundError):
        load_labelled(tmp_path / "none.jsonl", SCHEMA)


def test_docbin_gold_is_doc_ents(tmp_path):
    require(importlib.util.find_spec("spacy") is not None, "spaCy (the 'spacy' extra)")
    from samner_dspy.formats.spacy_docs import write_docbin

    path = tmp_path / "gold.spacy"
    write_docbin(ITEMS, path)
    assert gold(load_labelled(path, SCHEMA)) == EXPECTED


def test_samner_eval_runs_a_data_file_writes_the_report_and_resumes(tmp_path):
    data = tmp_path / "mine.jsonl"
    lines = [{"text": "Ada met Zoë.", "entities": [[0, 3, "person"]]}, {"text": "Paris is big.", "entities": []}]
    data.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    schema = tmp_path / "labels.json"
    schema.write_text(json.dumps(SCHEMA.to_dict()), encoding="utf-8")
    out = tmp_path / "results"
    with stand_in_server() as api_base:
        config = tmp_path / "samner.toml"
        config.write_text(f'[defaults]\napi_base = "{api_base}"\n', encoding="utf-8")
        command = [sys.executable, "-m", "samner_dspy.cli", "eval", "--data-file", data, "--schema", schema]
        command += ["--config", config, "--output-dir", out, "--no-cache", "--threads", "1"]
        first = subprocess.run(list(map(str, command)), capture_output=True, text=True, timeout=300)
        assert first.returncode == 0, first.stderr
        records = [json.loads(line) for line in (out / "samner.jsonl").read_text(encoding="utf-8").splitlines()]
        assert [r["key"] for r in records] == ["mine:0", "mine:1"]
        second = subprocess.run(list(map(str, command)), capture_output=True, text=True, timeout=300)
        assert second.returncode == 0 and (out / "samner.jsonl").read_text(encoding="utf-8").count("\n") == 2
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))["results"]["samner"]
    # The stand-in answers the first word, "Ada" then "Paris", both as "person": one hit, one false alarm.
    assert report["strict"]["mine"]["tp"] == 1 and report["strict"]["mine"]["fp"] == 1
    assert "| Method | mine | Avg. |" in (out / "report.md").read_text(encoding="utf-8")

    missing_schema = subprocess.run(
        list(map(str, command[:5] + command[7:])), capture_output=True, text=True, timeout=300
    )
    assert missing_schema.returncode == 2 and "--schema" in missing_schema.stderr


def test_score_only_runs_nothing_and_scores_the_sentences_every_row_finished(tmp_path, monkeypatch):
    from samner_dspy.evals import evaluate as evaluate_module
    from samner_dspy.evals.evaluate import Data, evaluate

    data = tmp_path / "mine.jsonl"
    lines = [{"text": f"Ada met Zoë {i}.", "entities": [[0, 3, "person"]]} for i in range(3)]
    data.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    schema = tmp_path / "labels.json"
    schema.write_text(json.dumps(SCHEMA.to_dict()), encoding="utf-8")
    out = tmp_path / "results"

    def sample(limit: int) -> Data:
        return Data(limit=limit, data_file=str(data), schema=str(schema))

    with stand_in_server() as api_base:
        config = tmp_path / "samner.toml"
        config.write_text(f'[defaults]\napi_base = "{api_base}"\n', encoding="utf-8")
        evaluate(["plain"], sample(3), out, str(config), threads=1, cache=False)
        evaluate(["direct"], sample(2), out, str(config), threads=1, cache=False)  # a row stopped part-way
        before = {row: (out / f"{row}.jsonl").read_bytes() for row in ("plain", "direct")}

        def no_program(*args: object) -> None:
            raise AssertionError("scoring built a program")

        monkeypatch.setattr(evaluate_module, "build_program", no_program)
        evaluate(["plain", "direct"], sample(3), out, str(config), threads=1, cache=False, score_only=True)
    assert {row: (out / f"{row}.jsonl").read_bytes() for row in ("plain", "direct")} == before, "nothing ran"
    results = json.loads((out / "report.json").read_text(encoding="utf-8"))["results"]
    assert results["plain"]["sentences"] == results["direct"]["sentences"] == {"mine": 2}
    assert "scored on the 2 of its 3 sentences that every row has finished" in (out / "report.md").read_text()
