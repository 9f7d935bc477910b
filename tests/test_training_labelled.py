"""Training sets from labelled data (BIO/CoNLL, MIT's tag-first layout, GLiNER's JSON, span JSON Lines): the
stages' exact inference prompts, asking about the types present and sampled absent ones, every skip counted."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from samner_dspy.adapters import IEPileAdapter, SamnerAdapter
from samner_dspy.archetypes import archetype_definitions, project_training_type
from samner_dspy.backends import StageBackend
from samner_dspy.cli import main
from samner_dspy.formats.labelled import read_bio_file
from samner_dspy.programs import SpanExtractor
from samner_dspy.schema import Schema
from samner_dspy.signatures import ExtractSpans
from samner_dspy.training.builders import (
    asked_types,
    build,
    labelled_archetype_example,
    read_examples,
    report_path,
    type_name,
)
from tests.helpers import ScriptedLM

MIT = ["B-ACTOR\tbrad", "I-ACTOR\tpitt", "O\tmovies", "O\tfrom", "B-YEAR\t1999", "", "O\tany", "O\tgood", "O\tones"]
MIT = [*MIT, "", "B-DIRECTOR\tnolan", "O\tand", "B-ACTOR\tbrad", "I-ACTOR\tpitt"]
WNUT = ["@ada\tO", "loves\tO", "Berlin\tB-location", "and\tO", "Netflix\tB-corporation"]


def write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_corpus_tag_is_said_as_a_type_name():
    assert [type_name(t) for t in ("RATINGS_AVERAGE", "Gene_or_gene_product", "creative-work")] == [
        "ratings average",
        "gene or gene product",
        "creative work",
    ]


def test_an_example_asks_about_the_types_present_and_sampled_absent_ones_in_a_random_order():
    pool = [f"type {n}" for n in range(20)]
    orders = set()
    for seed in range(20):
        types = asked_types(["person", "city"], pool, 3, random.Random(seed))
        assert len(types) == 5 and {"person", "city"} <= set(types) and len(set(types) & set(pool)) == 3
        orders.add(types.index("person"))
    assert len(orders) > 1, "the present types are not always first"
    assert sorted(asked_types(["a"], ["a", "b"], 5, random.Random(0))) == ["a", "b"]  # the pool runs out


def test_anchor_examples_are_the_anchor_stage_iepile_prompt_plus_the_answer(tmp_path):
    data = write(tmp_path / "mit.txt", MIT)
    output = tmp_path / "anchor.jsonl"
    report = build("anchor", read_bio_file(data), output, source="mit", type_pool=["ACTOR", "YEAR", "DIRECTOR"])
    assert (report.read, report.written, dict(report.skipped)) == (3, 2, {"no entities": 1})
    first = next(read_examples(output))
    answer = IEPileAdapter().parse(ExtractSpans, first[-1]["content"])
    types = list(answer["entities"])
    assert sorted(types) == ["actor", "director", "year"]  # present ones and the one absent type of the pool
    assert answer["entities"] == {"actor": ["brad pitt"], "year": ["1999"], "director": []}
    lm = ScriptedLM([answer])
    stage = SpanExtractor("anchor", IEPileAdapter())
    stage.bind(StageBackend("anchor", lm, "r"))(text="brad pitt movies from 1999", schema=Schema.coerce(types))
    assert first[:-1] == lm.history[0]["messages"], "the prompt the anchor stage sends at inference"


def test_explorer_examples_from_gliner_json_record_their_source_and_licence(tmp_path):
    records = [
        {"tokenized_text": ["Ada", "visited", "Paris"], "ner": [[0, 0, "person"], [2, 2, "city"]]},
        {"tokenized_text": ["Nothing", "here"], "ner": []},
    ]
    data = tmp_path / "gliner.json"
    data.write_text(json.dumps(records), encoding="utf-8")
    output = tmp_path / "explorer.jsonl"
    assert (
        main(["build", "explorer", "-i", str(data), "--format", "gliner", "-o", str(output), "--licence", "CC0"]) == 0
    )
    (messages,) = list(read_examples(output))
    answer = SamnerAdapter().parse(ExtractSpans, messages[-1]["content"])
    assert answer == {"entities": {t: {"person": ["Ada"], "city": ["Paris"]}[t] for t in answer["entities"]}}
    report = json.loads(report_path(output).read_text())
    assert (report["source"], report["licence"], report["skipped"]) == (str(data), "CC0", {"no entities": 1})


def test_samner_build_reads_several_bio_files_and_samples_negatives_from_all_their_types(tmp_path):
    mit, wnut = write(tmp_path / "mit.txt", MIT), write(tmp_path / "wnut.conll", WNUT)
    output = tmp_path / "explorer.jsonl"
    command = ["build", "explorer", "-i", str(mit), "-i", str(wnut), "-o", str(output), "--negatives", "4"]
    assert main([*command, "--seed", "1"]) == 0
    examples = list(read_examples(output))
    asked = [list(SamnerAdapter().parse(ExtractSpans, m[-1]["content"])["entities"]) for m in examples]
    assert len(examples) == 3 and all(len(types) == len(set(types)) for types in asked)
    assert any({"location", "corporation"} & set(types) for types in asked[:2]), "WNUT's types asked of MIT text"
    assert {"location", "corporation"} <= set(asked[2])
    assert main([*command, "--seed", "1", "-o", str(tmp_path / "again.jsonl")]) == 0
    assert (tmp_path / "again.jsonl").read_text() == output.read_text(), "the same seed, the same file"


def test_several_inputs_must_all_be_labelled_data(tmp_path, capsys):
    mit = write(tmp_path / "mit.txt", MIT)
    other = tmp_path / "records.jsonl"
    other.write_text("{}\n", encoding="utf-8")
    code = main(["build", "explorer", "-i", str(mit), "-i", str(other), "-o", str(tmp_path / "o.jsonl")])
    assert code != 0 and "must all be labelled data" in capsys.readouterr().err
    assert main(["build", "anchor", "-i", str(other), "-o", str(tmp_path / "o.jsonl")]) != 0
    assert "anchor examples are built from labelled data" in capsys.readouterr().err
    assert main(["build", "anchor", "-i", str(mit), "--per-input", "x", "-o", str(tmp_path / "o.jsonl")]) != 0
    assert "--per-input takes a count" in capsys.readouterr().err


def test_archetype_examples_from_labelled_data_project_through_the_written_table(tmp_path):
    sentence = next(read_bio_file(write(tmp_path / "mit.txt", MIT)))
    notes: Counter[str] = Counter()
    example = labelled_archetype_example(sentence, notes, ["ACTOR", "YEAR", "DIRECTOR"], 3, random.Random(0))
    assert example.outputs == {"archetypes": {"brad pitt": project_training_type("ACTOR")}}
    assert project_training_type("ACTOR") == "Person" and project_training_type("year") is None
    assert notes == Counter({"of a numeric type: dropped": 1}), "the year is a value: left out, counted"
    assert example.inputs["tagged_text"] == "<ENT>brad pitt</ENT> movies from 1999"
    assert set(example.inputs["archetype_definitions"]) == {"Person"} | {project_training_type("director")}
    assert set(example.inputs["archetype_definitions"]) <= set(archetype_definitions())


def test_type_examples_ask_the_archetype_prompt_over_the_types_and_answer_each_mention_with_its_type(tmp_path):
    """``conditioning="types"``: what ``calibration="matched"`` sends, trained on labelled data."""
    sentence = next(read_bio_file(write(tmp_path / "mit.txt", MIT)))
    notes: Counter[str] = Counter()
    defined = {"actor": "a person who acts in films", "year": "a calendar year"}
    pool = ["actor", "year", "director"]
    example = labelled_archetype_example(sentence, notes, pool, 3, random.Random(0), "types", "each", defined)
    assert example.outputs == {"archetypes": {"brad pitt": "actor"}}
    assert example.inputs["archetype_definitions"] == {"actor": "a person who acts in films", "director": "director"}
    assert notes == Counter({"of a numeric type: dropped": 1}), "a value type is neither shown nor answered"
    definitions = tmp_path / "definitions.json"
    definitions.write_text(json.dumps({"ACTOR": {"gpt_answer": json.dumps({"Definition": "one who acts"})}}))
    output = tmp_path / "types.jsonl"
    command = ["build", "archetype", "-i", str(write(tmp_path / "m.txt", MIT)), "-o", str(output)]
    assert main([*command, "--conditioning", "types", "--type-definitions", str(definitions)]) == 0
    first = next(read_examples(output))
    assert '"actor": "one who acts"' in first[-2]["content"] and '"brad pitt": "actor"' in first[-1]["content"]
    with pytest.raises(ValueError, match="built from labelled sentences"):
        build("archetype", [{"instruction": "{}", "output": "{}"}], tmp_path / "x.jsonl", conditioning="types")


def test_the_written_tables_name_only_archetypes_and_leave_out_only_what_they_list():
    from samner_dspy.data import load_data

    training = load_data("type_archetypes")
    names = set(archetype_definitions())
    dropped = {type_name(t) for t in training["drop"]}
    for corpus, types in training["corpora"].items():
        for fine_type, archetype in types.items():
            assert archetype in names or (archetype is None and type_name(fine_type) in dropped), (corpus, fine_type)
            assert project_training_type(fine_type) == archetype, (corpus, fine_type)
    crossner = load_data("crossner_archetypes")["domains"]
    schemas = load_data("crossner_schemas")["domains"]
    assert {domain: set(labels) for domain, labels in crossner.items()} == {d: set(s) for d, s in schemas.items()}
    assert all(set(labels.values()) <= names for labels in crossner.values())


def test_a_mix_samples_each_input_with_a_seed_and_interleaves_them(tmp_path):
    from samner_dspy.training.builders import labelled_mix

    mit, wnut = write(tmp_path / "mit.txt", MIT), write(tmp_path / "wnut.conll", WNUT)
    files = [(str(mit), "bio"), (str(wnut), "bio")]
    everything, pool = labelled_mix(files)
    assert [s.text for s in everything][:3] == ["brad pitt movies from 1999", "any good ones", "nolan and brad pitt"]
    assert pool == ["ACTOR", "DIRECTOR", "YEAR", "corporation", "location"]
    sample, _ = labelled_mix(files, per_input=1, seed=5)
    assert len(sample) == 2 and all(s.entities for s in sample), "one sentence with entities from each file"
    assert "@ada loves Berlin and Netflix" in [s.text for s in sample]
    assert labelled_mix(files, per_input=1, seed=5)[0] == sample, "the same seed, the same sample"
    with pytest.raises(ValueError, match="per_input must be positive"):
        labelled_mix(files, per_input=0)
    mit_only, _ = labelled_mix(files, per_input=[2, 1], seed=5)
    assert sorted(s.text for s in mit_only)[0] == "@ada loves Berlin and Netflix" and len(mit_only) == 3
    with pytest.raises(ValueError, match="gives 1 counts for 2 inputs"):
        labelled_mix(files, per_input=[1])
