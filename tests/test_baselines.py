"""The single-request baselines: definitions without examples, the plain prompt, and the anchor alone."""

import json

import pytest

from samner_dspy.backends import StageBackend
from samner_dspy.evals.runner import BASELINES, CONFIGURATIONS, build_program
from samner_dspy.programs import SAMNER, DirectNER
from samner_dspy.programs.direct import PlainExtractor
from samner_dspy.schema import Schema, crossner_schema
from tests.helpers import ScriptedLM, stage_lms

TEXT = "Ada Lovelace met Charles Babbage in London."
SCHEMA = Schema({"person": "A named person, such as Alan Turing.", "city": "A named city, for example Paris."})


def _prompt(lm: ScriptedLM) -> str:
    return "\n".join(str(m["content"]) for m in lm.history[-1]["messages"])


def test_definitions_lose_their_examples_and_keep_what_they_define():
    short = SCHEMA.without_examples()
    assert short.to_dict() == {"person": "A named person.", "city": "A named city."}
    assert Schema({"x": "A thing. Such as this one."}).without_examples()["x"] == "A thing."
    assert Schema({"x": "no examples here"}).without_examples()["x"] == "no examples here"
    for domain in ("ai", "literature", "music", "politics", "science"):
        for label, text in crossner_schema(domain).without_examples().items():
            assert "such as" not in text and "for example" not in text, (domain, label, text)
            assert text.startswith("A ") or text.startswith("The "), (domain, label, text)


def test_the_short_direct_prompt_sends_no_example_and_files_as_direct_does():
    lms = {"calibrator": ScriptedLM([{"entities": {"person": ["Ada Lovelace", "Alan Turing"], "city": ["London"]}}])}
    result = DirectNER(lms=lms, prompt="short")(TEXT, SCHEMA)
    prompt = _prompt(lms["calibrator"])
    assert "A named person." in prompt and "Alan Turing" not in prompt and "Paris" not in prompt
    assert [(e.text, e.label) for e in result.entities] == [("Ada Lovelace", "person"), ("London", "city")]
    direct = result.trace["direct"]
    assert direct.inputs["prompt"] == "short"
    assert [d["item"] for d in direct.to_dict()["dropped"]] == ["Alan Turing"], "an example copied, not in the text"


def test_the_plain_prompt_names_the_labels_only_and_drops_what_it_cannot_ground():
    reply = {
        "entities": [
            {"text": "Ada Lovelace", "type": "person"},
            {"text": "Charles Babbage", "type": "mathematician"},
            {"text": "Paris", "type": "city"},
            {"text": "London", "type": "City"},
        ]
    }
    lms = {"calibrator": ScriptedLM([reply])}
    program = DirectNER(lms=lms, prompt="plain")
    result = program(TEXT, SCHEMA)
    (messages,) = [lms["calibrator"].history[-1]["messages"]]
    assert [m["role"] for m in messages] == ["user"], "one user turn, no system message"
    assert messages[0]["content"].startswith("Extract all named entities from the text. Entity types: person, city.")
    assert "A named person" not in messages[0]["content"] and messages[0]["content"].endswith(f"Text: {TEXT}")
    assert [(e.text, e.label, e.start) for e in result.entities] == [
        ("Ada Lovelace", "person", 0),
        ("London", "city", 36),
    ]
    for e in result.entities:
        assert TEXT[e.start : e.end] == e.text
    dropped = {d["item"]: d["reason"] for d in result.trace["direct"].to_dict()["dropped"]}
    assert "not in the schema" in dropped["Charles Babbage"] and "Paris" in dropped


def test_the_plain_reply_is_constrained_to_entities_typed_with_the_schemas_labels():
    lm = ScriptedLM([{"entities": [{"text": "London", "type": "city"}]}])
    found = PlainExtractor().bind(StageBackend("calibrator", lm, "m"))(text=TEXT, schema=SCHEMA)
    assert [c.surface for c in found.candidates] == ["London"]
    schema = lm.history[-1]["kwargs"]["response_format"]["json_schema"]["schema"]
    item = schema["properties"]["entities"]["items"]
    assert item["properties"]["type"]["enum"] == ["person", "city"] and schema["required"] == ["entities"]
    assert item["required"] == ["text", "type"] and item["additionalProperties"] is False


def test_a_plain_reply_that_is_not_an_entity_list_is_recorded_as_unparseable():
    lms = {"calibrator": ScriptedLM(['{"person": ["Ada Lovelace"]}'])}
    result = DirectNER(lms=lms, prompt="plain")(TEXT, SCHEMA)
    assert result.entities == []
    record = result.trace["direct"]
    assert "unparseable reply" in record.error and record.raw_reply == '{"person": ["Ada Lovelace"]}'


def test_an_unknown_direct_prompt_is_refused():
    with pytest.raises(ValueError, match="unknown direct prompt 'fancy'"):
        DirectNER(lms={"calibrator": ScriptedLM([])}, prompt="fancy")


def test_the_anchor_alone_is_one_request_and_types_with_its_first_label():
    lms = stage_lms(
        anchor=[{"entities": {"person": ["Ada Lovelace", "Charles Babbage"], "city": ["London", "Charles Babbage"]}}]
    )
    result = SAMNER(lms=lms, **CONFIGURATIONS["anchor-only"].options)(TEXT, SCHEMA)
    assert [(e.text, e.label, e.archetype) for e in result.entities] == [
        ("Ada Lovelace", "person", None),
        ("Charles Babbage", "person", None),
        ("London", "city", None),
    ]
    assert len(lms["anchor"].history) == 1
    assert all(lms[s].history == [] for s in ("explorer", "archetype", "calibrator"))
    assert sum(s.requests for s in result.trace.stages) == 1
    assert result.trace["anchor_typing"].outputs["labels"]["Charles Babbage"] == "person"


def test_anchor_types_only_drops_the_explorers_untyped_mentions_and_says_so():
    lms = stage_lms(
        anchor=[{"entities": {"person": ["Ada Lovelace"], "city": []}}],
        explorer=[{"entities": {"person": ["Ada Lovelace", "Charles Babbage"], "city": []}}],
    )
    result = SAMNER(lms=lms, **CONFIGURATIONS["small-anchor-types"].options)(TEXT, SCHEMA)
    assert [(e.text, e.label) for e in result.entities] == [("Ada Lovelace", "person")]
    record = result.trace["anchor_typing"].to_dict()
    assert [d["item"] for d in record["dropped"]] == ["Charles Babbage"]
    assert lms["archetype"].history == [] and lms["calibrator"].history == []


def test_every_baseline_is_one_request_a_sentence_and_every_row_builds():
    for name in BASELINES:
        row = CONFIGURATIONS[name]
        assert row.direct or (row.options.get("use_explorer") is False and row.options["calibration"] == "anchor")
    for name in CONFIGURATIONS:
        assert build_program(name, None).__class__ in (SAMNER, DirectNER)
    with pytest.raises(ValueError, match="unknown configuration 'best'"):
        build_program("best", None)
    json.dumps({name: dict(row.options) for name, row in CONFIGURATIONS.items()})  # rows are plain data
