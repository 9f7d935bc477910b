"""The HTML view without a browser: escaping, one mark per entity at the right offsets, details, CLI."""

import json
import re
from pathlib import Path

import pytest

from samner_dspy import SAMNER
from samner_dspy.cli import main
from samner_dspy.evals.review import judge, report_tables
from samner_dspy.formats.view import label_colours, page_data, render_html, segments
from samner_dspy.types import Document
from tests.helpers import stage_lms

HOSTILE = "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script> Bob & </script>"
NON_ASCII = "Zoë met Zoë in São Paulo."


def stage(name, **fields):
    return {"stage": name, "model": "m", "requests": 1, "latency_s": 0.25, "dropped": [], "repaired": [], **fields}


def record(text, entities, **extra):
    return {"index": 0, "text": text, "entities": entities, "trace": {"stages": [stage("anchor")]}, **extra}


def entity(text, sentence, label, start=None, **extra):
    start = sentence.index(text) if start is None else start
    return {"text": text, "label": label, "start": start, "end": start + len(text), "sources": ["anchor"], **extra}


def data_block(html):
    """The JSON the page embeds, and the raw text of its script block."""
    match = re.search(r'<script type="application/json" id="samner-data">(.*?)</script>', html, re.S)
    assert match, "the page embeds its data block"
    return json.loads(match.group(1)), match.group(1)


def marked(rows):
    return [piece["t"] for row in rows for piece in row if "m" in piece]


def test_segments_mark_every_span_once_at_python_offsets_even_when_spans_overlap():
    text = "Zoë met Zoë in São Paulo 🎉 today."
    spans = [(0, 3), (8, 11), (15, 24), (15, 18), (25, 26)]
    rows = segments(text, spans)
    assert [row for row in rows[0]] == [
        {"t": "Zoë", "m": 0},
        {"t": " met "},
        {"t": "Zoë", "m": 1},
        {"t": " in "},
        {"t": "São Paulo", "m": 2},
        {"t": " "},
        {"t": "🎉", "m": 4},
        {"t": " today."},
    ]
    assert "".join(piece["t"] for piece in rows[0]) == text, "each row is the whole text"
    assert marked(rows[1:]) == ["São"], "the overlapping span gets its own row, not dropped"
    assert sorted(piece["m"] for row in rows for piece in row if "m" in piece) == [0, 1, 2, 3, 4]


def test_hostile_text_is_data_never_markup():
    sentence = HOSTILE
    html = render_html([record(sentence, [entity("Bob", sentence, "<b>person</b>")])])
    data, raw = data_block(html)
    assert "<" not in raw and ">" not in raw and "&" not in raw, "nothing in the data block can end it"
    assert html.count("</script>") == 2 and html.count("<script") == 2, "only the page's own two script blocks"
    assert "onerror" not in html.replace(raw, ""), "the hostile attribute exists only inside the JSON string"
    assert "".join(p["t"] for p in data["records"][0]["rows"][0]) == sentence, "the text survives intact"
    assert data["records"][0]["entities"][0]["label"] == "<b>person</b>"
    script = html[html.index("<script>") :]
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "document.write" not in script
    assert "Content-Security-Policy" in html and "http://" not in html and "https://" not in html


def test_one_mark_per_entity_with_its_text_in_order():
    sentence = NON_ASCII
    entities = [
        entity("Zoë", sentence, "person", 0),
        entity("Zoë", sentence, "person", 8),
        entity("São Paulo", sentence, "city"),
    ]
    data = page_data([record(sentence, entities)])
    rows = data["records"][0]["rows"]
    assert len(rows) == 1 and marked(rows) == ["Zoë", "Zoë", "São Paulo"]
    assert [p["m"] for p in rows[0] if "m" in p] == [0, 1, 2]
    assert data["colours"] == label_colours(["city", "person"])
    assert data["colours"]["city"] != data["colours"]["person"]


def test_entity_offsets_outside_the_text_are_refused():
    from samner_dspy.errors import SamnerError

    with pytest.raises(SamnerError, match="offsets outside the text"):
        page_data([record("short", [{"text": "x", "label": "a", "start": 3, "end": 40}])])


