"""Entity scores: evidence terms always, token probabilities where the backend returns them, and thresholds."""

from __future__ import annotations

import json
import math
import re

import pytest

from samner_dspy import SAMNER
from samner_dspy.confidence import answer_probabilities, combine, discovery_evidence
from samner_dspy.serving.stand_in import Recorder, Reply, default_reply, stand_in_server
from tests.helpers import stage_lms

SCHEMA = {"person": "a named person", "city": "a named city"}


def test_discovery_evidence_ranks_agreement_over_verification_over_one_extractor():
    both = discovery_evidence(("anchor", "explorer"))
    verified = discovery_evidence(("explorer",), verified=True)
    anchor = discovery_evidence(("anchor",))
    explorer = discovery_evidence(("explorer",))
    assert both == 1.0
    assert both > verified > anchor > explorer > 0
    assert discovery_evidence(("direct",)) == 0.5
    assert combine(0.8, [None, 0.5, None]) == 0.4
    assert combine(1.0, [2.0]) == 1.0 and combine(0.5, [-1.0]) == 0.0


def _tokens(content: str, logprob_of: dict[str, float]) -> tuple[tuple[str, float], ...]:
    """Word and punctuation tokens of a reply; a word listed in ``logprob_of`` gets that logprob, others 0."""
    return tuple((t, logprob_of.get(t, 0.0)) for t in re.findall(r"\w+|\W", content))


def test_answer_probabilities_multiply_the_value_tokens_and_skip_what_is_not_there():
    content = '{"labels": {"Ada Lovelace": "person", "Paris":"city",\n "S\\u00e3o Paulo" : "city"}}'
    tokens = [{"token": t, "logprob": lp} for t, lp in _tokens(content, {"person": math.log(0.5), "city": -1.0})]
    answers = {"Ada Lovelace": "person", "Paris": "city", "São Paulo": "city", "Rome": "city"}
    found = answer_probabilities({"content": tokens}, answers)
    assert found == {"Ada Lovelace": 0.5, "Paris": round(math.exp(-1.0), 6), "São Paulo": round(math.exp(-1.0), 6)}
    assert answer_probabilities(None, {"Ada": "person"}) == {}
    assert answer_probabilities({"content": [{"token": "x", "logprob": None}]}, {"Ada": "person"}) == {}


def test_without_logprobs_every_entity_is_scored_by_its_evidence_and_dicts_carry_it():
    lms = stage_lms(
        anchor=[{"entities": {"person": ["Ada Lovelace"], "city": ["Paris"]}}],
        explorer=[{"entities": {"person": ["Ada Lovelace"], "city": ["London Town"]}}],
        archetype=[{"archetypes": {"Ada Lovelace": "Person", "Paris": "Location", "London Town": "Location"}}],
        calibrator=[{"labels": {"Ada Lovelace": "person", "Paris": "city", "London Town": "city"}}],
    )
    result = SAMNER(lms=lms)("Ada Lovelace left Paris for London Town.", SCHEMA)
    scores = {e.text: e.score for e in result.entities}
    assert scores == {
        "Ada Lovelace": discovery_evidence(("anchor", "explorer")),
        "Paris": discovery_evidence(("anchor",)),
        "London Town": discovery_evidence(("explorer",)),
    }
    assert all(0.0 <= e.to_dict()["score"] <= 1.0 for e in result.entities)
    assert "confidence" not in result.trace, "no threshold, no confidence stage"


def test_a_threshold_drops_low_scores_and_traces_each_drop():
    def lms():
        return stage_lms(
            anchor=[{"entities": {"person": ["Ada Lovelace"]}}],
            explorer=[{"entities": {"person": ["Ada Lovelace"], "city": ["London Town"]}}],
            archetype=[{"archetypes": {"Ada Lovelace": "Person", "London Town": "Location"}}],
            calibrator=[{"labels": {"Ada Lovelace": "person", "London Town": "city"}}],
        )

    text = "Ada Lovelace visited London Town."
    result = SAMNER(lms=lms(), threshold=0.9)(text, SCHEMA)
    assert [e.text for e in result.entities] == ["Ada Lovelace"]
    assert result.trace.dropped_counts() == {"confidence: score below the threshold 0.9": 1}
    assert result.trace["confidence"].dropped[0].item.startswith("London Town [21:32]")
    dicts = SAMNER(lms=lms(), threshold=0.5).predict_entities(text, SCHEMA)
    assert [(d["text"], d["score"]) for d in dicts] == [("Ada Lovelace", 1.0), ("London Town", 0.65)]
    with pytest.raises(ValueError, match="threshold"):
        SAMNER(lms=lms(), threshold=1.5)


