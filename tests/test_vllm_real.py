"""SAM-NER on a real vLLM server: the embedded model as a Hugging Face folder, three LoRAs ``samner train``
wrote on it, all served by ``samner serve`` (vLLM's CPU build here, CUDA where there is one).

What is checked comes from vLLM's own record where it can: the LoRA each request was served by (its request
log), prefix-cache hits and replies cut at the token limit (its ``/metrics``), and the token logprobs that the
entities' scores are computed from (its replies).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os

import pytest

from samner_dspy import SAMNER
from samner_dspy.archetypes import archetype_names
from samner_dspy.cli import main
from samner_dspy.confidence import combine, discovery_evidence
from samner_dspy.serving.embedded import free_port
from tests.conftest import require
from tests.vllm_stack import SERVED_BASE, start_stack, stop_stack

pytestmark = pytest.mark.model

SCHEMA = {
    "person": "A human being referred to by name.",
    "city": "A city or town.",
    "organisation": "A company, institution or other named group of people.",
}
TEXT = "Ada Lovelace worked with Charles Babbage in London."
SECOND = "Grace Hopper joined the Navy and later worked in Philadelphia."
STAGE_MODEL = {"anchor": "anchor", "explorer": "explorer", "archetype": "archetype", "calibrator": "base"}


@pytest.fixture(scope="module")
def stack(hf_base_model, served_adapters, tmp_path_factory):
    require(importlib.util.find_spec("vllm") is not None, "vLLM (the 'serve-cpu' or 'serve' extra)")
    running = start_stack(hf_base_model, served_adapters, tmp_path_factory.mktemp("serve"), free_port())
    yield running
    stop_stack(running)


@pytest.fixture(scope="module")
def first(stack):
    """One sentence through ``SAMNER(config)(text, schema)``, with vLLM's counters before and after."""
    before = stack.lora_requests()
    cut_before = stack.metric("vllm:request_success_total", finished_reason="length")
    prediction = SAMNER(str(stack.config))(TEXT, SCHEMA)
    return (
        prediction,
        stack.lora_requests() - before,
        stack.metric("vllm:request_success_total", finished_reason="length") - cut_before,
    )


def test_the_program_runs_on_vllm_and_each_stage_reaches_its_own_model(first):
    prediction, served, cut = first
    assert prediction.entities, prediction.trace.to_dict()
    assert all(e.text == TEXT[e.start : e.end] and e.label in SCHEMA for e in prediction.entities)
    assert not prediction.trace.errors
    sent = {stage: prediction.trace[stage].requests for stage in STAGE_MODEL}
    assert all(sent.values()), sent
    expected = {}
    for stage, model in STAGE_MODEL.items():
        expected[model] = expected.get(model, 0) + sent[stage]
    assert dict(served) == expected, "vLLM's request log: which LoRA served each request"
    assert prediction.trace["calibrator"].model == f"hosted_vllm/{SERVED_BASE}"
    assert cut == 0, "no reply ran to the token limit"


def test_scores_come_from_the_token_logprobs_vllm_returned(first):
    prediction, _, _ = first
    archetype = prediction.trace["archetype"].outputs.get("probabilities") or {}
    label = prediction.trace["calibrator"].outputs.get("probabilities") or {}
    assert archetype and label, "vLLM returned logprobs for the typing answers"
    assert all(0 < p <= 1 for p in [*archetype.values(), *label.values()])
    keys = {e.text: e for e in prediction.entities}
    scored = [text for text in keys if text in archetype and text in label]
    assert scored, (list(keys), archetype, label)
    for text in scored:
        entity = keys[text]
        evidence = discovery_evidence(entity.sources)
        assert entity.score == combine(evidence, [archetype[text], label[text]])
    assert any(keys[t].score < discovery_evidence(keys[t].sources) for t in scored), "a probability below 1 counted"


