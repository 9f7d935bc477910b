import json

import pytest
from dspy.utils.exceptions import AdapterParseError

from samner_dspy.adapters import IEPILE_NER_INSTRUCTION, IEPileAdapter, SamnerAdapter, training_messages
from samner_dspy.signatures import ClassifyArchetype, ExtractSpans


def test_anchor_prompt_is_iepile_instruction_json():
    messages = IEPileAdapter().format(
        ExtractSpans, [], {"entity_types": ["person", "città"], "text": "Dante è a Firenze"}
    )
    assert len(messages) == 1 and messages[0]["role"] == "user"
    payload = json.loads(messages[0]["content"])
    assert list(payload) == ["instruction", "schema", "input"]
    assert payload == {
        "instruction": IEPILE_NER_INSTRUCTION,
        "schema": ["person", "città"],
        "input": "Dante è a Firenze",
    }
    assert "città" in messages[0]["content"], "non-ASCII stays readable, as in IEPile's data"


def test_anchor_reply_parses_to_type_lists_and_tolerates_shapes():
    parsed = IEPileAdapter().parse(ExtractSpans, '{"person": ["Dante"], "city": "Firenze", "bad": 3}')
    assert parsed == {"entities": {"person": ["Dante"], "city": ["Firenze"]}}
    repaired = IEPileAdapter().parse(ExtractSpans, '```json\n{"person": ["Dante"]\n```')
    assert repaired == {"entities": {"person": ["Dante"]}}


@pytest.mark.parametrize("reply", ["", "no entities here", "[1, 2]"])
def test_anchor_reply_that_is_not_an_object_is_a_parse_error(reply):
    with pytest.raises(AdapterParseError):
        IEPileAdapter().parse(ExtractSpans, reply)


def test_anchor_reply_schema_is_the_bare_mapping():
    field = {"type": "object", "properties": {}}
    assert IEPileAdapter().reply_schema(ExtractSpans, {"entities": field}) is field
    wrapped = SamnerAdapter().reply_schema(ExtractSpans, {"entities": field})
    assert wrapped["properties"] == {"entities": field} and wrapped["required"] == ["entities"]


@pytest.mark.parametrize("adapter", [IEPileAdapter(), SamnerAdapter()], ids=["iepile", "samner"])
def test_training_messages_are_the_inference_prompt_plus_the_answer(adapter):
    inputs = {"entity_types": ["person"], "text": "Ada Lovelace wrote notes."}
    outputs = {"entities": {"person": ["Ada Lovelace"]}}
    messages = training_messages(adapter, ExtractSpans, inputs, outputs)
    assert messages[:-1] == adapter.format(ExtractSpans, [], inputs)
    assert messages[-1]["role"] == "assistant"
    assert adapter.parse(ExtractSpans, messages[-1]["content"]) == outputs


def test_samner_adapter_keeps_the_stage_response_format():
    class FakeLM:
        supported_params = frozenset({"response_format"})
        supports_response_schema = True

    lm_kwargs = {"response_format": {"type": "json_object", "schema": {"type": "object"}}}
    SamnerAdapter()._prepare_response_format(FakeLM(), lm_kwargs, ClassifyArchetype)
    assert lm_kwargs == {"response_format": {"type": "json_object", "schema": {"type": "object"}}}
