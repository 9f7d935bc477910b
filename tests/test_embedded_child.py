"""The embedded server's process takes OpenAI's json_schema response format as llama.cpp's json_object + schema."""

from __future__ import annotations

import asyncio
import json

from samner_dspy.serving.embedded_child import accepting_json_schema, llama_cpp_response_format

SCHEMA = {"type": "object", "properties": {"label": {"type": "string", "enum": ["a", "b"]}}, "required": ["label"]}


def test_openai_json_schema_becomes_llama_cpps_json_object_with_the_schema():
    openai = {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}}
    assert llama_cpp_response_format(openai)["response_format"] == {"type": "json_object", "schema": SCHEMA}
    assert openai["response_format"]["type"] == "json_schema", "the request given is not changed in place"
    llama = {"response_format": {"type": "json_object", "schema": SCHEMA}}
    assert llama_cpp_response_format(llama) == llama
    assert llama_cpp_response_format({"messages": []}) == {"messages": []}
    bare = {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}
    assert llama_cpp_response_format(bare)["response_format"] == {"type": "json_object"}


def _through_wrapper(path: str, body: bytes, chunks: int = 1) -> dict[str, object]:
    """One HTTP request, its body sent in ``chunks`` parts, through the wrapper: what the server's app received."""
    seen: dict[str, object] = {}

    async def server_app(scope, receive, send):
        message = await receive()
        seen["body"] = message["body"]
        seen["length"] = dict(scope["headers"]).get(b"content-length")

    pieces = [body[i * len(body) // chunks : (i + 1) * len(body) // chunks] for i in range(chunks)]
    messages = [{"type": "http.request", "body": p, "more_body": i < chunks - 1} for i, p in enumerate(pieces)]

    async def receive():
        return messages.pop(0)

    async def send(message):
        pass

    scope = {"type": "http", "path": path, "headers": [(b"content-length", str(len(body)).encode())]}
    asyncio.run(accepting_json_schema(server_app)(scope, receive, send))
    return seen


def test_the_servers_app_gets_the_rewritten_body_with_its_length():
    body = json.dumps({"response_format": {"type": "json_schema", "json_schema": {"schema": SCHEMA}}}).encode()
    seen = _through_wrapper("/v1/chat/completions", body, chunks=3)
    assert json.loads(seen["body"])["response_format"] == {"type": "json_object", "schema": SCHEMA}
    assert seen["length"] == str(len(seen["body"])).encode()
    assert _through_wrapper("/v1/models", b"{}")["body"] == b"{}", "other paths are passed through"
    assert _through_wrapper("/v1/chat/completions", b"not json")["body"] == b"not json", "the server says what is wrong"
