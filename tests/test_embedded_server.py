"""How the program waits for an embedded server process, without the model: a stand-in process in its place."""

from __future__ import annotations

import sys

import httpx
import pytest

from samner_dspy.errors import EmbeddedModelError
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