def test_details_explain_consensus_calibration_and_score_from_the_trace():
    sentence = "Ada met Bob."
    trace = {
        "stages": [
            stage(
                "consensus",
                inputs={"mode": "verify", "noise_rule": {"max_words": 1}},
                outputs={
                    "verified": ["bob"],
                    "decisions": {"bob": "the anchor confirmed it on verification"},
                    "evidence": {"bob": 0.95},
                },
            ),
            stage("archetype", outputs={"archetypes": {"Bob": "Person"}, "probabilities": {"Bob": 0.5}}),
            stage(
                "calibrator",
                inputs={"mode": "sentence"},
                outputs={"labels": {"Bob": "person"}, "probabilities": {"Bob": 0.25}},
                dropped=[{"item": "Atlantis", "reason": "not found in the text"}],
            ),
        ]
    }
    bob = {"text": "Bob", "label": "person", "start": 8, "end": 11, "archetype": "Person", "sources": ["explorer"]}
    data = page_data([{"text": sentence, "entities": [bob], "trace": trace}])
    details = dict(data["records"][0]["entities"][0]["details"])
    assert details["consensus"] == "kept: the anchor confirmed it on verification"
    assert details["calibration"] == "definition-guided calibration, sentence mode chose 'person' (p = 0.250)"
    assert details["archetype"] == "Person (p = 0.500)"
    assert details["score"].startswith("0.95 (evidence only"), "an unscored record gets its evidence term back"
    rows = data["records"][0]["traces"][0]["rows"]
    assert [row[0] for row in rows] == ["consensus", "archetype", "calibrator"]
    assert rows[2][5] == "Atlantis: not found in the text" and rows[2][3] == "0.25 s"


def test_judge_marks_false_positives_misses_and_wrong_labels():
    sentence = "Ada met Bob in Paris."
    judged = judge(
        {
            "text": sentence,
            "gold": [[0, 3, "person"], [8, 11, "person"], [15, 20, "city"]],
            "entities": [
                entity("Ada", sentence, "person"),
                entity("Bob", sentence, "city"),
                entity("met", sentence, "person"),
            ],
        }
    )
    assert [(e["text"], e["verdict"]) for e in judged["entities"]] == [("Ada", "ok"), ("Bob", "label"), ("met", "fp")]
    assert judged["entities"][1]["gold_label"] == "person"
    assert [g["verdict"] for g in judged["gold"]] == ["ok", "label", "fn"]
    data = page_data([judged])
    assert data["evaluation"] and marked(data["records"][0]["gold_rows"]) == ["Ada", "Bob", "Paris"]
    assert dict(data["records"][0]["entities"][1]["details"])["evaluation"] == "wrong label (gold: person)"


def eval_record(sentence, domain, gold, entities, key):
    return {**record(sentence, entities), "key": key, "domain": domain, "gold": gold}


def test_cli_view_of_an_eval_run_has_gold_filters_and_the_report(tmp_path, capsys):
    from samner_dspy.evals import report

    records = [
        eval_record("Ada met Bob.", "ai", [[0, 3, "person"]], [entity("Bob", "Ada met Bob.", "person")], "ai:0"),
        eval_record("Paris.", "music", [[0, 5, "city"]], [entity("Paris", "Paris.", "city")], "music:0"),
    ]
    path = tmp_path / "samner.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"torn', encoding="utf-8")
    report.write(report.summarize({"samner": records}), tmp_path, "test", "samner eval")
    out = tmp_path / "view.html"
    assert main(["view", str(path), "-o", str(out)]) == 0
    data, _ = data_block(out.read_text(encoding="utf-8"))
    assert data["domains"] == ["ai", "music"] and data["labels"] == ["city", "person"]
    assert [t["title"] for t in data["tables"]] == [
        "Strict micro-F1 (span and label must match)",
        "Discovery: span F1 ignoring labels",
    ]
    assert data["tables"][0]["rows"] == [["SAM-NER, paper's preset", "0.0", "100.0", "50.0"]]
    assert [[g["verdict"] for g in r["gold"]] for r in data["records"]] == [["fn"], ["ok"]]
    assert [e["verdict"] for r in data["records"] for e in r["entities"]] == ["fp", "ok"]
    assert report_tables(tmp_path / "report.json")[0]["header"] == ["Method", "AI", "Music", "Avg."]


def test_cli_view_errors_on_a_missing_or_bad_file(tmp_path, capsys):
    assert main(["view", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "v.html")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"entities": []}\n', encoding="utf-8")
    assert main(["view", str(bad)]) == 2
    assert "line 1: expected an object with a string 'text'" in capsys.readouterr().err
    assert not (tmp_path / "v.html").exists() and not bad.with_suffix(".html").exists()


def test_cli_view_of_a_document_record_uses_each_window_trace(tmp_path):
    text = "Ada met Bob. Then Bob left."
    doc = {
        "index": 0,
        "text": text,
        "entities": [entity("Bob", text, "person", 18)],
        "windows": [[0, 12], [13, 27]],
        "traces": [{"stages": [stage("anchor")]}, {"stages": [stage("calibrator", outputs={"labels": {"Bob": "x"}})]}],
        "errors": ["window 30:40: boom"],
    }
    path = tmp_path / "doc.jsonl"
    path.write_text(json.dumps(doc) + "\n", encoding="utf-8")
    assert main(["view", str(path)]) == 0
    data, _ = data_block(Path(tmp_path / "doc.html").read_text(encoding="utf-8"))
    item = data["records"][0]
    assert [t["caption"] for t in item["traces"]] == ["window 0:12", "window 13:27"]
    assert dict(item["entities"][0]["details"])["calibration"] == "definition-guided calibration chose 'x'"
    assert item["errors"] == ["window 30:40: boom"]