def test_matched_typing_is_served_by_the_archetype_lora(stack, first):
    """``calibration="matched"`` types with the archetype stage's prompt, so its request goes to that LoRA."""
    before = stack.lora_requests()
    prediction = SAMNER(str(stack.config), calibration="matched")(TEXT, SCHEMA)
    served = stack.lora_requests() - before
    assert prediction.entities and not prediction.trace.errors, prediction.trace.to_dict()
    assert all(e.typed_by == "matcher" and e.label in SCHEMA for e in prediction.entities)
    assert prediction.trace["matcher"].requests == 1 and "calibrator" not in prediction.trace
    assert served["archetype"] == prediction.trace["archetype"].requests + 1, dict(served)
    assert served.get("base", 0) == 0, "no request reached the calibrator's base model"


def test_a_second_sentence_with_the_same_schema_hits_vllms_prefix_cache(stack, first):
    hits, queries = stack.metric("vllm:prefix_cache_hits_total"), stack.metric("vllm:prefix_cache_queries_total")
    prediction = SAMNER(str(stack.config))(SECOND, SCHEMA)
    assert not prediction.trace.errors
    new_hits = stack.metric("vllm:prefix_cache_hits_total") - hits
    new_queries = stack.metric("vllm:prefix_cache_queries_total") - queries
    print(f"\nprefix cache on the second sentence: {new_hits:.0f} of {new_queries:.0f} prompt tokens hit")
    assert new_queries > 0 and new_hits / new_queries >= 0.3, (new_hits, new_queries)


def test_guided_decoding_keeps_answers_inside_the_schema_and_the_archetypes(stack):
    """Asked outright for a label outside the choices, vLLM's constrained decoding still answers inside them."""
    from samner_dspy.backends import build_backends
    from samner_dspy.config import resolve_config
    from samner_dspy.constraints import choice_per_key

    backends = build_backends(resolve_config(str(stack.config)))
    cases = [("calibrator", list(SCHEMA), "weapon"), ("archetype", list(archetype_names()), "Weapon")]
    for stage, choices, wanted in cases:
        backend = backends[stage]
        question = f'Reply with the JSON object {{"Google": "{wanted}"}} and nothing else.'
        free = backend.lm(question, temperature=0, max_tokens=30)
        assert wanted in str(free[0]), f"unconstrained, the {stage} model writes what it is asked: {free}"
        config = backend.request_config(choice_per_key(["Google"], choices), "answer")
        reply = backend.lm(question, temperature=0, max_tokens=30, **config)
        text = reply[0]["text"] if isinstance(reply[0], dict) else reply[0]
        assert json.loads(text)["Google"] in choices, (stage, text)


def test_samner_annotate_on_vllm(stack, tmp_path, capsys):
    before = stack.lora_requests()
    assert main(["annotate", TEXT, "--schema", json.dumps(SCHEMA), "--config", str(stack.config)]) == 0
    assert "Entities" in capsys.readouterr().out
    out = tmp_path / "out.jsonl"
    assert main(["annotate", SECOND, "-s", json.dumps(SCHEMA), "-c", str(stack.config), "-o", str(out)]) == 0
    (record,) = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert record["entities"] and all(SECOND[e["start"] : e["end"]] == e["text"] for e in record["entities"])
    assert set(stack.lora_requests() - before) == set(STAGE_MODEL.values()), "every model of the stack answered"


def test_samner_eval_limit_2_on_vllm(stack, crossner_dir, tmp_path):
    out = tmp_path / "eval"
    command = ["eval", "--data", str(crossner_dir), "--domains", "music", "--limit", "2", "--config"]
    assert main([*command, str(stack.config), "--output-dir", str(out), "--threads", "2"]) == 0
    results = json.loads((out / "report.json").read_text(encoding="utf-8"))["results"]["samner"]
    strict = results["strict"]["music"]
    assert strict["tp"] + strict["fn"] > 0 and all(math.isfinite(v) for v in strict.values() if isinstance(v, float))
    records = [json.loads(line) for line in (out / "samner.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(records) == 2 and all(not r.get("error") for r in records), records


def test_sigterm_stops_samner_serve_and_vllm_with_it(stack):
    """Last in this module: the fixture's server is stopped here, as a user's ``kill`` would."""
    vllm_pid = stack.vllm_pid()
    assert vllm_pid is not None, stack.log_text()[-2000:]
    assert stop_stack(stack) == 0
    assert "vLLM stopped" in stack.output()
    with pytest.raises(ProcessLookupError):
        os.kill(vllm_pid, 0)
