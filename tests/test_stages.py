"""Each LM stage on its own, with scripted replies: constraints sent, answers repaired or dropped, failures kept."""

import pytest

from samner_dspy.backends import StageBackend
from samner_dspy.programs import ArchetypeClassifier, DirectTyper, SpanExtractor, TypeCalibrator
from samner_dspy.schema import Schema
from samner_dspy.types import Span
from tests.helpers import ScriptedLM

SCHEMA = Schema.coerce({"researcher": "a scientist", "university": "a university", "location": "a place"})
TEXT = "Hinton moved from Edinburgh to the University of Toronto; Hinton stayed."


def backend(lm, dialect="json_schema"):
    return StageBackend("stage", lm, "dummy-model", None, dialect)


def sent_schema(lm):
    return lm.history[-1]["kwargs"]["response_format"]["json_schema"]["schema"]


def test_a_stage_alone_asks_to_be_bound_to_a_backend():
    with pytest.raises(RuntimeError, match=r"the explorer stage has no backend.*\.bind\(backend\)"):
        SpanExtractor("explorer")(text=TEXT, schema=SCHEMA)


def test_extractor_grounds_strings_and_drops_hallucinations():
    lm = ScriptedLM([{"entities": {"researcher": ["Hinton", "LeCun"], "university": ["university of toronto"]}}])
    result = SpanExtractor("explorer").bind(backend(lm))(text=TEXT, schema=SCHEMA)
    assert [(c.surface, c.types) for c in result.candidates] == [
        ("Hinton", ("researcher",)),
        ("University of Toronto", ("university",)),
    ]
    assert [(d.item, d.reason) for d in result.record.dropped] == [("LeCun", "not found in the text as a whole word")]
    assert result.record.requests == 1 and result.record.model == "dummy-model"
    properties = sent_schema(lm)["properties"]["entities"]["properties"]
    assert list(properties) == SCHEMA.labels


def test_anchor_uses_the_iepile_format_and_splits_large_schemas():
    replies = [{"entities": {"researcher": ["Hinton"], "university": []}}, {"entities": {"location": ["Edinburgh"]}}]
    lm = ScriptedLM(replies, iepile=True)
    from samner_dspy.adapters import IEPileAdapter

    extractor = SpanExtractor("anchor", IEPileAdapter(), max_types_per_request=2)
    result = extractor.bind(backend(lm, "llama_cpp"))(text=TEXT, schema=SCHEMA)
    assert [c.surface for c in result.candidates] == ["Hinton", "Edinburgh"]
    assert result.record.requests == 2
    assert '"schema": ["location"]' in lm.history[-1]["messages"][-1]["content"]
    sent = lm.history[-1]["kwargs"]["response_format"]
    assert sent["type"] == "json_object" and list(sent["schema"]["properties"]) == ["location"]


def test_unparseable_reply_is_recorded_with_its_raw_text_and_the_stage_goes_on():
    lm = ScriptedLM(["Sure! The entities are Hinton and Toronto."])
    result = SpanExtractor("explorer").bind(backend(lm))(text=TEXT, schema=SCHEMA)
    assert result.candidates == []
    assert "unparseable reply" in result.record.error
    assert result.record.raw_reply == "Sure! The entities are Hinton and Toronto."


def test_archetype_stage_tags_every_occurrence_and_repairs_out_of_space_answers():
    lm = ScriptedLM([{"archetypes": {"hinton": "person", "University of Toronto": "College"}}])
    spans = [Span(0, 6, "Hinton"), Span(35, 56, "University of Toronto"), Span(58, 64, "Hinton")]
    result = ArchetypeClassifier().bind(backend(lm))(text=TEXT, spans=spans)
    assert result.archetypes == {"Hinton": "Person", "University of Toronto": "Misc"}
    assert [r.item for r in result.record.repaired] == ["University of Toronto"]
    assert result.record.inputs["tagged_text"].count("<ENT>Hinton</ENT>") == 2
    properties = sent_schema(lm)["properties"]["archetypes"]["properties"]
    assert list(properties) == ["Hinton", "University of Toronto"]
    assert len(properties["Hinton"]["enum"]) == 14


def test_calibrator_types_a_sentence_in_one_request_and_drops_out_of_schema_labels():
    lm = ScriptedLM([{"labels": {"Hinton": "Researcher", "University of Toronto": "college", "Edinburgh": "location"}}])
    archetypes = {"Hinton": "Person", "University of Toronto": "Organization", "Edinburgh": "Location"}
    result = TypeCalibrator().bind(backend(lm))(text=TEXT, schema=SCHEMA, archetypes=archetypes)
    assert result.label_of == {"Hinton": "researcher", "Edinburgh": "location"}
    assert [(d.item, d.reason) for d in result.record.dropped] == [
        ("University of Toronto", "label 'college' is not in the schema")
    ]
    assert result.record.repaired[0].item == "Hinton"
    assert result.record.requests == 1
    prompt = lm.history[-1]["messages"][-1]["content"]
    assert "Organization" in prompt and "structured groups of people" in prompt, "archetype definitions are shown"
    enum = sent_schema(lm)["properties"]["labels"]["properties"]["Hinton"]["enum"]
    assert enum == SCHEMA.labels, "'none' is offered only when allowed"


def test_calibrator_per_entity_mode_and_the_none_answer():
    lm = ScriptedLM([{"label": "researcher"}, {"label": "none"}])
    archetypes = {"Hinton": "Person", "Edinburgh": "Location"}
    calibrator = TypeCalibrator("entity", allow_no_label=True)
    result = calibrator.bind(backend(lm))(text=TEXT, schema=SCHEMA, archetypes=archetypes)
    assert result.label_of == {"Hinton": "researcher"}
    assert result.record.requests == 2
    assert result.record.dropped[0].reason == "no label of the schema fits"
    assert sent_schema(lm)["properties"]["label"]["enum"] == [*SCHEMA.labels, "none"]


def test_direct_typing_has_no_archetypes_in_its_prompt():
    lm = ScriptedLM([{"labels": {"Hinton": "researcher"}}])
    result = DirectTyper().bind(backend(lm))(text=TEXT, schema=SCHEMA, entities=["Hinton"])
    assert result.label_of == {"Hinton": "researcher"}
    assert "archetype" not in lm.history[-1]["messages"][-1]["content"].lower()


def test_no_structured_output_sends_no_response_format():
    lm = ScriptedLM([{"labels": {"Hinton": "researcher"}}])
    DirectTyper().bind(backend(lm, "none"))(text=TEXT, schema=SCHEMA, entities=["Hinton"])
    assert "response_format" not in lm.history[-1]["kwargs"]
