"""The vLLM configuration on the wire: LoRA names, schema-constrained decoding, one request per stage.

A stand-in OpenAI-compatible server on 127.0.0.1 records each request and answers with the first value
its JSON schema allows; model quality is tested against the real embedded model elsewhere.
"""

from __future__ import annotations

import json

import pytest

from samner_dspy import SAMNER
from samner_dspy.stand_in import Recorder, stand_in_server


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
