"""Choosing labels: ``restrict_labels`` (a span among its archetype's labels) and ``calibration="matched"``."""

import json

from samner_dspy import SAMNER
from samner_dspy.programs.archetype import label_text
from samner_dspy.programs.labels import labels_of_archetype
from samner_dspy.schema import Schema
from tests.helpers import stage_lms

SCHEMA = {
    "person": "a named person who is not a politician",
    "politician": "a named person who holds or seeks office",
    "city": "a named city",
    "organisation": "a named company or agency",
}
LABEL_ARCHETYPES = {"person": "Person", "politician": "Person", "city": "Location", "organisation": "Organization"}
TEXT = "Ada met Bob in Paris at Acme."


def _discovery(n: int = 1) -> dict:
    return {
        "anchor": [{"entities": {"person": ["Ada", "Bob"], "city": ["Paris"], "organisation": ["Acme"]}}] * n,
        "explorer": [{"entities": {"person": ["Ada", "Bob"], "city": ["Paris"], "organisation": ["Acme"]}}] * n,
    }


def _sentence_archetypes(bob: str = "Person") -> dict:
    return {"archetypes": {"Ada": "Person", "Bob": bob, "Paris": "Location", "Acme": "Organization"}}


def _last_prompt(lm) -> str:
    return json.dumps(lm.history[-1]["messages"], ensure_ascii=False)


def test_label_text_places_each_label_where_the_stage_tags_it():
    text, spans = label_text(Schema(SCHEMA))
    assert [text[s.start : s.end] for s in spans] == list(SCHEMA)
    assert text.splitlines()[1] == "politician: a named person who holds or seeks office"


def test_labels_of_archetype_falls_back_to_every_label_and_keeps_none_shown():
    definitions = {"person": "", "city": "", "none": ""}
    assert labels_of_archetype(definitions, {"person": "Person", "city": "Location"}, "Person") == ["person", "none"]
    assert labels_of_archetype(definitions, {"person": "Person", "city": "Location"}, "Event") == list(definitions)
    assert labels_of_archetype(definitions, None, "Person") == list(definitions)


def test_a_span_is_typed_among_its_archetypes_labels_and_a_lone_label_needs_no_request():
    lms = stage_lms(
        **_discovery(),
        archetype=[_sentence_archetypes(), {"archetypes": LABEL_ARCHETYPES}],
        calibrator=[{"labels": {"Ada": "politician", "Bob": "person"}}],
    )
    result = SAMNER(lms=lms, preset="paper", restrict_labels=True)(TEXT, SCHEMA)
    got = {(e.text, e.label, e.typed_by) for e in result.entities}
    assert got == {
        ("Ada", "politician", "calibrator"),
        ("Bob", "person", "calibrator"),
        ("Paris", "city", "archetype"),
        ("Acme", "organisation", "archetype"),
    }
    prompt = _last_prompt(lms["calibrator"])
    assert "holds or seeks office" in prompt and "a named city" not in prompt, "only the Person labels are shown"
    assert result.trace["calibrator"].inputs["by_archetype"] == {"Paris": "city", "Acme": "organisation"}
    assert result.trace["label_archetypes"].outputs["archetypes"] == LABEL_ARCHETYPES
    assert result.trace["label_archetypes"].requests == 1


def test_the_labels_are_classified_once_per_schema_and_a_failed_answer_is_asked_again():
    lms = stage_lms(
        **_discovery(3),
        archetype=[
            _sentence_archetypes(),
            "not json at all",
            _sentence_archetypes(),
            {"archetypes": LABEL_ARCHETYPES},
            _sentence_archetypes(),
        ],
        calibrator=[{"labels": {"Ada": "person", "Bob": "person", "Paris": "city", "Acme": "organisation"}}]
        + [{"labels": {"Ada": "person", "Bob": "person"}}] * 2,
    )
    program = SAMNER(lms=lms, preset="paper", restrict_labels=True)
    first, second, third = (program(TEXT, SCHEMA) for _ in range(3))
    assert first.trace["label_archetypes"].error is not None
    assert first.trace["calibrator"].inputs["by_archetype"] == {}, "unknown label archetypes restrict nothing"
    assert second.trace["label_archetypes"].requests == 1
    assert third.trace["label_archetypes"].requests == 0 and third.trace["label_archetypes"].inputs == {"cached": True}
    assert {e.text: e.label for e in third.entities} == {
        "Ada": "person",
        "Bob": "person",
        "Paris": "city",
        "Acme": "organisation",
    }
    assert len(lms["archetype"].history) == 5


def test_per_entity_calibration_asks_only_about_spans_with_several_labels_and_falls_back_to_all():
    lms = stage_lms(
        **_discovery(),
        archetype=[_sentence_archetypes(bob="Event"), {"archetypes": LABEL_ARCHETYPES}],
        calibrator=[{"label": "person"}, {"label": "organisation"}],
    )
    result = SAMNER(lms=lms, preset="paper", calibration="entity", restrict_labels=True)(TEXT, SCHEMA)
    assert {e.text: (e.label, e.typed_by) for e in result.entities} == {
        "Ada": ("person", "calibrator"),
        "Bob": ("organisation", "calibrator"),
        "Paris": ("city", "archetype"),
        "Acme": ("organisation", "archetype"),
    }
    assert result.trace["calibrator"].requests == 2
    assert "a named city" in _last_prompt(lms["calibrator"]), "an archetype no label has is asked over all labels"


def test_without_restrict_labels_the_schema_is_not_classified():
    lms = stage_lms(
        **_discovery(),
        archetype=[_sentence_archetypes()],
        calibrator=[{"labels": {"Ada": "person", "Bob": "person", "Paris": "city", "Acme": "organisation"}}],
    )
    result = SAMNER(lms=lms, preset="paper")(TEXT, SCHEMA)
    assert "label_archetypes" not in result.trace
    assert {e.typed_by for e in result.entities} == {"calibrator"}


def test_matched_calibration_types_with_the_archetype_prompt_over_the_label_definitions():
    lms = stage_lms(
        **_discovery(),
        archetype=[
            _sentence_archetypes(),
            {"archetypes": {"Ada": "politician", "Bob": "person", "Paris": "city", "Acme": "Organization"}},
        ],
    )
    result = SAMNER(lms=lms, preset="paper", calibration="matched")(TEXT, SCHEMA)
    assert {e.text: (e.label, e.typed_by, e.archetype) for e in result.entities} == {
        "Ada": ("politician", "matcher", "Person"),
        "Bob": ("person", "matcher", "Person"),
        "Paris": ("city", "matcher", "Location"),
    }, "an answer outside the schema (an archetype) is dropped, not returned"
    assert result.trace["matcher"].dropped[0].item == "Acme"
    prompt = _last_prompt(lms["archetype"])
    assert "holds or seeks office" in prompt and "<ENT>Acme</ENT>" in prompt, "labels in the archetypes' place"
    assert "calibrator" not in result.trace and len(lms["calibrator"].history) == 0
