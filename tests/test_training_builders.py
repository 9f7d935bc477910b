"""Training-data builders: public formats in, the stages' exact inference prompts out, every skip counted."""

from __future__ import annotations

import gzip
import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from samner_dspy.adapters import SamnerAdapter
from samner_dspy.archetypes import archetype_definitions
from samner_dspy.backends import StageBackend
from samner_dspy.grounding import locate
from samner_dspy.programs import ArchetypeClassifier, SpanExtractor
from samner_dspy.programs.program import ground_candidates
from samner_dspy.schema import Schema
from samner_dspy.signatures import ClassifyArchetype, ExtractSpans
from samner_dspy.tagging import tag_entities
from samner_dspy.training.builders import Skip, build, iepile_example, pile_ner_example, read_examples, report_path
from samner_dspy.training.sources import iter_file, iter_hub, iter_records
from samner_dspy.types import Span
from tests.conftest import require
from tests.helpers import ScriptedLM

FIXTURES = Path(__file__).parent / "fixtures" / "training"
PILE_NER = FIXTURES / "pile-ner.json"  # UniversalNER's Pile-NER-type: one JSON array of conversations
IEPILE = FIXTURES / "iepile-ner.json"  # IEPile's train.json: JSON Lines of {task, source, instruction, output}


def inference_messages(stage, lm, **inputs) -> list[dict[str, str]]:
    """The messages a stage sends its LM for ``inputs``, captured from the LM's history."""
    stage.bind(StageBackend("stage", lm, "recording"))(**inputs)
    assert len(lm.history) == 1
    return lm.history[0]["messages"]


def built(tmp_path: Path, kind: str, source: Path, **options) -> tuple[list[list[dict[str, str]]], dict]:
    output = tmp_path / f"{kind}.jsonl"
    build(kind, iter_records(source), output, source=str(source), **options)
    return list(read_examples(output)), json.loads(report_path(output).read_text())


def test_explorer_examples_are_the_explorer_stage_prompt_plus_the_answer(tmp_path):
    examples, _ = built(tmp_path, "explorer", PILE_NER, shuffle=False)
    record = next(iter_file(PILE_NER))
    text = record["conversations"][0]["value"].removeprefix("Text: ")
    messages = examples[0]
    answer = SamnerAdapter().parse(ExtractSpans, messages[-1]["content"])
    lm = ScriptedLM([answer])
    sent = inference_messages(SpanExtractor("explorer"), lm, text=text, schema=Schema.coerce(answer_types(messages)))
    assert messages[:-1] == sent
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert answer == {
        "entities": {
            "programming language": ["Python"],
            "person": ["Guido van Rossum"],
            "research institute": ["CWI"],
            "city": ["Amsterdam"],
            "software license": [],
        }
    }


def answer_types(messages: list[dict[str, str]]) -> list[str]:
    return list(SamnerAdapter().parse(ExtractSpans, messages[-1]["content"])["entities"])


def test_archetype_examples_are_the_archetype_stage_prompt_when_conditioned_on_all_archetypes(tmp_path):
    examples, _ = built(tmp_path, "archetype", IEPILE, conditioning="full")
    record = json.loads(IEPILE.read_text().splitlines()[0])
    text = json.loads(record["instruction"])["input"]
    mentions = [m for ms in json.loads(record["output"]).values() for m in ms]
    located, _ = ground_candidates(text, [locate(text, m).as_candidate(("anchor", "explorer")) for m in mentions])
    answer = SamnerAdapter().parse(ClassifyArchetype, examples[0][-1]["content"])
    lm = ScriptedLM([answer])
    sent = inference_messages(ArchetypeClassifier(), lm, text=text, spans=[span for span, _ in located])
    assert examples[0][:-1] == sent
    assert answer == {"archetypes": {"Angela Merkel": "Person", "Siemens": "Organization", "Munich": "Location"}}


