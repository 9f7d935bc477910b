"""The vLLM configuration on the wire: LoRA names, schema-constrained decoding, one request per stage.

A stand-in OpenAI-compatible server on 127.0.0.1 records each request and answers with the first value
its JSON schema allows; model quality is tested against the real embedded model elsewhere.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from samner_dspy import SAMNER


def first_valid(schema: dict, text: str):
    if "enum" in schema:
        return schema["enum"][0]
    if schema.get("type") == "object":
        return {key: first_valid(sub, text) for key, sub in schema["properties"].items()}
    if schema.get("type") == "array":
        return [text.split()[0]] if schema["items"].get("type") == "string" and "enum" not in schema["items"] else []
    return ""


class Recorder(BaseHTTPRequestHandler):
    requests: ClassVar[list[dict]] = []

    def log_message(self, *args):
        pass

    def _send(self, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._send({"object": "list", "data": [{"id": "anchor", "object": "model"}]})

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Recorder.requests.append(request)
        schema = request["response_format"]["json_schema"]["schema"]
        reply = json.dumps(first_valid(schema, "Ada Lovelace wrote the first program."))
        self._send(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": request["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }
        )


@pytest.fixture()
def stand_in_vllm():
    Recorder.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


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
