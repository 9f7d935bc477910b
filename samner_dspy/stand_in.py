"""A stand-in OpenAI-compatible server on 127.0.0.1 that records requests and answers by JSON schema.

It answers every request with the first value its response schema allows (the first word of the text
for free strings), after an optional fixed latency: enough to test wire formats, concurrency and
interruption, and to benchmark the program's own overhead, without a model. Like dspy's DummyLM, it
says nothing about model quality.

    python -m samner_dspy.stand_in --latency 0.1      # prints its api_base, serves until killed
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar


def text_of(request: dict[str, Any]) -> str:
    """The text a stage request is about, from IEPile's JSON or dspy's ``[[ ## text ## ]]`` field."""
    content = request["messages"][-1]["content"]
    try:
        return json.loads(content)["input"]
    except (ValueError, KeyError, TypeError):
        match = re.search(r"\[\[ ## (?:tagged_)?text ## \]\]\n(.*?)(?:\n\n|$)", content, re.DOTALL)
        return match.group(1) if match else "nothing"


def first_valid(schema: dict[str, Any], text: str) -> Any:
    if "enum" in schema:
        return schema["enum"][0]
    if schema.get("type") == "object":
        return {key: first_valid(sub, text) for key, sub in schema["properties"].items()}
    if schema.get("type") == "array":
        return [text.split()[0]] if schema["items"].get("type") == "string" and "enum" not in schema["items"] else []
    return ""


class Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers allow
    requests: ClassVar[list[dict[str, Any]]] = []
    latency_s: ClassVar[float] = 0.0
    record: ClassVar[bool] = True

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._send({"object": "list", "data": [{"id": "anchor", "object": "model"}]})

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if Recorder.record:
            Recorder.requests.append(request)
        time.sleep(Recorder.latency_s)
        schema = request["response_format"]["json_schema"]["schema"]
        reply = json.dumps(first_valid(schema, text_of(request)))
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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # bursts of concurrent clients must not be refused


@contextmanager
def stand_in_server(latency_s: float = 0.0, record: bool = True) -> Iterator[str]:
    """Serve on a free port; yields the ``api_base``."""
    Recorder.requests = []
    Recorder.latency_s = latency_s
    Recorder.record = record
    server = _Server(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args()
    with stand_in_server(args.latency, record=False) as api_base:
        print(api_base, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