def test_archetype_examples_by_default_differ_from_inference_only_in_the_instance_schema(tmp_path):
    full, _ = built(tmp_path, "archetype", IEPILE, conditioning="full")
    instance, _ = built(tmp_path, "archetype", IEPILE)
    assert instance[0][0] == full[0][0], "same system message"
    assert instance[0][2] == full[0][2], "same answer"
    subset = {"Person": archetype_definitions()["Person"], "Organization": archetype_definitions()["Organization"]}
    subset |= {"Location": archetype_definitions()["Location"], "Misc": archetype_definitions()["Misc"]}
    rendered = SamnerAdapter().format(
        ClassifyArchetype,
        [],
        {
            "archetype_definitions": subset,  # person, organization, location, else -> Misc (appendix B)
            "tagged_text": "<ENT>Angela Merkel</ENT> met <ENT>Siemens</ENT> executives in <ENT>Munich</ENT> on "
            "Tuesday.",
            "entities": ["Angela Merkel", "Siemens", "Munich"],
        },
    )
    assert instance[0][1] == rendered[1]
    assert instance[0][1] != full[0][1]


def test_explorer_build_counts_skips_and_mention_changes(tmp_path):
    examples, report = built(tmp_path, "explorer", PILE_NER)
    assert report["read"] == 8 and report["written"] == 4 == len(examples)
    assert report["skipped"] == {
        "duplicate of an earlier example": 1,
        "the conversation does not open with 'Text: ...'": 1,
        "an answer is not a list": 1,
        "no entity type asked about": 1,
    }
    assert report["mentions"] == {
        "respelled as the text writes it": 1,  # "microsoft" is written "Microsoft"
        "not found in the text as a whole word: dropped": 1,  # "CEO" is not in the text
    }
    answers = [SamnerAdapter().parse(ExtractSpans, m[-1]["content"])["entities"] for m in examples]
    assert answers[1]["company"] == ["Microsoft"] and answers[1]["job title"] == ["chief executive"]
    assert answers[2]["orchestra"] == ["Berlin Philharmonic"], "a Python-literal answer list is read"
    assert answers[3] == {"software": ["TensorFlow"], "hardware": ["GPUs", "TPUs"], "company": ["Google"]}


def test_archetype_build_counts_skips_and_projects_types(tmp_path):
    examples, report = built(tmp_path, "archetype", IEPILE, occurrences="first")
    assert report["read"] == 11 and report["written"] == 5 == len(examples)
    assert report["skipped"] == {
        "not an NER record": 1,
        "not English (the archetype mapping is English)": 1,
        "no entities": 1,
        "a mention's types project to different archetypes": 1,
        "duplicate of an earlier example": 1,
        "'output' is not valid JSON": 1,
    }
    assert report["mentions"] == {
        "not found in the text as a whole word: dropped": 1,  # "Robert Zimmerman"
        # With only a mention's first occurrence tagged, as in the authors' builder: New York's first is inside
        # The New York Times, so New York is not tagged at all.
        "overlaps a longer mention: dropped": 1,
    }
    answers = [SamnerAdapter().parse(ClassifyArchetype, m[-1]["content"])["archetypes"] for m in examples]
    assert answers[2] == {"The New York Times": "Organization"}
    assert "<ENT>The New York Times</ENT> before moving to New York." in examples[2][1]["content"]
    assert answers[3] == {"IL-2 gene": "Medicine", "NF-kappa B": "Medicine", "activated T cells": "Medicine"}
    assert answers[4] == {
        "Laser sintering": "Computer_Science",
        "titanium powder": "Science",
        "Ti6Al4V lattice": "Misc",
    }


def test_archetype_build_can_tag_every_occurrence_as_the_pipeline_does_at_inference(tmp_path):
    examples, report = built(tmp_path, "archetype", IEPILE, occurrences="every")
    assert report["written"] == 5
    assert report["mentions"]["overlaps a better-supported or longer mention: dropped"] == 1
    answers = [SamnerAdapter().parse(ClassifyArchetype, m[-1]["content"])["archetypes"] for m in examples]
    assert answers[2] == {"The New York Times": "Organization", "New York": "Location"}
    assert "<ENT>The New York Times</ENT> before moving to <ENT>New York</ENT>." in examples[2][1]["content"]


def iepile_record(text: str, output: dict[str, list[str]]) -> dict[str, str]:
    instruction = {"instruction": "Extract entities.", "schema": list(output), "input": text}
    return {"task": "NER", "source": "test", "instruction": json.dumps(instruction), "output": json.dumps(output)}


