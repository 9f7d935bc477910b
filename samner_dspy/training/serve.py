"""``samner serve``: one vLLM server with the base model and the three LoRAs, plus the matching configuration.

The anchor is IEPile's published LoRA for Llama-3-8B-Instruct (``zjunlp/llama3-8b-iepile-lora``); the
explorer and archetype adapters are the ones ``samner train`` writes; ``base`` in place of one sends that
stage to the base model. Before anything starts, every adapter is checked: it exists, is a PEFT LoRA that
vLLM can load, was trained on this base model, and fits ``--max-lora-rank`` (a hub adapter not yet
downloaded is left for vLLM to fetch). The plan is the vLLM command for the installed build (CPU or CUDA)
and a configuration naming the LoRAs ``anchor``, ``explorer`` and ``archetype`` and the calibrator
``hosted_vllm/<served base model>``, which is what :meth:`SamnerConfig.vllm` expects; :func:`server` runs it
(:class:`samner_dspy.serving.vllm_server.VllmServer`).
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from samner_dspy.config import DEFAULT_BASE_MODEL, SamnerConfig
from samner_dspy.errors import SamnerError
from samner_dspy.serving.gguf_lora import CONFIG_FILE, WEIGHTS_FILE
from samner_dspy.serving.vllm_server import CPU_KV_CACHE_GIB, ENTRYPOINT, VllmServer, cpu_engine_settings, vllm_build

ANCHOR_ADAPTER = "zjunlp/llama3-8b-iepile-lora"
"""IEPile's LoRA on Meta-Llama-3-8B-Instruct, the paper's anchor extractor (section 3.1)."""
LORA_NAMES = ("anchor", "explorer", "archetype")
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The values vLLM accepts for ``--max-lora-rank``."""
WEIGHT_FILES = (WEIGHTS_FILE, "adapter_model.bin")
"""vLLM reads a PEFT adapter's weights from either; llama.cpp's conversion only from the first."""
BASE_ADAPTER = "base"
"""In place of an adapter: the stage asks the base model itself, with no LoRA."""
UNCHECKED_RANK = 64
"""``--max-lora-rank`` when a hub adapter could not be read before vLLM starts."""


class ServeError(SamnerError):
    """An adapter or option that would make vLLM fail, explained before it starts."""


@dataclass(frozen=True)
class Adapter:
    name: str
    source: str
    """As given: a local folder or a Hugging Face hub id."""
    path: Path
    base_model: str
    rank: int


@dataclass(frozen=True)
class ServePlan:
    command: list[str]
    config_toml: str
    adapters: tuple[Adapter, ...]
    """The adapters checked before start (a hub adapter vLLM will download is not among them)."""
    warnings: tuple[str, ...] = field(default_factory=tuple)
    env: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 8000
    models: tuple[str, ...] = ()
    """What ``/v1/models`` must list once the server is up: the base model's served name and each LoRA."""
    build: str = "cuda"

    def script(self) -> str:
        env = "".join(f"{name}={shlex.quote(value)} " for name, value in self.env.items())
        return (
            "#!/usr/bin/env bash\n# Written by `samner serve`.\nexec "
            + (f"env {env}" if env else "")
            + (shlex.join(self.command) + "\n")
        )


def _looks_like_hub_id(source: str) -> bool:
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", source)) and not source.startswith((".", "/", "~"))


