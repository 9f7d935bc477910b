"""The person-role rule: mentions typed ``person`` take the one role the schema's person definition sets apart."""

from samner_dspy.evals.runner import CONFIGURATIONS
from samner_dspy.formats.view import entity_details
from samner_dspy.programs import SAMNER, DirectNER
from samner_dspy.schema import Schema, crossner_schema
from tests.helpers import ScriptedLM, stage_lms

TEXT = "Jane Austen met Lord Byron in Bath."
SCHEMA = Schema(
    {
        "person": "A named person who is not a writer, such as a critic.",
        "writer": "A named person known as an author.",
        "location": "A named place.",
    }
)
REPLY = {
    "entities": [
        {"text": "Jane Austen", "type": "writer"},
        {"text": "Lord Byron", "type": "person"},
        {"text": "Bath", "type": "location"},
    ]
}


def test_the_role_is_the_one_label_the_person_definition_names():
    assert SCHEMA.person_role() == ("person", "writer")
    roles = {domain: crossner_schema(domain).person_role() for domain in ("ai", "literature", "music", "politics")}
    assert roles == {
        "ai": ("person", "researcher"),
        "literature": ("person", "writer"),
        "music": ("person", "musical artist"),
        "politics": ("person", "politician"),
    }
    assert Schema({"Person": "Anyone who is Not a Poet.", "poet": "A poet."}).person_role() == ("Person", "poet")
    assert Schema.coerce(["person", "writer"]).person_role() is None, "a definition that excludes no label"
    assert Schema({"person": "A person in the field, not a writer.", "writer": "w", "field": "f"}).person_role() == (
        "person",
        "writer",
    ), "the label it excludes, not one it merely names"
    assert Schema({"person": "Not a songwriter.", "writer": "w"}).person_role() is None, "whole words only"
    assert Schema({"writer": "A writer.", "location": "A place."}).person_role() is None


def test_mentions_typed_person_are_filed_under_the_role_and_traced():
    filed = DirectNER(lms={"calibrator": ScriptedLM([REPLY])}, prompt="plain", person_role=True)(TEXT, SCHEMA)
    assert [(e.text, e.label, e.typed_by) for e in filed.entities] == [
        ("Jane Austen", "writer", "direct"),
        ("Lord Byron", "writer", "person_role"),
        ("Bath", "location", "direct"),
    ]
    assert all(TEXT[e.start : e.end] == e.text for e in filed.entities)
    record = filed.trace["person_role"]
    assert record.inputs == {"person": "person", "role": "writer"}
    assert [r["item"] for r in record.to_dict()["repaired"]] == ["Lord Byron [16:26]"]
    details = dict(entity_details(filed.entities[1].to_dict(), filed.trace.to_dict()))
    assert "filed under the schema's person role 'writer'" in " ".join(details.values())

    kept = DirectNER(lms={"calibrator": ScriptedLM([REPLY])}, prompt="plain")(TEXT, SCHEMA)
    assert [e.label for e in kept.entities] == ["writer", "person", "location"] and "person_role" not in kept.trace


def test_a_schema_without_a_role_keeps_person_and_says_so():
    schema = Schema.coerce(["person", "writer", "location"])
    result = DirectNER(lms={"calibrator": ScriptedLM([REPLY])}, prompt="plain", person_role=True)(TEXT, schema)
    assert [e.label for e in result.entities] == ["writer", "person", "location"]
    assert result.trace["person_role"].inputs == {} and not result.trace["person_role"].to_dict()["repaired"]


def test_samner_files_its_typed_mentions_too():
    lms = stage_lms(anchor=[{"entities": {"person": ["Lord Byron"], "location": ["Bath"]}}])
    options = {**CONFIGURATIONS["anchor-only"].options, "person_role": True}
    result = SAMNER(lms=lms, **options)(TEXT, SCHEMA)
    assert [(e.text, e.label) for e in result.entities] == [("Lord Byron", "writer"), ("Bath", "location")]
