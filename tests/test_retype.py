"""Typing recorded spans again (``samner eval --discovery-from``): no discovery request, the same mentions typed."""

import json

import pytest

from samner_dspy.errors import SamnerError
from samner_dspy.evals.crossner import read_bio
from samner_dspy.evals.retype import RecordedDiscovery, RecordedSentence, recorded_spans
from samner_dspy.evals.runner import Item, read_results, run
from samner_dspy.programs import SAMNER
from samner_dspy.schema import Schema
from tests.helpers import stage_lms

TEXT = "Bob Dylan recorded Blonde on Blonde in Nashville ."


def test_typing_runs_on_the_recorded_spans_and_discovery_sends_nothing(crossner_dir, tmp_path):
    sentence = next(iter(read_bio(crossner_dir / "music" / "test.txt")))
    schemas = {"music": Schema.from_name("crossner:music")}
    first_two = [e.text for e in sentence.entities[:2]]
    lms = stage_lms(
        anchor=[{"entities": {"musical artist": first_two}}],
        explorer=[{"entities": {"musical artist": first_two}}],
        archetype=[{"archetypes": {t: "Person" for t in first_two}}],
        calibrator=[{"labels": {t: "person" for t in first_two}}],
    )
    recorded = tmp_path / "samner.jsonl"
    assert run(SAMNER(lms=lms), [Item("music", 0, sentence)], schemas, recorded, threads=1) == 1
    spans = recorded_spans(recorded)
    assert [s[2] for s in spans[sentence.text].spans] == first_two
    assert spans[sentence.text].anchor_types == {t: ["musical artist"] for t in first_two}

    typing = stage_lms(
        archetype=[{"archetypes": {t: "Person" for t in first_two}}],
        calibrator=[{"label": "band"}],
    )
    again = RecordedDiscovery(spans, str(recorded), lms=typing, calibration="entity", trust_anchor_types=True)
    output = tmp_path / "small.jsonl"
    assert run(again, [Item("music", 0, sentence)], schemas, output, threads=1) == 1
    (record,) = read_results(output)
    assert [(e["text"], e["label"]) for e in record["entities"]] == [(t, "musical artist") for t in first_two]
    assert typing["anchor"].history == [] and typing["explorer"].history == [], "discovery was read, not asked"
    assert typing["calibrator"].history == [], "the recorded anchor's types were trusted"
    stages = [s["stage"] for s in record["trace"]["stages"]]
    assert stages == ["grounding", "archetype", "calibrator"]
    assert record["trace"]["stages"][0]["inputs"] == {"recorded": str(recorded)}


def test_a_text_the_records_do_not_hold_is_refused(tmp_path):
    program = RecordedDiscovery(
        {TEXT: RecordedSentence([(0, 9, "Bob Dylan", "exact")], {})}, "run.jsonl", lms=stage_lms()
    )
    with pytest.raises(SamnerError, match=r"run\.jsonl holds no record of this text"):
        program("Another sentence .", "crossner:music")


def test_records_without_a_grounding_stage_are_refused(tmp_path):
    path = tmp_path / "direct.jsonl"
    record = {"key": "music:0", "domain": "music", "index": 0, "text": TEXT, "entities": []}
    path.write_text(json.dumps({**record, "trace": {"stages": [{"stage": "direct"}]}}) + "\n")
    with pytest.raises(SamnerError, match="no grounding stage"):
        recorded_spans(path)