def resolve_adapter(name: str, source: str, download: bool = False, hub_cache: str | None = None) -> Path:
    """A local folder for the adapter: the folder itself, or the hub id's snapshot in the local cache."""
    path = Path(source).expanduser()
    if path.exists():
        return path
    if not _looks_like_hub_id(source) or source == f"adapters/{name}":
        hint = f" (`samner train {name}` writes it)" if name in ("explorer", "archetype") else ""
        raise ServeError(f"the {name} adapter folder {source} does not exist{hint}")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ServeError(
            f"the {name} adapter {source} is not a local folder, and reading the hub cache needs huggingface_hub"
        ) from None
    try:
        files = [CONFIG_FILE, *WEIGHT_FILES]
        return Path(snapshot_download(source, allow_patterns=files, local_files_only=not download, cache_dir=hub_cache))
    except Exception as exc:
        if download:
            raise ServeError(f"cannot download the {name} adapter {source} from the Hugging Face hub ({exc})") from exc
        raise ServeError(
            f"the {name} adapter {source} is neither a folder here nor in the local Hugging Face cache: give the "
            f"folder `samner train {name}` wrote, or for a hub adapter download it first (hf download {source}) "
            "or pass --download"
        ) from exc


def _model_key(name: str) -> str:
    """A model's name without its folder, vendor prefix, case or punctuation, so that
    ``/models/Llama-3-8B-Instruct`` and ``meta-llama/Meta-Llama-3-8B-Instruct`` compare equal."""
    last = name.rstrip("/").rsplit("/", 1)[-1].casefold()
    return re.sub(r"^meta", "", re.sub(r"[^0-9a-z]", "", last))


def same_base_model(trained_on: str, base_model: str) -> bool:
    return trained_on == base_model or _model_key(trained_on) == _model_key(base_model)


def inspect_adapter(name: str, source: str, path: Path) -> Adapter:
    """Read and check a PEFT adapter folder; the errors say what is wrong and what to do."""
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise ServeError(
            f"the {name} adapter at {path} has no {CONFIG_FILE}: it is not a PEFT adapter folder "
            f"(train one with `samner train {name}`, or point at the folder that holds {CONFIG_FILE})"
        )
    if not any((path / weights).is_file() for weights in WEIGHT_FILES):
        raise ServeError(f"the {name} adapter at {path} has no weights ({' or '.join(WEIGHT_FILES)})")
    try:
        config: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ServeError(f"{config_path} is not valid JSON ({exc})") from exc
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise ServeError(f"the {name} adapter is a {config.get('peft_type')} adapter; vLLM serves only LoRA")
    if config.get("use_dora"):
        raise ServeError(f"the {name} adapter uses DoRA, which vLLM cannot serve; retrain it without DoRA")
    ranks = [config.get("r", 8), *(config.get("rank_pattern") or {}).values()]
    if not all(isinstance(r, int) and r > 0 for r in ranks):
        raise ServeError(f"the {name} adapter's rank {config.get('r')!r} in {config_path} is not a positive integer")
    base = config.get("base_model_name_or_path")
    if not isinstance(base, str) or not base:
        raise ServeError(f"{config_path} does not say which base model the {name} adapter was trained on")
    return Adapter(name, source, path, base, max(ranks))


def check_adapters(
    adapters: list[Adapter], base_model: str, max_lora_rank: int | None, check_base: bool = True
) -> tuple[int, list[str]]:
    """The ``--max-lora-rank`` to serve with, and warnings; raises on what vLLM would refuse or misuse."""
    problems: list[str] = []
    warnings: list[str] = []
    for adapter in adapters:
        if not same_base_model(adapter.base_model, base_model):
            message = (
                f"the {adapter.name} adapter ({adapter.source}) was trained on {adapter.base_model}, "
                f"but the server's base model is {base_model}: a LoRA only works on the model it was trained on"
            )
            (problems if check_base else warnings).append(message)
    needed = max(adapter.rank for adapter in adapters)
    if max_lora_rank is None:
        fitting = [r for r in VLLM_LORA_RANKS if r >= needed]
        if not fitting:
            problems.append(f"an adapter has rank {needed}, above the largest rank vLLM serves ({VLLM_LORA_RANKS[-1]})")
        max_lora_rank = fitting[0] if fitting else needed
    else:
        if max_lora_rank not in VLLM_LORA_RANKS:
            problems.append(f"--max-lora-rank {max_lora_rank} is not one vLLM accepts: {list(VLLM_LORA_RANKS)}")
        for adapter in adapters:
            if adapter.rank > max_lora_rank:
                problems.append(
                    f"the {adapter.name} adapter has rank {adapter.rank}, above --max-lora-rank {max_lora_rank}: "
                    "vLLM would refuse to load it; raise --max-lora-rank or leave it out to size it automatically"
                )
    if problems:
        raise ServeError("cannot serve:\n  - " + "\n  - ".join(problems))
    return max_lora_rank, warnings


