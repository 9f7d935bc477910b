"""Locate once, label spans: each mention is located once, keeps how it matched, and every occurrence of a
repeated string gets its own archetype and label; a text with no repeated string is asked exactly as before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from samner_dspy import SAMNER, SamnerConfig
from samner_dspy.serving.stand_in import Recorder, Reply, stand_in_server
from samner_dspy.types import Span
from tests.helpers import stage_lms

REQUESTS = Path(__file__).parent / "fixtures" / "requests_without_repeats.json"
"""Every request the program sent for TEXT before spans carried their labels (recorded at commit decddd8)."""
TEXT = "Ada Lovelace met Charles  Babbage in London; she wrote notes."
SCHEMA = {"person": "a named person", "city": "a named city"}
MODES = {
    "sentence": {},
    "entity": {"calibration": "entity"},
    "off": {"calibration": "off"},
    "verify": {"ccr": "verify"},
}


def extractions(request: dict, number: int) -> Reply | None:
    """Extractors that find each mention spelled another way (case, spacing); the other stages answer by schema."""
    properties = request["response_format"]["json_schema"]["schema"]["properties"]
    if request["model"] == "anchor" and "confirmed" not in properties:
        return Reply(content=json.dumps({"person": ["Ada Lovelace", "Charles Babbage"], "city": ["London"]}))
    if request["model"] == "explorer":
        entities = {"person": ["ada lovelace", "Lovelace"], "city": ["London", "Paris", "Notes"]}
        return Reply(content=json.dumps({"entities": entities}))
    return None


def requests_sent(options: dict) -> list[str]:
    """The requests (whole bodies) the program sends for TEXT, in a stable order (the extractors run together)."""
    Recorder.requests.clear()
    with stand_in_server(script=extractions) as api_base:
        result = SAMNER(SamnerConfig.vllm(api_base), **options)(TEXT, SCHEMA)
        sent = sorted(json.dumps(request, sort_keys=True, ensure_ascii=False) for request in Recorder.requests)
    assert result.entities, "the script makes the program find entities"
    return sent


def record_requests() -> None:
    """Write the fixture (run once, on the code whose requests are the reference)."""
    REQUESTS.write_text(json.dumps({mode: requests_sent(o) for mode, o in MODES.items()}, indent=1) + "\n")


@pytest.mark.parametrize("mode", MODES)
def test_a_text_without_repeated_strings_is_asked_exactly_as_before(mode):
    assert requests_sent(MODES[mode]) == json.loads(REQUESTS.read_text())[mode]


def test_each_entity_keeps_how_its_string_matched_the_text():
    with stand_in_server(script=extractions) as api_base:
        result = SAMNER(SamnerConfig.vllm(api_base), ccr="off")(TEXT, SCHEMA)
    found = {(e.text, e.start, e.alignment_status) for e in result.entities}
    assert found == {
        ("Ada Lovelace", 0, "exact"),
        ("Charles  Babbage", 17, "whitespace"),
        ("London", 37, "exact"),
        ("notes", 55, "case"),  # the explorer's "Notes"
    }
    assert all(TEXT[e.start : e.end] == e.text for e in result.entities)
    spans = result.trace["grounding"].outputs["spans"]
    assert [s[3] for s in spans] == ["exact", "whitespace", "exact", "case"]
    assert result.entities[0].to_dict()["alignment_status"] == "exact"


WASHINGTON = "Washington crossed the river before Washington became a state."


def washington_lms(calibrator: list) -> dict:
    return stage_lms(
        anchor=[{"entities": {"person": ["Washington"], "state": ["Washington"]}}],
        explorer=[{"entities": {}}],
        archetype=[{"archetypes": {"Washington": "Person", "Washington (2)": "Location"}}],
        calibrator=calibrator,
    )


@pytest.mark.parametrize(
    ("calibration", "answers"),
    [
        ("sentence", [{"labels": {"Washington": "person", "Washington (2)": "state"}}]),
        ("entity", [{"label": "person"}, {"label": "state"}]),
        ("off", [{"labels": {"Washington": "person", "Washington (2)": "state"}}]),
    ],
)
def test_two_occurrences_of_one_string_get_two_labels(calibration, answers):
    lms = washington_lms(answers)
    result = SAMNER(lms=lms, calibration=calibration)(WASHINGTON, {"person": "a person", "state": "a state"})

    archetypes = ("Person", "Location") if calibration != "off" else (None, None)
    assert [(e.text, e.label, e.start, e.end, e.archetype) for e in result.entities] == [
        ("Washington", "person", 0, 10, archetypes[0]),
        ("Washington", "state", 36, 46, archetypes[1]),
    ]
    assert all(WASHINGTON[e.start : e.end] == e.text for e in result.entities)
    asked = lms["calibrator"].history[-1]["messages"][-1]["content"]
    assert "before Washington (2) became" in asked, "the typing prompt's text tells the occurrences apart"
    if calibration != "off":
        tagged = result.trace["archetype"].inputs["tagged_text"]
        assert tagged == "<ENT>Washington</ENT> crossed the river before <ENT>Washington (2)</ENT> became a state."
        assert result.trace["archetype"].inputs["entities"] == ["Washington", "Washington (2)"]


def test_occurrence_keys_name_repeats_and_never_collide():
    from samner_dspy.tagging import name_occurrences, occurrence_keys, tag_entities  # here: the fixture's

    # generator imports this module on the code before these existed
    spans = [Span(0, 1, "a"), Span(2, 3, "a"), Span(4, 9, "a (2)"), Span(10, 11, "a")]
    assert occurrence_keys(spans) == ["a", "a (3)", "a (2)", "a (4)"]
    assert occurrence_keys([Span(0, 3, "Ada"), Span(8, 11, "Bob")]) == ["Ada", "Bob"]
    text = "x Ada y Ada"
    spans = [Span(2, 5, "Ada"), Span(8, 11, "Ada")]
    keys = occurrence_keys(spans)
    assert tag_entities(text, spans, keys) == "x <ENT>Ada</ENT> y <ENT>Ada (2)</ENT>"
    assert name_occurrences(text, spans, keys) == "x Ada y Ada (2)"
    assert name_occurrences(text, spans, [s.text for s in spans]) == text


def test_the_view_shows_each_occurrence_its_own_label_and_probability():
    from samner_dspy.formats.view import entity_details

    grounding = {"stage": "grounding", "outputs": {"spans": [[0, 10, "Washington", "exact"], [36, 46, "Washington"]]}}
    archetype = {"stage": "archetype", "outputs": {"probabilities": {"Washington": 0.9, "Washington (2)": 0.4}}}
    labels = {"labels": {"Washington": "person", "Washington (2)": "state"}}
    calibrator = {"stage": "calibrator", "inputs": {"mode": "sentence"}, "outputs": labels}
    trace = {"stages": [grounding, archetype, calibrator]}
    second = {"text": "Washington", "label": "state", "start": 46, "end": 56, "archetype": "Location"}
    details = dict(entity_details({**second, "alignment_status": "exact"}, trace, offset=10))
    assert details["archetype"] == "Location (p = 0.400)"
    assert details["calibration"] == "definition-guided calibration, sentence mode chose 'state'"
    assert details["alignment"] == "exact"
    first = dict(entity_details({**second, "start": 0, "end": 10, "label": "person"}, trace))
    assert first["archetype"] == "Location (p = 0.900)" and "chose 'person'" in first["calibration"]


def test_the_builder_can_name_each_occurrence_as_the_program_asks():
    from collections import Counter

    from samner_dspy.training.builders import iepile_example

    text = "Paris is big and Paris is old."
    instruction = {"instruction": "Extract entities.", "schema": ["location"], "input": text}
    record = {"task": "NER", "source": "t", "instruction": json.dumps(instruction), "output": '{"location": ["Paris"]}'}
    each = iepile_example(record, Counter(), occurrences="each")
    assert each.inputs["tagged_text"] == "<ENT>Paris</ENT> is big and <ENT>Paris (2)</ENT> is old."
    assert each.inputs["entities"] == ["Paris", "Paris (2)"]
    assert each.outputs == {"archetypes": {"Paris": "Location", "Paris (2)": "Location"}}
