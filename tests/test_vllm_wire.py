"""The vLLM configuration on the wire: LoRA names, schema-constrained decoding, one request per stage.

A stand-in OpenAI-compatible server on 127.0.0.1 records each request and answers with the first value
its JSON schema allows; model quality is tested against the real embedded model elsewhere.
"""

from __future__ import annotations

import json

import pytest

from samner_dspy import SAMNER
from samner_dspy.serving.stand_in import Recorder, stand_in_server


@pytest.fixture()
def stand_in_vllm():
    with stand_in_server() as api_base:
        yield api_base


def test_the_default_vllm_configuration_sends_lora_names_and_json_schemas(stand_in_vllm, tmp_path):
    config_file = tmp_path / "samner.toml"
    config_file.write_text(f'[defaults]\napi_base = "{stand_in_vllm}"\n', encoding="utf-8")
    result = SAMNER(str(config_file))("Ada Lovelace wrote the first program.", {"person": "a named person"})

    models = sorted(request["model"] for request in Recorder.requests)
    assert models == ["anchor", "archetype", "explorer", "meta-llama/Meta-Llama-3-8B-Instruct"]
    for request in Recorder.requests:
        assert request["response_format"]["type"] == "json_schema"
        assert request["temperature"] == 0.0
    anchor_request = next(r for r in Recorder.requests if r["model"] == "anchor")
    assert json.loads(anchor_request["messages"][-1]["content"])["schema"] == ["person"]
    assert [(e.text, e.label) for e in result.entities] == [("Ada", "person")]
    assert result.trace["calibrator"].model == "hosted_vllm/meta-llama/Meta-Llama-3-8B-Instruct"
    assert result.trace["calibrator"].prompt_tokens == 10


def test_self_hosted_endpoints_skip_pricing_but_keep_the_wire_and_the_api_key(stand_in_vllm, monkeypatch):
    """hosted_vllm/ endpoints go by the declared, unpriced provider; other models are left to dspy."""
    import dspy

    from samner_dspy.backends import build_lm, wire_model
    from samner_dspy.config import CachePolicy, Endpoint

    monkeypatch.setenv("WIRE_TEST_KEY", "sk-wire-test")
    endpoint = Endpoint("hosted_vllm/anchor", stand_in_vllm, api_key_env="WIRE_TEST_KEY")
    assert wire_model(endpoint) == "samner-hosted/anchor"
    assert wire_model(Endpoint("openai/gpt-4o-mini")) == "openai/gpt-4o-mini"
    assert wire_model(Endpoint("hosted_vllm/anchor")) == "hosted_vllm/anchor"  # no api_base: dspy's own route
    # llama.cpp's response format (a "schema" key) has no slot on the unpriced route: dspy's own route carries it.
    llama = Endpoint("hosted_vllm/anchor", stand_in_vllm, structured_output="llama_cpp")
    assert wire_model(llama) == "hosted_vllm/anchor"
    # The embedded model's servers are self-hosted too: "openai/embedded" goes by the same route when asked.
    assert wire_model(Endpoint("openai/embedded", stand_in_vllm), self_hosted=True) == "samner-hosted/embedded"
    assert wire_model(Endpoint("openai/embedded", stand_in_vllm)) == "openai/embedded"

    lm = build_lm(endpoint, CachePolicy(enabled=False))
    with dspy.context(disable_history=True):
        reply = lm("Ada")
    assert reply and Recorder.requests[-1]["model"] == "anchor"
    assert Recorder.headers_seen[-1].get("Authorization") == "Bearer sk-wire-test"


def test_the_system_message_is_rendered_once_per_signature_and_unchanged():
    import dspy

    from samner_dspy.adapters import SamnerAdapter
    from samner_dspy.signatures import ClassifyArchetype, ExtractSpans

    adapter = SamnerAdapter()
    for signature in (ExtractSpans, ClassifyArchetype, ExtractSpans):
        expected = dspy.JSONAdapter(use_native_function_calling=False).format_system_message(signature)
        assert adapter.format_system_message(signature) == expected
    assert set(adapter._system_messages) == {ExtractSpans, ClassifyArchetype}