def checked_adapters(
    sources: dict[str, str],
    base_model: str,
    max_lora_rank: int | None = None,
    check_base: bool = True,
    download: bool = False,
    hub_cache: str | None = None,
) -> tuple[list[Adapter], int, list[str]]:
    """The adapters (served name -> folder or hub id) found and checked, the LoRA rank to serve with, warnings."""
    adapters = [inspect_adapter(n, s, resolve_adapter(n, s, download, hub_cache)) for n, s in sources.items()]
    rank, warnings = check_adapters(adapters, base_model, max_lora_rank, check_base)
    return adapters, rank, warnings


def _maybe_hub_adapter(name: str, source: str) -> bool:
    """Whether a missing adapter may be one vLLM downloads: a hub id that is not a folder here. ``samner train``'s
    output folders (``adapters/<stage>``, the defaults) look like hub ids but are never on the hub."""
    path = Path(source).expanduser()
    return (
        _looks_like_hub_id(source) and not path.exists() and not path.parent.is_dir() and source != f"adapters/{name}"
    )


def served_base_name(base_model: str) -> str:
    """The name vLLM serves the base model under: a hub id as it is, a local folder by its own name."""
    path = Path(base_model).expanduser()
    if path.is_dir() or not _looks_like_hub_id(base_model):
        return path.name or base_model
    return base_model


def config_toml(api_base: str, served_model: str, stage_models: dict[str, str] | None = None) -> str:
    """The program's configuration for this server, as a TOML file :meth:`SamnerConfig.from_toml` reads.

    ``stage_models`` names the model each stage asks for (default: its LoRA, the calibrator the base model).
    """
    config = SamnerConfig.vllm(api_base, served_model)
    lines = [
        "# Written by `samner serve`: the SAM-NER stages on one vLLM server.",
        "[defaults]",
        f"api_base = {json.dumps(api_base)}",
        f"base_model = {json.dumps(served_model)}",
    ]
    for stage in ("anchor", "explorer", "archetype", "calibrator"):
        model = (stage_models or {}).get(stage) or config.endpoint(stage).model
        lines += ["", f"[stages.{stage}]", f"model = {json.dumps(model)}"]
    return "\n".join(lines) + "\n"