def test_first_occurrence_or_every_occurrence_is_tagged():
    record = iepile_record("Paris is big and Paris is old.", {"location": ["Paris"]})
    first = iepile_example(record, Counter(), occurrences="first")
    every = iepile_example(record, Counter(), occurrences="every")
    each = iepile_example(record, Counter())  # the default: every occurrence under its own name, as at inference
    assert each.inputs["tagged_text"] == "<ENT>Paris</ENT> is big and <ENT>Paris (2)</ENT> is old."
    assert each.outputs == {"archetypes": {"Paris": "Location", "Paris (2)": "Location"}}
    assert first.inputs["tagged_text"] == "<ENT>Paris</ENT> is big and Paris is old."
    assert every.inputs["tagged_text"] == "<ENT>Paris</ENT> is big and <ENT>Paris</ENT> is old."
    assert first.outputs == every.outputs == {"archetypes": {"Paris": "Location"}}


def test_numeric_types_are_dropped_by_default_or_projected_onto_misc():
    text = "Ada Lovelace wrote two notes in 1843."
    record = iepile_record(text, {"person": ["Ada Lovelace"], "Date": ["1843"], "cardinal": ["two"]})
    notes: Counter[str] = Counter()
    dropped = iepile_example(record, notes)
    assert dropped.inputs["tagged_text"] == "<ENT>Ada Lovelace</ENT> wrote two notes in 1843."
    assert dropped.outputs == {"archetypes": {"Ada Lovelace": "Person"}}
    assert list(dropped.inputs["archetype_definitions"]) == ["Person"], "a dropped type adds no Misc definition"
    assert notes == {"of a numeric type: dropped": 2}
    kept = iepile_example(record, Counter(), numeric="misc")
    assert kept.outputs == {"archetypes": {"Ada Lovelace": "Person", "two": "Misc", "1843": "Misc"}}
    assert set(kept.inputs["archetype_definitions"]) == {"Person", "Misc"}


def test_a_record_of_numeric_entities_only_is_skipped_with_its_reason():
    record = iepile_record("It rained on 3 May.", {"date": ["3 May"]})
    with pytest.raises(Skip) as skipped:
        iepile_example(record, Counter())
    assert skipped.value.reason == "only entities of numeric types"
    assert iepile_example(record, Counter(), numeric="misc").outputs == {"archetypes": {"3 May": "Misc"}}


def prompt_types(messages: list[dict[str, str]]) -> list[str]:
    content = messages[1]["content"]
    return json.loads(content.split("[[ ## entity_types ## ]]\n", 1)[1].split("\n", 1)[0])


def test_explorer_types_are_listed_in_a_seeded_random_order_and_the_answer_is_unchanged(tmp_path):
    plain, _ = built(tmp_path / "plain", "explorer", PILE_NER, shuffle=False)
    once, _ = built(tmp_path / "once", "explorer", PILE_NER, seed=7)
    again, _ = built(tmp_path / "again", "explorer", PILE_NER, seed=7)
    other, _ = built(tmp_path / "other", "explorer", PILE_NER, seed=8)
    assert once == again, "the same seed gives the same file"
    assert [prompt_types(m) for m in once] != [prompt_types(m) for m in other]
    assert [prompt_types(m) for m in once] != [prompt_types(m) for m in plain]
    for shuffled, unshuffled in zip(once, plain, strict=True):
        assert shuffled[2] == unshuffled[2], "the answer keeps the source's order"
        assert sorted(prompt_types(shuffled)) == sorted(answer_types(unshuffled))
    assert [prompt_types(m) for m in plain] == [answer_types(m) for m in plain]


def test_builder_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="numeric"):
        build("archetype", [], tmp_path / "x.jsonl", numeric="keep")
    with pytest.raises(ValueError, match="occurrences"):
        build("archetype", [], tmp_path / "x.jsonl", occurrences="all")


