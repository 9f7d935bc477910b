"""How the program waits for an embedded server process, without the model: a stand-in process in its place."""

from __future__ import annotations

import sys

import dspy
import httpx
import pytest

from samner_dspy.backends import StageBackend
from samner_dspy.errors import EmbeddedModelError, EndpointUnreachableError
from samner_dspy.programs import SpanExtractor
from samner_dspy.schema import Schema
from samner_dspy.serving import embedded
from samner_dspy.serving.embedded import EmbeddedServer

SLOW_SERVER = """
import http.server, sys, time
time.sleep(0.5)  # a real server opens its port once the model is loaded
class Models(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{"data": [{"id": "embedded"}]}' if self.path == "/v1/models" else b"{}"
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Models).serve_forever()
"""


class StandIn(EmbeddedServer):
    def __init__(self, script: str, tmp_path) -> None:
        super().__init__(log_path=tmp_path / "server.log", prefix_store=False)
        self.script = script

    def command(self) -> list[str]:
        return [sys.executable, "-c", self.script, str(self.port)]


def test_start_returns_once_the_port_is_open_and_the_server_answers(tmp_path):
    server = StandIn(SLOW_SERVER, tmp_path)
    assert not server._listening()
    with server:
        assert server._listening()
        assert httpx.get(f"{server.api_base}/models", timeout=2).json()["data"][0]["id"] == "embedded"
    assert server.pid is None and not server._listening()


def test_a_server_process_that_exits_is_reported_with_its_code(tmp_path):
    with pytest.raises(EmbeddedModelError, match="exited with code 3"):
        StandIn("import sys; sys.exit(3)", tmp_path).start(timeout_s=30)


def test_a_server_that_died_after_its_start_is_named_in_the_request_error_and_started_again(tmp_path, monkeypatch):
    """A refused connection alone would hide a crashed or OOM-killed server: the error says how it ended."""

    class Shared(StandIn):
        def __init__(self, *args, log_path, **options) -> None:
            super().__init__(SLOW_SERVER, tmp_path)

    monkeypatch.setattr(embedded, "EmbeddedServer", Shared)
    monkeypatch.setattr(embedded, "_shared", {})
    try:
        server = embedded.shared_server(role="anchor")
        assert server.exit_note() is None
        server._process.kill()
        server._process.wait()
        lm = dspy.LM("openai/embedded", api_base=server.api_base, api_key="EMPTY", num_retries=0, cache=False)
        stage = SpanExtractor("anchor").bind(StageBackend("anchor", lm, "embedded", lm_of_signature=lambda _: lm))
        with pytest.raises(EndpointUnreachableError) as failed:
            stage(text="Ada met Bob.", schema=Schema.coerce(["person"]))
        message = str(failed.value)
        assert server.api_base in message and "was killed by SIGKILL" in message and str(server.log_path) in message
        again = embedded.shared_server(role="anchor")
        assert again is not server and again.exit_note() is None and again._listening()
    finally:
        embedded.stop_all(embedded._shared.values())