def test_an_explorer_mention_the_anchor_verified_scores_above_an_unverified_one():
    lms = stage_lms(
        anchor=[{"entities": {"person": []}}, '{"confirmed": ["Ada"]}'],
        explorer=[{"entities": {"person": ["Ada", "Bob Smith"]}}],
        archetype=[{"archetypes": {"Ada": "Person", "Bob Smith": "Person"}}],
        calibrator=[{"labels": {"Ada": "person", "Bob Smith": "person"}}],
    )
    result = SAMNER(lms=lms, ccr="verify")("Ada met Bob Smith.", SCHEMA)
    scores = {e.text: e.score for e in result.entities}
    assert scores == {"Ada": discovery_evidence(("explorer",), verified=True), "Bob Smith": 0.65}


def _with_logprobs(request: dict, number: int) -> Reply | None:
    """Archetype answers at p=0.5 and labels at p=0.8; extractors send no logprobs."""
    content = default_reply(request)
    if request["model"] == "archetype":
        (value,) = json.loads(content)["archetypes"].values()
        return Reply(content=content, logprobs=_tokens(content, {value: math.log(0.5)}))
    reply = json.loads(content)
    if "labels" in reply or "label" in reply:
        (value,) = reply["labels"].values() if "labels" in reply else [reply["label"]]
        return Reply(content=content, logprobs=_tokens(content, {value: math.log(0.8)}))
    return None


def _config(tmp_path, api_base: str) -> str:
    path = tmp_path / "samner.toml"
    path.write_text(f'[defaults]\napi_base = "{api_base}"\n', encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(("calibration", "expected"), [("sentence", 0.4), ("entity", 0.4), ("off", 0.8)])
def test_token_probabilities_from_a_vllm_style_server_enter_the_score(tmp_path, calibration, expected):
    with stand_in_server(script=_with_logprobs) as api_base:
        program = SAMNER(_config(tmp_path, api_base), calibration=calibration)
        result = program("Ada wrote the first program.", {"person": "a named person"})
        assert all(request.get("logprobs") is True for request in Recorder.requests)
    (entity,) = result.entities
    assert entity.sources == ("anchor", "explorer")
    assert entity.score == pytest.approx(1.0 * expected), "evidence 1.0 x p(archetype) 0.5 x p(label) 0.8"
    typing = "direct_typing" if calibration == "off" else "calibrator"
    assert result.trace[typing].outputs["probabilities"] == {"Ada": 0.8}
    if calibration != "off":
        assert result.trace["archetype"].outputs["probabilities"] == {"Ada": 0.5}


def test_document_windows_keep_each_entity_score():
    from samner_dspy.programs.document import Window, merge_window_entities
    from samner_dspy.types import Entity

    text = "xx Ada yy"
    merged = merge_window_entities(text, [(Window(3, 9, 0, 9), [Entity("Ada", "person", 0, 3, None, (), 0.3)])])
    assert [(e.text, e.start, e.score) for e in merged] == [("Ada", 3, 0.3)]


def test_a_server_that_refuses_logprobs_is_asked_again_without_them(tmp_path):
    def refuse(request: dict, number: int) -> Reply | None:
        if request.get("logprobs"):
            return Reply(status=400, content="logprobs is not supported for models created with logits_all=False")
        return None

    with stand_in_server(script=refuse) as api_base:
        result = SAMNER(_config(tmp_path, api_base))("Ada wrote the first program.", {"person": "a named person"})
        asked_without = [r for r in Recorder.requests if not r.get("logprobs")]
    (entity,) = result.entities
    assert entity.score == 1.0, "no probabilities: the evidence alone"
    assert len(asked_without) == 4, "each stage retried once without logprobs, then stopped asking"
    assert any("logprobs" in r.reason for r in result.trace["anchor"].repaired)


def test_the_embedded_dialect_never_asks_for_logprobs():
    import dspy

    from samner_dspy.backends import StageBackend

    llama = StageBackend("archetype", dspy.utils.DummyLM([]), "m", None, "llama_cpp")
    assert "logprobs" not in llama.request_config({"type": "object"}, "X")
    vllm = StageBackend("archetype", dspy.utils.DummyLM([]), "m", None, "json_schema", logprobs=True)
    assert vllm.request_config({"type": "object"}, "X")["logprobs"] is True
