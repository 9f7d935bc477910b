"""Precision and recall over the score threshold, and the SVG and table the evaluation report gets."""

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from samner_dspy.evals import curve, report


def records():
    """Ten sentences with one gold entity each: the high-scored predictions are right, the low ones wrong."""
    out = []
    for n in range(10):
        text = f"Ada{n} met Bob{n}."
        entities = [
            {"text": f"Ada{n}", "label": "person", "start": 0, "end": 4, "sources": ["anchor"], "score": 0.9},
            {"text": "met", "label": "person", "start": 5, "end": 8, "sources": ["explorer"], "score": 0.2 + n / 100},
        ]
        if n < 5:  # half of the sentences also get a right answer at a middling score
            entities.append({"text": f"Bob{n}", "label": "person", "start": 9, "end": 13, "score": 0.6})
        trace = {"stages": [{"stage": "anchor", "requests": 1}]}
        gold = [[0, 4, "person"], [9, 13, "person"]]
        out.append({"key": f"ai:{n}", "domain": "ai", "text": text, "entities": entities, "gold": gold, "trace": trace})
    return out


def test_precision_rises_and_recall_falls_with_the_threshold():
    points = curve.curve(records())
    precisions = [p.precision for p in points]
    recalls = [p.recall for p in points]
    assert [p.threshold for p in points] == sorted(p.threshold for p in points)
    assert precisions == sorted(precisions) and precisions[0] < precisions[-1] == 1.0
    assert recalls == sorted(recalls, reverse=True)
    assert points[0].recall == 15 / 20 and points[0].precision == 15 / 25
    assert curve.curve(records(), [0.95]) == [], "a threshold above every score keeps nothing and is left out"


def test_records_without_scores_get_the_evidence_term_from_the_trace():
    old = records()[:1]
    for entity in old[0]["entities"]:
        del entity["score"]
    old[0]["entities"][1]["sources"] = ["explorer"]
    old[0]["trace"]["stages"].append({"stage": "consensus", "outputs": {"verified": ["MET"]}})
    pairs, gold = curve.scored(old)
    assert gold == 2
    assert sorted(pairs) == [(0.5, True), (0.75, True), (0.95, False)]


def test_report_writes_an_svg_that_parses_and_links_it(tmp_path):
    results = {"samner": records(), "direct": records()[:3]}
    md_path, _ = report.write(report.summarize(results), tmp_path, "test", "samner eval", results)
    root = ET.parse(tmp_path / "pr_curve.svg").getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert len(root.findall("{http://www.w3.org/2000/svg}polyline")) == 2
    text = md_path.read_text(encoding="utf-8")
    assert "![precision-recall curve over the score threshold](pr_curve.svg)" in text
    assert "| score ≥ | SAM-NER, paper's preset | Direct prompting |" in text
    assert "| 0.7 | 100.0 / 50.0 | 100.0 / 50.0 |" in text


@pytest.mark.parametrize("configuration", ["samner", "per-entity"])
def test_on_the_committed_crossner_sample_precision_rises_with_the_threshold(configuration):
    """The score means something on real predictions: the embedded model's committed evaluation sample."""
    from samner_dspy.evals.runner import read_results

    path = Path(__file__).parents[1] / "evals" / "results" / "qwen2.5-coder-0.5b" / f"{configuration}.jsonl"
    records = read_results(path)
    assert len(records) >= 25
    points = curve.curve(records)
    assert len(points) >= 3, "too few distinct scores to draw a curve"
    assert points[-1].precision > points[0].precision
    assert points[-1].recall < points[0].recall