def plan(
    explorer: str,
    archetype: str,
    *,
    anchor: str = ANCHOR_ADAPTER,
    base_model: str = DEFAULT_BASE_MODEL,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_lora_rank: int | None = None,
    tensor_parallel_size: int = 1,
    gpu_memory_utilization: float | None = None,
    max_model_len: int | None = None,
    kv_cache_gib: float = CPU_KV_CACHE_GIB,
    extra_args: list[str] | None = None,
    check_base: bool = True,
    download: bool = False,
    hub_cache: str | None = None,
    build: str | None = None,
    dry_run: bool = False,
) -> ServePlan:
    """Check the adapters and build the vLLM command and the matching configuration.

    An adapter given as ``base`` is no LoRA: that stage asks the base model itself (in the stage's own
    prompt format). A hub adapter missing from the local cache cannot be checked here; vLLM downloads it
    when it starts, and the plan says so in its warnings. ``build`` is ``cpu`` or ``cuda`` (default: the
    installed vLLM's, CUDA when none is installed). A ``dry_run`` plan turns every problem into a warning, so
    that the command it would run is always printed.
    """
    build = build or vllm_build() or "cuda"
    sources = {"anchor": anchor, "explorer": explorer, "archetype": archetype}
    lora_sources = {name: source for name, source in sources.items() if source != BASE_ADAPTER}
    warnings: list[str] = []
    adapters: list[Adapter] = []
    unchecked: dict[str, str] = {}
    for name, source in lora_sources.items():
        if not download and _maybe_hub_adapter(name, source):
            try:
                resolve_adapter(name, source, hub_cache=hub_cache)
            except ServeError:
                unchecked[name] = source
                warnings.append(
                    f"the {name} adapter {source} is not in the local Hugging Face cache, so it was not checked: "
                    "vLLM downloads it when it starts (or run with --download to fetch and check it first)"
                )
                continue
        try:
            adapters.append(inspect_adapter(name, source, resolve_adapter(name, source, download, hub_cache)))
        except ServeError as problem:
            if not dry_run:
                raise
            unchecked[name] = source
            warnings.append(f"{problem}; vLLM would fail to start with this command until that is fixed")
    rank = 0
    if adapters:
        try:
            rank, more = check_adapters(adapters, base_model, max_lora_rank, check_base)
            warnings += more
        except ServeError as problem:
            if not dry_run:
                raise
            warnings.append(str(problem).replace("cannot serve:", "vLLM would refuse this command:"))
            rank = max(adapter.rank for adapter in adapters)
    if unchecked and max_lora_rank is None:
        rank = max(rank, UNCHECKED_RANK)
        warnings.append(f"--max-lora-rank {rank} assumed for the unchecked adapters; vLLM refuses one that exceeds it")
    served = served_base_name(base_model)
    command = [sys.executable, *ENTRYPOINT, "--model", base_model, "--served-model-name", served]
    command += ["--host", host, "--port", str(port)]
    modules = {adapter.name: str(adapter.path) for adapter in adapters} | unchecked
    if modules:
        command += ["--enable-lora", "--lora-modules", *(f"{name}={modules[name]}" for name in lora_sources)]
        command += ["--max-lora-rank", str(max_lora_rank or rank), "--max-loras", str(len(modules))]
    if tensor_parallel_size != 1:
        command += ["--tensor-parallel-size", str(tensor_parallel_size)]
    if gpu_memory_utilization is not None:
        command += ["--gpu-memory-utilization", str(gpu_memory_utilization)]
    env: dict[str, str] = {}
    if build == "cpu":
        env, engine = cpu_engine_settings(kv_cache_gib, max_model_len)
        command += [arg for name, value in engine.items() for arg in (f"--{name.replace('_', '-')}", str(value))]
    elif max_model_len is not None:
        command += ["--max-model-len", str(max_model_len)]
    command += list(extra_args or [])
    client_host = "localhost" if host in ("0.0.0.0", "::", "") else host
    stage_models = {name: f"hosted_vllm/{served}" for name, source in sources.items() if source == BASE_ADAPTER}
    toml = config_toml(f"http://{client_host}:{port}/v1", served, stage_models)
    return ServePlan(
        command=command,
        config_toml=toml,
        adapters=tuple(adapters),
        warnings=tuple(warnings),
        env=env,
        host=host,
        port=port,
        models=(served, *lora_sources),
        build=build,
    )


def write(serve_plan: ServePlan, folder: str | Path) -> tuple[Path, Path]:
    """``vllm-serve.sh`` and ``samner.toml`` in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "vllm-serve.sh"
    script.write_text(serve_plan.script(), encoding="utf-8")
    script.chmod(0o755)
    config = folder / "samner.toml"
    config.write_text(serve_plan.config_toml, encoding="utf-8")
    return script, config


def server(serve_plan: ServePlan, log_path: str | Path) -> VllmServer:
    """The plan's vLLM server, not started yet."""
    return VllmServer(serve_plan.command, serve_plan.models, serve_plan.host, serve_plan.port, serve_plan.env, log_path)
