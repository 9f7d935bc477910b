"""A typing request's token budget grows with its entities, so a long entity list is not cut off at a fixed
limit (issue 16: a reply cut at the limit must never silently lose entities)."""

from __future__ import annotations

import json

from samner_dspy import SAMNER, SamnerConfig
from samner_dspy.archetypes import archetype_names
from samner_dspy.constraints import choice_per_key, closed_object, reply_tokens, string_lists, subset_of
from samner_dspy.serving.stand_in import Recorder, Reply, stand_in_server

NAMES = [f"Person{i} Surname{i}" for i in range(60)]
TEXT = " and ".join(NAMES) + " met."
SCHEMA = {"person": "a named person", "city": "a named city"}


def everyone(request: dict, number: int) -> Reply | None:
    properties = request["response_format"]["json_schema"]["schema"]["properties"]
    if request["model"] in ("anchor", "explorer") and "confirmed" not in properties:
        found = {"person": NAMES, "city": []}
        return Reply(content=json.dumps(found if request["model"] == "anchor" else {"entities": found}))
    return None


def budgets(text: str) -> dict[str, int]:
    """The max_tokens each stage's request asked for (the stand-in answers the typing stages by their schema)."""
    Recorder.requests.clear()
    with stand_in_server(script=everyone) as api_base:
        result = SAMNER(SamnerConfig.vllm(api_base))(text, SCHEMA)
    assert result.entities
    return {request["model"]: request["max_tokens"] for request in Recorder.requests}


def test_the_typing_budget_grows_with_the_entities_and_the_extractors_keep_theirs():
    many = budgets(TEXT)
    assert many["anchor"] == many["explorer"] == 512, "free-text answers keep the configured limit"
    assert many["archetype"] > 512 and many["archetype"] >= reply_tokens(
        choice_per_key(NAMES, list(archetype_names()))
    ), many
    calibrator = next(budget for model, budget in many.items() if model not in ("anchor", "explorer", "archetype"))
    assert calibrator > 512, many
    few = budgets("Person1 Surname1 met Person2 Surname2.")
    assert set(few.values()) == {512}, "a short list stays within the configured limit"


def test_reply_tokens_bounds_closed_answers_and_leaves_free_text_unbounded():
    one = reply_tokens(choice_per_key(["Ada"], ["person", "city"]))
    ten = reply_tokens(choice_per_key([f"Ada {i}" for i in range(10)], ["person", "city"]))
    assert one is not None and ten is not None and ten > 9 * one // 2
    assert reply_tokens(subset_of(["a", "b", "c"])) > reply_tokens(subset_of(["a"]))
    assert reply_tokens(string_lists(["person"])) is None
    assert reply_tokens(closed_object({"labels": choice_per_key(["x"], ["y"]), "note": {"type": "string"}})) is None
    # Room for what the longest answer writes: each key, quoted, with its longest choice.
    answer = json.dumps({f"Ada {i}": "person" for i in range(10)}, indent=4)
    assert ten >= len(answer) // 4
