"""A stand-in OpenAI-compatible server on 127.0.0.1 that records requests and answers by JSON schema.

It answers every request with the first value its response schema allows (the first word of the text
for free strings), after an optional fixed latency: enough to test wire formats, concurrency and
interruption, and to benchmark the program's own overhead, without a model. Like dspy's DummyLM, it
says nothing about model quality. A ``script`` makes it misbehave on purpose (malformed or truncated
replies, HTTP errors, stalls, hang-ups), so tests can show what the program does with a bad server.

    python -m samner_dspy.serving.stand_in --latency 0.1      # prints its api_base, serves until killed
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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


def default_reply(request: dict[str, Any]) -> str:
    """The well-behaved answer: the first value the request's JSON schema allows (``{}`` without one)."""
    response_format = request.get("response_format") or {}
    schema = response_format.get("json_schema", {}).get("schema") or response_format.get("schema")
    return json.dumps(first_valid(schema, text_of(request)) if schema else {})


@dataclass(frozen=True)
class Reply:
    """How to answer one request instead of the default: a fault scripted by a test."""

    content: str | None = None
    """The message content; None sends the default answer. With an error ``status``, the error message."""
    status: int = 200
    finish_reason: str = "stop"
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    hang_up: bool = False
    """Close the connection without answering, as a crashing server does."""
    logprobs: tuple[tuple[str, float], ...] | None = None
    """Token log-probabilities to send as ``choices[0].logprobs.content``, as vLLM does when asked."""


Script = Callable[[dict[str, Any], int], Reply | None]
"""Given a request and its number (0, 1, ... in arrival order), a :class:`Reply`, or None for the default."""


def _logprobs_payload(tokens: tuple[tuple[str, float], ...] | None) -> dict[str, Any] | None:
    if tokens is None:
        return None
    return {"content": [{"token": t, "logprob": lp, "bytes": list(t.encode()), "top_logprobs": []} for t, lp in tokens]}


class Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers allow
    disable_nagle_algorithm = True  # headers and body go out at once, as uvicorn does: no 40 ms delayed-ACK stall
    requests: ClassVar[list[dict[str, Any]]] = []
    headers_seen: ClassVar[list[dict[str, str]]] = []
    latency_s: ClassVar[float] = 0.0
    record: ClassVar[bool] = True
    script: ClassVar[Script | None] = None
    arrivals: ClassVar[int] = 0
    lock: ClassVar[threading.Lock] = threading.Lock()

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, payload: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._send({"object": "list", "data": [{"id": "anchor", "object": "model"}]})

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with Recorder.lock:
            number = Recorder.arrivals
            Recorder.arrivals += 1
            if Recorder.record:
                Recorder.requests.append(request)
                Recorder.headers_seen.append(dict(self.headers))
        reply = (Recorder.script(request, number) if Recorder.script else None) or Reply()
        time.sleep(Recorder.latency_s + reply.delay_s)
        if reply.hang_up:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if reply.status != 200:
            message = reply.content or f"stand-in fault: HTTP {reply.status}"  # content: the error message
            error = {"message": message, "type": "stand_in", "code": reply.status}
            self._send({"error": error}, reply.status, reply.headers)
            return
        content = default_reply(request) if reply.content is None else reply.content
        # A reply cut off at the token limit spent all of it, as real servers report.
        spent = int(request.get("max_tokens") or 512) if reply.finish_reason == "length" else 5
        self._send(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": request["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": reply.finish_reason,
                        "logprobs": _logprobs_payload(reply.logprobs),
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": spent, "total_tokens": 10 + spent},
            },
            headers=reply.headers,
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # bursts of concurrent clients must not be refused

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that timed out and hung up is expected here; any other error is still printed."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextmanager
def stand_in_server(
    latency_s: float = 0.0, record: bool = True, script: Script | None = None, port: int = 0
) -> Iterator[str]:
    """Serve on 127.0.0.1 (a free port unless given); yields the ``api_base``."""
    Recorder.requests = []
    Recorder.headers_seen = []
    Recorder.latency_s = latency_s
    Recorder.record = record
    Recorder.script = script
    Recorder.arrivals = 0
    server = _Server(("127.0.0.1", port), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def stand_in_process(latency_s: float = 0.0) -> tuple[subprocess.Popen[str], str]:
    """The stand-in in a process of its own (so its CPU time is not the caller's): the process and its
    ``api_base``. The caller terminates it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "samner_dspy.serving.stand_in", "--latency", str(latency_s)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    args = parser.parse_args()
    with stand_in_server(args.latency, record=False, port=args.port) as api_base:
        print(api_base, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
