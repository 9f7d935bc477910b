"""The real stack the vLLM tests run on: the embedded model exported as a Hugging Face folder, three LoRAs
that ``samner train`` writes on it, and ``samner serve`` running vLLM with them, as a user would start it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from samner_dspy.serving.vllm_server import metric_total, parse_metrics

FIXTURES = Path(__file__).parent / "fixtures" / "training"
SERVED_BASE = "qwen2.5-coder-0.5b"


def train_served_adapters(base: Path, folder: Path) -> dict[str, Path]:
    """anchor, explorer and archetype LoRAs from the builders' output on the fixture data, each trained for two
    steps at a tiny learning rate through ``samner train``: real adapter folders that answer like the base model
    (a fresh LoRA starts as the identity), so no reply of the tests runs to its token limit."""
    from samner_dspy.cli import main

    data = {"explorer": folder / "explorer.jsonl", "archetype": folder / "archetype.jsonl"}
    assert main(["build", "explorer", "-i", str(FIXTURES / "pile-ner.json"), "-o", str(data["explorer"])]) == 0
    assert main(["build", "archetype", "-i", str(FIXTURES / "iepile-ner.json"), "-o", str(data["archetype"])]) == 0
    adapters = {}
    for name, stage in (("anchor", "explorer"), ("explorer", "explorer"), ("archetype", "archetype")):
        adapters[name] = folder / name
        options = "--max-steps 2 --batch-size 1 --grad-accum 1 --learning-rate 1e-7 --logging-steps 1"
        command = ["train", stage, "--data", str(data[stage]), "--base-model", str(base), "-o", str(adapters[name])]
        assert main([*command, *options.split(), "--seed", str(len(adapters))]) == 0
    return adapters


@dataclass
class Stack:
    process: subprocess.Popen[bytes]
    folder: Path
    port: int

    @property
    def config(self) -> Path:
        return self.folder / "samner.toml"

    @property
    def log(self) -> Path:
        return self.folder / "vllm.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return (self.folder / "serve.out").read_text(encoding="utf-8", errors="replace")

    def lora_requests(self) -> Counter[str]:
        """Requests vLLM logged as received, by the LoRA it says served them (``base`` for none): vLLM's own
        record of where each request went (it logs them with --enable-log-requests)."""
        pattern = r"Received request .*?lora_request: (None|LoRARequest\(lora_name='([^']+)')"
        found = re.findall(pattern, self.log_text())
        return Counter(name or "base" for _, name in found)

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def metric(self, name: str, **labels: str) -> float:
        import httpx

        return metric_total(parse_metrics(httpx.get(f"{self.url}/metrics", timeout=10).text), name, **labels)

    def vllm_pid(self) -> int | None:
        match = re.search(r"Started server process \[(\d+)\]", self.log_text())
        return int(match.group(1)) if match else None


def start_stack(base: Path, adapters: dict[str, Path], folder: Path, port: int, timeout_s: float = 900) -> Stack:
    """``samner serve`` in its own process, as a user runs it; returns once it says vLLM is serving."""
    command = [sys.executable, "-m", "samner_dspy.cli", "serve", "--base-model", str(base), "--port", str(port)]
    command += [f"--{name}={path}" for name, path in adapters.items()]
    command += ["--output-dir", str(folder), "--", "--enable-log-requests"]
    folder.mkdir(parents=True, exist_ok=True)
    out = (folder / "serve.out").open("wb")
    stack = Stack(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=os.environ), folder, port)
    out.close()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if "vLLM is serving" in stack.output():
            return stack
        if stack.process.poll() is not None:
            raise RuntimeError(f"samner serve exited with {stack.process.returncode}:\n{stack.output()}")
        time.sleep(1)
    stop_stack(stack)
    raise RuntimeError(f"samner serve did not report vLLM up within {timeout_s:.0f} s:\n{stack.output()}")


def stop_stack(stack: Stack, timeout_s: float = 60) -> int:
    if stack.process.poll() is None:
        stack.process.send_signal(signal.SIGTERM)
    return stack.process.wait(timeout=timeout_s)
