"""A stand-in for vLLM's OpenAI server process, for the lifecycle tests: it answers ``/v1/models`` with the
names it was started with, and can be told to fail the ways vLLM does. Never used as a model."""

from __future__ import annotations

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main(argv: list[str]) -> int:
    if record := os.environ.get("FAKE_VLLM_ARGV"):
        with open(record, "w", encoding="utf-8") as handle:
            json.dump(argv, handle)
    if os.environ.get("FAKE_VLLM_DIE"):
        print("INFO loading the model", flush=True)
        print("ValueError: the LoRA adapter's rank 16 exceeds --max-lora-rank 8", flush=True)
        return 1
    option = lambda name: argv[argv.index(name) + 1]  # noqa: E731
    names = [option("--served-model-name")]
    if "--lora-modules" in argv:
        start = argv.index("--lora-modules") + 1
        names += [a.split("=", 1)[0] for a in argv[start:] if "=" in a and not a.startswith("--")]
    names = [n for n in names if n != os.environ.get("FAKE_VLLM_OMIT")]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"object": "list", "data": [{"id": n} for n in names]}).encode()
            self.send_response(200 if self.path == "/v1/models" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((option("--host"), int(option("--port"))), Handler)
    print("INFO:     Application startup complete.", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
