"""Typing recorded spans again (``samner eval --discovery-from``): no discovery request, the same mentions typed."""

import json

import pytest

from samner_dspy.errors import SamnerError
from samner_dspy.evals.crossner import read_bio
from samner_dspy.evals.retype import RecordedDiscovery, RecordedSentence, recorded_spans
from samner_dspy.evals.runner import CURRENT_KEY, Item, read_results, run
from samner_dspy.programs import SAMNER
from samner_dspy.schema import Schema
from tests.helpers import stage_lms, trained_adapter_folders

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
    assert [s[2] for s in spans["music:0"].spans] == first_two
    assert spans["music:0"].anchor_types == {t: ["musical artist"] for t in first_two}

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


def test_a_sentence_the_records_do_not_hold_or_of_another_text_is_refused(crossner_dir, tmp_path):
    sentence = next(iter(read_bio(crossner_dir / "music" / "test.txt")))
    schemas = {"music": Schema.from_name("crossner:music")}
    recorded = {"music:0": RecordedSentence([(0, 9, "Bob Dylan", "exact")], {}, TEXT)}
    program = RecordedDiscovery(recorded, "run.jsonl", lms=stage_lms())
    with pytest.raises(SamnerError, match="recorded discovery replays evaluation sentences"):
        program(TEXT, "crossner:music")  # outside an evaluation, there is no sentence key to look up
    for key, text, reason in (
        ("music:1", TEXT, r"run\.jsonl holds no record of sentence music:1"),
        ("music:0", sentence.text, r"run\.jsonl's record of music:0 is of another text"),
    ):
        token = CURRENT_KEY.set(key)
        try:
            with pytest.raises(SamnerError, match=reason):
                program(text, schemas["music"])
        finally:
            CURRENT_KEY.reset(token)


def test_one_sentence_in_two_domains_is_typed_with_each_domains_own_spans(crossner_dir, tmp_path):
    """The same text recorded under two keys (CrossNER has sentences in both literature and politics): each
    domain replays its own record, never the other's, whichever was written last."""
    sentence = next(iter(read_bio(crossner_dir / "music" / "test.txt")))
    text = sentence.text
    first, second = (e.text for e in sentence.entities[:2])
    where = {e.text: (e.start, e.end) for e in sentence.entities[:2]}
    path = tmp_path / "small.jsonl"
    lines = []
    for domain, surface in (("literature", first), ("politics", second)):
        start, end = where[surface]
        stages = [{"stage": "grounding", "outputs": {"spans": [[start, end, surface, "exact"]]}}]
        record = {"key": f"{domain}:0", "domain": domain, "index": 0, "text": text, "entities": []}
        lines.append(json.dumps({**record, "trace": {"stages": stages}}))
    path.write_text("\n".join(lines) + "\n")
    spans = recorded_spans(path)
    schemas = {d: Schema({"person": "a person"}) for d in ("literature", "politics")}
    for domain, surface in (("literature", first), ("politics", second)):
        typing = stage_lms(calibrator=[{"label": "person"}])
        program = RecordedDiscovery(spans, str(path), lms=typing, calibration="entity", trust_anchor_types=False)
        output = tmp_path / f"{domain}.jsonl"
        run(program, [Item(domain, 0, sentence)], schemas, output, threads=1)
        (record,) = read_results(output)
        assert [e["text"] for e in record["entities"]] == [surface]


def test_records_without_a_grounding_stage_are_refused(tmp_path):
    path = tmp_path / "direct.jsonl"
    record = {"key": "music:0", "domain": "music", "index": 0, "text": TEXT, "entities": []}
    path.write_text(json.dumps({**record, "trace": {"stages": [{"stage": "direct"}]}}) + "\n")
    with pytest.raises(SamnerError, match="no grounding stage"):
        recorded_spans(path)


def test_on_gold_spans_the_report_gives_the_archetype_accuracy_by_the_written_table(tmp_path):
    """Every gold span is typed and none discovered; the report scores the archetypes against
    ``crossner_archetypes.json``, counting a span the calibrator then dropped, each occurrence on its own."""
    from samner_dspy.archetypes import crossner_archetype
    from samner_dspy.evals.report import markdown, summarize
    from samner_dspy.evals.retype import gold_spans
    from samner_dspy.formats.labelled import GoldEntity, Sentence

    text = "Bob Dylan played in Nashville and Bob Dylan sang"
    gold = (GoldEntity("Bob Dylan", "musical artist", 0, 9), GoldEntity("Nashville", "location", 20, 29))
    gold += (GoldEntity("Bob Dylan", "musical artist", 34, 43),)
    items = [Item("music", 0, Sentence(tuple(text.split()), (), text, gold))]
    assert crossner_archetype("music", "musical artist") == crossner_archetype("music", "musicalartist") == "Person"
    lms = stage_lms(
        archetype=[{"archetypes": {"Bob Dylan": "Person", "Nashville": "Person", "Bob Dylan (2)": "Organization"}}],
        calibrator=[{"labels": {"Bob Dylan": "musical artist", "Bob Dylan (2)": "band", "Nashville": "nowhere"}}],
    )
    program = RecordedDiscovery(gold_spans(items), "gold", lms=lms)
    output = tmp_path / "samner.jsonl"
    assert run(program, items, {"music": Schema.from_name("crossner:music")}, output, threads=1) == 1
    records = list(read_results(output))
    assert lms["anchor"].history == [] and lms["explorer"].history == [], "discovery was given, not asked"
    assert "Nashville" not in [e["text"] for e in records[0]["entities"]], "the calibrator dropped it"
    summary = summarize({"samner": records}, against=())
    assert summary["samner"]["archetype_accuracy"]["music"] == {
        "matched": 3,
        "correct": 1,
        "accuracy": 1 / 3,
        "errors": {"Location -> Person": 1, "Person -> Organization": 1},
    }
    assert "| 33.3 (3) | 33.3 |" in markdown(summary, "gold spans", "samner eval")


