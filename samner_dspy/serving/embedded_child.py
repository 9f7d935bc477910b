"""llama.cpp's OpenAI-compatible server, leaving when the process that started it is gone.

A killed annotation or evaluation (SIGKILL included) runs no clean-up, and its server, holding 1-3 GB,
would live on as an orphan; so the server watches its parent and exits with it. It also decodes greedy,
grammar-constrained requests with :mod:`samner_dspy.serving.embedded_sampling` (the same tokens, about twice as fast),
and with ``--samner_prefix_dir DIR`` keeps evaluated prompts on disk (:mod:`samner_dspy.serving.embedded_prefixes`);
with ``--samner_whole_prompts`` it instead evaluates every prompt whole, so no answer depends on the request before.
A LoRA llama.cpp refuses stops it (llama-cpp-python would serve the base model). It also takes OpenAI's
``json_schema`` response format, which llama-cpp-python's server refuses, as the
``json_object`` with a ``schema`` that it understands: the program then asks it as it asks vLLM, through
dspy's own OpenAI-compatible client, without importing LiteLLM (about 4 s of a first annotation on 2 cores).

    python -m samner_dspy.serving.embedded_child [--samner_prefix_dir DIR | --samner_whole_prompts] --model M.gguf ...
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import threading
import time
from typing import Any


def _exit_when_orphaned(parent: int, interval_s: float = 1.0) -> None:
    while os.getppid() == parent:
        time.sleep(interval_s)
    os._exit(0)


def llama_cpp_response_format(body: dict[str, Any]) -> dict[str, Any]:
    """A chat request with OpenAI's ``{"type": "json_schema", "json_schema": {"schema": S}}`` response format
    rewritten as llama.cpp's ``{"type": "json_object", "schema": S}``; any other request unchanged."""
    wanted = body.get("response_format")
    if isinstance(wanted, dict) and wanted.get("type") == "json_schema":
        schema = (wanted.get("json_schema") or {}).get("schema")
        body = {**body, "response_format": {"type": "json_object", **({"schema": schema} if schema else {})}}
    return body


def accepting_json_schema(app: Any) -> Any:
    """Wrap an ASGI app so chat requests may use OpenAI's ``json_schema`` response format."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or not scope.get("path", "").endswith("/chat/completions"):
            return await app(scope, receive, send)
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        try:
            body = json.loads(raw)
            if isinstance(body, dict):
                raw = json.dumps(llama_cpp_response_format(body)).encode("utf-8")
        except ValueError:
            pass  # not JSON: the server itself says so
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
        scope = {**scope, "headers": [*headers, (b"content-length", str(len(raw)).encode())]}
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()  # the client's disconnect, when it comes
            replayed = True
            return {"type": "http.request", "body": raw, "more_body": False}

        return await app(scope, replay, send)

    return wrapped


def _install_json_schema_format() -> None:
    from llama_cpp.server import app as server_app

    create_app = server_app.create_app
    server_app.create_app = lambda *args, **kwargs: accepting_json_schema(create_app(*args, **kwargs))


def refuse_failed_lora() -> None:
    """Make a LoRA that llama.cpp refuses stop the server. llama-cpp-python checks the adapter llama.cpp returns with
    ``is None``, but a refused one (another model's, say) comes back as a NULL ctypes pointer, which is not None: the
    server would start and answer on the base model as if it had the LoRA."""
    from llama_cpp import llama_cpp

    original = llama_cpp.llama_adapter_lora_init
    if getattr(original, "_samner_checked", False):
        return

    def checked(model: Any, path: bytes) -> Any:
        adapter = original(model, path)
        if not adapter:
            raise RuntimeError(f"llama.cpp could not load the LoRA adapter {path.decode(errors='replace')}")
        return adapter

    checked._samner_checked = True  # type: ignore[attr-defined]
    llama_cpp.llama_adapter_lora_init = checked


def evaluate_whole_prompts() -> None:
    """Make every request evaluate its whole prompt. llama-cpp-python evaluates only what differs from the last
    prompt, and evaluating a prompt's rest in a batch of its own moves the logits in their last bits, so a greedy
    answer could depend on which request came before (a Ray run and a local batch, the same requests in another
    order, once disagreed in CI). Whole, the same prompt gives the same answer in any order, at the cost of its time."""
    import llama_cpp

    original = llama_cpp.Llama.generate
    if getattr(original, "_samner_whole", False):
        return

    def generate(self: Any, *args: Any, **kwargs: Any) -> Any:
        self.n_tokens = 0  # nothing kept: llama-cpp-python resets and evaluates every token of the prompt
        return original(self, *args, **kwargs)

    generate._samner_whole = True  # type: ignore[attr-defined]
    llama_cpp.Llama.generate = generate


def main() -> None:
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()
    from samner_dspy.serving.embedded_sampling import install

    install()  # greedy decoding under a grammar without scanning the whole vocabulary per token
    args = sys.argv[1:]
    if args[:1] == ["--samner_prefix_dir"]:
        from samner_dspy.serving import embedded_prefixes

        embedded_prefixes.install(embedded_prefixes.PrefixStore(args[1]))
        args = args[2:]
    elif args[:1] == ["--samner_whole_prompts"]:
        evaluate_whole_prompts()
        args = args[1:]
    _install_json_schema_format()
    if "--lora_path" in args:
        refuse_failed_lora()
    sys.argv = ["llama_cpp.server", *args]
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