def test_prediction_to_html_holds_its_text_entities_and_trace():
    text = "Zoë met Zoë in São Paulo."
    lms = stage_lms(
        anchor=[{"entities": {"person": ["Zoë"], "city": ["São Paulo"]}}],
        explorer=[{"entities": {"person": ["Zoë"]}}],
        archetype=[{"archetypes": {"Zoë": "Person", "São Paulo": "Location"}}],
        calibrator=[{"labels": {"Zoë": "person", "São Paulo": "city"}}],
    )
    result = SAMNER(lms=lms)(text, {"person": "a person", "city": "a city"})
    assert isinstance(result, Document) and result.text == text
    data, _ = data_block(result.to_html())
    item = data["records"][0]
    assert marked(item["rows"]) == ["Zoë", "Zoë", "São Paulo"]
    assert [row[0] for row in item["traces"][0]["rows"]][:2] == ["anchor", "explorer"]
    assert dict(item["entities"][0]["details"])["consensus"] == "kept: both extractors proposed it"
    with pytest.raises(ValueError, match="does not hold its text"):
        Document(entities=[], trace=None).to_html()


def test_verification_is_traced_so_the_view_can_say_why_a_mention_was_kept():
    lms = stage_lms(
        anchor=[{"entities": {"person": []}}, '{"confirmed": ["Ada"]}'],
        explorer=[{"entities": {"person": ["Ada", "Bob Smith"]}}],
        archetype=[{"archetypes": {"Ada": "Person", "Bob Smith": "Person"}}],
        calibrator=[{"labels": {"Ada": "person", "Bob Smith": "person"}}],
    )
    result = SAMNER(lms=lms, ccr="verify")("Ada met Bob Smith.", {"person": "a person"})
    assert result.trace["consensus"].outputs["verified"] == ["Ada"]
    details = [dict(e["details"]) for e in data_block(result.to_html())[0]["records"][0]["entities"]]
    assert [d["consensus"] for d in details] == [
        "kept: the anchor confirmed it on verification",
        "kept: explorer only, not noise-prone (more than 1 word(s))",
    ]


def test_an_entity_in_a_window_overlap_shows_the_window_whose_core_kept_it():
    """Windows 0:20 and 10:30 overlap on 10:20; their cores meet at 15. An entity at 17:20 lies in both windows,
    and the merge keeps it from the second: its details come from the second window's trace, not the first."""
    text = "aaaa bbbb cccc d Bob eeee ffff"
    bob = entity("Bob", text, "person", 17)
    assert bob["end"] <= 20 and (bob["start"] + bob["end"]) // 2 >= 15, "inside both windows, in the second core"
    first = {"stages": [stage("calibrator", outputs={"labels": {"Bob": "first"}})]}
    second = {"stages": [stage("calibrator", outputs={"labels": {"Bob": "second"}})]}
    windows = [{"start": 0, "end": 20, "trace": first, "error": None}, {"start": 10, "end": 30, "trace": second}]
    data = page_data([{"index": 0, "text": text, "entities": [bob], "trace": {"stages": [], "windows": windows}}])
    assert dict(data["records"][0]["entities"][0]["details"])["calibration"] == (
        "definition-guided calibration chose 'second'"
    )


def test_a_label_the_anchor_set_is_shown_as_the_anchors_not_the_calibrators():
    """With trust_anchor_types, a mention the anchor filed under one label keeps it without a typing request;
    the calibrator typed the other one. The entities say who typed them, and the view follows."""
    text = "Ada met Bob."
    lms = stage_lms(
        anchor=[{"entities": {"person": ["Ada"], "misc": ["Bob"], "city": ["Bob"]}}],
        explorer=[{"entities": {}}],
        archetype=[{"archetypes": {"Ada": "Person", "Bob": "Person"}}],
        calibrator=[{"label": "person"}],
    )
    schema = {"person": "a person", "city": "a city", "misc": "anything else"}
    result = SAMNER(lms=lms, preset="small", ccr="off")(text, schema)
    assert [(e.text, e.label, e.typed_by) for e in result.entities] == [
        ("Ada", "person", "anchor"),
        ("Bob", "person", "calibrator"),
    ]
    data, _ = data_block(result.to_html())
    details = [dict(e["details"])["calibration"] for e in data["records"][0]["entities"]]
    assert details[0] == "the anchor filed it under 'person'; no typing request"
    assert details[1].startswith("definition-guided calibration, entity mode chose 'person'")


def test_a_windowed_trace_says_where_its_stages_are():
    from samner_dspy.tracing import StageRecord, Trace, WindowTrace

    trace = Trace(windows=[WindowTrace(0, 10, Trace([StageRecord("anchor")])), WindowTrace(5, 20)])
    with pytest.raises(KeyError, match=r"2 windows, each with its own stages \(trace.windows\[i\].trace\[stage\]\)"):
        trace["calibrator"]
    assert trace.windows[0].trace["anchor"].stage == "anchor"