def test_samner_eval_types_the_gold_spans_of_a_data_file_without_discovery(tmp_path):
    import subprocess
    import sys

    from samner_dspy.serving.stand_in import stand_in_server

    data = tmp_path / "mine.jsonl"
    data.write_text(json.dumps({"text": "Ada met Zoë.", "entities": [[0, 3, "person"], [8, 11, "person"]]}) + "\n")
    out = tmp_path / "results"
    with stand_in_server() as api_base:
        config = tmp_path / "samner.toml"
        config.write_text(f'[defaults]\napi_base = "{api_base}"\n', encoding="utf-8")
        command = [sys.executable, "-m", "samner_dspy.cli", "eval", "--data-file", data, "--schema", "person,city"]
        command += ["--config", config, "--output-dir", out, "--no-cache", "--threads", "1", "--configs", "samner"]
        done = subprocess.run([*map(str, command), "--discovery-from", "gold"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    (record,) = read_results(out / "samner.jsonl")
    stages = {s["stage"]: s for s in record["trace"]["stages"]}
    assert "anchor" not in stages and "explorer" not in stages
    assert stages["grounding"]["outputs"]["spans"] == [[0, 3, "Ada", "exact"], [8, 11, "Zoë", "exact"]]
    assert "typing the gold spans" in (out / "report.md").read_text()


def test_the_report_scores_each_discovery_stage_on_its_own_spans(tmp_path):
    """The anchor's and the explorer's mentions are located in the text and scored alone, spans only, beside what
    consensus kept: an unlocatable mention counts nothing, each occurrence counts once."""
    from samner_dspy.evals.report import markdown, summarize
    from samner_dspy.formats.labelled import GoldEntity, Sentence

    text = "Bob Dylan played in Nashville and Bob Dylan sang"
    gold = (GoldEntity("Bob Dylan", "musical artist", 0, 9), GoldEntity("Nashville", "location", 20, 29))
    gold += (GoldEntity("Bob Dylan", "musical artist", 34, 43),)
    items = [Item("music", 0, Sentence(tuple(text.split()), (), text, gold))]
    lms = stage_lms(
        anchor=[{"entities": {"musical artist": ["Bob Dylan"], "song": ["sang"]}}],
        explorer=[{"entities": {"location": ["Nashville"], "person": ["Bob"], "musical artist": ["Elvis"]}}],
        archetype=[{"archetypes": {}}],
        calibrator=[{"labels": {}}],
    )
    output = tmp_path / "samner.jsonl"
    program = SAMNER(lms=lms, preset="paper", ccr="off")
    assert run(program, items, {"music": Schema.from_name("crossner:music")}, output, threads=1) == 1
    summary = summarize({"samner": list(read_results(output))}, against=())
    by_stage = summary["samner"]["discovery_by_stage"]
    counts = {stage: {k: by_stage[stage]["music"][k] for k in ("tp", "fp", "fn")} for stage in by_stage}
    assert counts["anchor"] == {"tp": 2, "fp": 1, "fn": 1}  # both Bob Dylans, and "sang"
    assert counts["explorer"] == {"tp": 1, "fp": 2, "fn": 2}  # Nashville, and two "Bob"s; Elvis is not in the text
    # With consensus off every located mention is kept; the longer "Bob Dylan" wins over "Bob".
    assert counts["grounding"] == {"tp": 3, "fp": 1, "fn": 0}
    table = markdown(summary, "stages", "samner eval")
    assert "| SAM-NER, paper's preset: explorer alone | 33.3 / 33.3 | 33.3 / 33.3 |" in table


def test_a_trained_row_types_recorded_spans_with_its_adapters(crossner_dir, tmp_path, monkeypatch):
    """``--discovery-from`` replaces a row's discovery, not its trained stages: the typing is the row's own."""
    from samner_dspy.config import SamnerConfig
    from samner_dspy.evals import retype
    from samner_dspy.evals.evaluate import Data, evaluate
    from samner_dspy.serving import trained as trained_module

    model = trained_adapter_folders(tmp_path, "anchor", "archetype-mix")
    monkeypatch.setattr(trained_module, "TRAINED_ADAPTERS", tmp_path)
    built = []

    class Built(Exception):
        pass

    def record(spans, source, config, **options):
        built.append((config, options))
        raise Built

    monkeypatch.setattr(retype, "RecordedDiscovery", record)
    data = Data("music", limit=1, crossner_dir=str(crossner_dir))
    with pytest.raises(Built):
        evaluate(
            ["anchor-trained-matched"],
            data,
            tmp_path / "out",
            SamnerConfig.embedded(trained=False),
            discovery_from="gold",
        )
    ((config, options),) = built
    assert config.archetype.adapter == str(model / "archetype-mix")
    assert options["calibration"] == "matched"