def test_tag_lookalikes_in_the_source_text_are_escaped_as_at_inference():
    record = {
        "task": "NER",
        "source": "x",
        "instruction": json.dumps({"schema": ["person"], "input": "Ada wrote <ENT> in 1843."}),
        "output": json.dumps({"person": ["Ada"]}),
    }
    example = iepile_example(record, Counter())
    assert example.inputs["tagged_text"] == tag_entities("Ada wrote <ENT> in 1843.", [Span(0, 3, "Ada")])
    assert example.inputs["tagged_text"].count("<ENT>") == 1, "only the entity's own tag reads as a tag"


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"conversations": []}, "no conversation"),
        ({"conversations": [{"from": "human", "value": "Text: a"}, {"from": "human", "value": "Hi?"}]}, "a question"),
    ],
)
def test_malformed_pile_ner_records_are_skipped_with_a_reason(record, reason):
    with pytest.raises(Skip, match=reason):
        pile_ner_example(record, Counter())


def test_limit_stops_after_that_many_written_examples(tmp_path):
    output = tmp_path / "out.jsonl"
    report = build("explorer", iter_records(PILE_NER), output, limit=2)
    assert report.written == 2 and len(output.read_text().splitlines()) == 2


def test_local_files_stream_as_json_array_json_lines_or_gzip(tmp_path):
    records = list(iter_file(PILE_NER))
    assert len(records) == 8 and records[0]["id"] == "ner_0"
    compact = tmp_path / "pile.json.gz"
    with gzip.open(compact, "wt", encoding="utf-8") as handle:
        json.dump(records, handle)
    assert list(iter_file(compact)) == records
    assert [r["source"] for r in iter_file(IEPILE)][:2] == ["CoNLL2003", "NYT11"]


def test_array_elements_that_straddle_read_chunks_are_decoded(tmp_path, monkeypatch):
    from samner_dspy.training import sources

    monkeypatch.setattr(sources, "_CHUNK", 7)
    path = tmp_path / "array.json"
    path.write_text(json.dumps([{"n": 12345}, 678, {"text": "x" * 40}, "tail"]))
    assert list(sources.iter_file(path)) == [{"n": 12345}, 678, {"text": "x" * 40}, "tail"]


def test_hub_loading_streams_a_dataset_folder_in_the_public_layout(tmp_path, monkeypatch):
    """The same ``datasets.load_dataset(..., streaming=True)`` call the hub ids go through, on local folders."""
    require(importlib.util.find_spec("datasets") is not None, "datasets (the 'dev' and 'train' extras)")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    pile = tmp_path / "Pile-NER-type"
    pile.mkdir()
    (pile / "pile-ner.json").write_text(PILE_NER.read_text())
    iepile = tmp_path / "iepile"
    iepile.mkdir()
    (iepile / "train.json").write_text(IEPILE.read_text())
    pile_records = list(iter_hub(str(pile)))
    assert [r["id"] for r in pile_records] == [r["id"] for r in iter_file(PILE_NER)]
    iepile_records = list(iter_hub(str(iepile), "train.json"))
    assert len(iepile_records) == 11 and iepile_records[0]["task"] == "NER"
    report = build("archetype", iter_hub(str(iepile), "train.json"), tmp_path / "a.jsonl")
    assert report.written == 5


def test_samner_build_passes_the_faithfulness_switches(tmp_path, capsys):
    from samner_dspy.cli import main

    every, first = tmp_path / "every.jsonl", tmp_path / "first.jsonl"
    assert main(["build", "archetype", "-i", str(IEPILE), "-o", str(every), "--occurrences", "every"]) == 0
    assert main(["build", "archetype", "-i", str(IEPILE), "-o", str(first), "--occurrences", "first"]) == 0
    assert "<ENT>New York</ENT>." in every.read_text() and "<ENT>New York</ENT>." not in first.read_text()
    plain, shuffled = tmp_path / "plain.jsonl", tmp_path / "shuffled.jsonl"
    assert main(["build", "explorer", "-i", str(PILE_NER), "-o", str(plain), "--no-shuffle"]) == 0
    assert main(["build", "explorer", "-i", str(PILE_NER), "-o", str(shuffled), "--seed", "3"]) == 0
    assert [prompt_types(m) for m in read_examples(plain)] == [answer_types(m) for m in read_examples(plain)]
    assert [prompt_types(m) for m in read_examples(shuffled)] != [prompt_types(m) for m in read_examples(plain)]
