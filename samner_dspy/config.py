"""Where each stage's LM lives, from one place: Python objects, a TOML file, or environment variables.

The default configuration is one vLLM server on localhost serving the LoRAs ``anchor``, ``explorer`` and
``archetype`` plus its base model as the calibrator. ``model = "embedded"`` routes a stage to the model
that ships with the ``local`` extra instead, ``model = "embedded:qwen2.5-coder-1.5b"`` to a named one (the
calibrator on the larger model while the extractors stay on the small one, say).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import tomllib

from samner_dspy.errors import ConfigError

STAGES: tuple[str, ...] = ("anchor", "explorer", "archetype", "calibrator")
EMBEDDED = "embedded"
DEFAULT_API_BASE = "http://localhost:8000/v1"
DEFAULT_BASE_MODEL = "meta-llama/Meta-Llama-3-8B-Instruct"

StructuredOutput = Literal["json_schema", "llama_cpp", "none"]


@dataclass(frozen=True)
class Endpoint:
    """One stage's LM: a LiteLLM model string and how to reach and sample it."""

    model: str
    api_base: str | None = None
    api_key_env: str | None = None
    """Name of the environment variable that holds the key; the key itself never enters a config."""
    temperature: float = 0.0
    max_tokens: int = 512
    timeout_s: float = 120.0
    num_retries: int = 2
    structured_output: StructuredOutput = "json_schema"
    """How to ask for schema-constrained decoding: ``json_schema`` (vLLM, OpenAI), ``llama_cpp``, or ``none``."""
    adapter: str | None = None
    """An embedded stage's LoRA: the folder ``samner train`` wrote (converted to llama.cpp's format on first use) or
    a llama.cpp GGUF adapter; every server of the stage applies it. On vLLM the model name picks the LoRA instead."""

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError(f"an endpoint needs a non-empty model string, got {self.model!r}")
        if self.structured_output not in ("json_schema", "llama_cpp", "none"):
            raise ConfigError(
                f"structured_output must be json_schema, llama_cpp or none, got {self.structured_output!r}"
            )
        if self.max_tokens <= 0:
            raise ConfigError(f"max_tokens must be positive, got {self.max_tokens}")
        if self.adapter is not None and (not isinstance(self.adapter, str) or not self.is_embedded):
            raise ConfigError(
                f'adapter = {self.adapter!r} is for a stage on the embedded model (model = "embedded"), not '
                f"{self.model}: on vLLM the model name picks the LoRA (hosted_vllm/<lora>, see samner serve)"
            )

    @property
    def is_embedded(self) -> bool:
        """``embedded`` (the configuration's embedded model) or ``embedded:<model>`` (that one, for this stage)."""
        return self.model == EMBEDDED or self.model.startswith(EMBEDDED + ":")

    def embedded_model(self, default: str | None = None) -> str | None:
        """Which embedded model serves this stage: the one its model string names, else ``default``."""
        if self.model.startswith(EMBEDDED + ":"):
            return self.model.split(":", 1)[1] or default
        return default

    def api_key(self) -> str | None:
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        if key is None:
            raise ConfigError(f"environment variable {self.api_key_env} (the API key of {self.model}) is not set")
        return key


@dataclass(frozen=True)
class CachePolicy:
    """dspy's response cache, off unless asked for.

    A LoRA retrained under the same name would otherwise be answered from stale entries: entries are
    keyed by ``revision`` too, so bump it (for example to the adapters' checksum) after retraining.
    """

    enabled: bool = False
    directory: str | None = None
    revision: str = ""


@dataclass(frozen=True)
class SamnerConfig:
    anchor: Endpoint = field(default_factory=lambda: Endpoint("hosted_vllm/anchor", DEFAULT_API_BASE))
    explorer: Endpoint = field(default_factory=lambda: Endpoint("hosted_vllm/explorer", DEFAULT_API_BASE))
    archetype: Endpoint = field(default_factory=lambda: Endpoint("hosted_vllm/archetype", DEFAULT_API_BASE))
    calibrator: Endpoint = field(
        default_factory=lambda: Endpoint(f"hosted_vllm/{DEFAULT_BASE_MODEL}", DEFAULT_API_BASE)
    )
    cache: CachePolicy = field(default_factory=CachePolicy)
    embedded_model: str | None = None
    """Which embedded model serves ``model = "embedded"`` stages; None means the default one."""

    def endpoint(self, stage: str) -> Endpoint:
        if stage not in STAGES:
            raise ConfigError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
        return getattr(self, stage)

    def with_stage(self, stage: str, endpoint: Endpoint | str, **overrides: Any) -> SamnerConfig:
        """A copy with one stage swapped, e.g. ``config.with_stage("calibrator", "openai/gpt-4o-mini")``."""
        self.endpoint(stage)
        if isinstance(endpoint, str):
            endpoint = Endpoint(endpoint, **overrides)
        elif overrides:
            endpoint = replace(endpoint, **overrides)
        return replace(self, **{stage: endpoint})

    @classmethod
    def vllm(cls, api_base: str = DEFAULT_API_BASE, base_model: str = DEFAULT_BASE_MODEL) -> SamnerConfig:
        """One vLLM server with the three LoRAs and the base model as calibrator."""
        return cls(
            anchor=Endpoint("hosted_vllm/anchor", api_base),
            explorer=Endpoint("hosted_vllm/explorer", api_base),
            archetype=Endpoint("hosted_vllm/archetype", api_base),
            calibrator=Endpoint(f"hosted_vllm/{base_model}", api_base),
        )

    @classmethod
    def embedded(cls, model: str | None = None, trained: bool = True) -> SamnerConfig:
        """Every stage on the embedded model (the ``local`` extra), served on 127.0.0.1; with ``trained``, the anchor
        and archetype stages on the adapters committed for that model where there are
        (:data:`samner_dspy.serving.trained.DEFAULT_ADAPTERS`; non-commercial: they were trained on Pile-NER)."""
        from samner_dspy.serving.trained import with_default_adapters  # it reads the embedded models' catalogue

        endpoint = Endpoint(EMBEDDED, max_tokens=384)
        config = cls(endpoint, endpoint, endpoint, endpoint, embedded_model=model)
        return with_default_adapters(config) if trained else config

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SamnerConfig:
        """Read the TOML layout: ``[defaults]``, ``[stages.<name>]``, ``[cache]``, ``[embedded]``."""
        known = {"defaults", "stages", "cache", "embedded"}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown configuration sections {sorted(unknown)}; expected {sorted(known)}")
        defaults = dict(data.get("defaults", {}))
        stages = data.get("stages", {})
        unknown_stages = set(stages) - set(STAGES)
        if unknown_stages:
            raise ConfigError(f"unknown stages {sorted(unknown_stages)}; stages are {', '.join(STAGES)}")
        base = cls.vllm(defaults.pop("api_base", DEFAULT_API_BASE), defaults.pop("base_model", DEFAULT_BASE_MODEL))
        endpoints = {
            stage: _endpoint(f"stages.{stage}", base.endpoint(stage), {**defaults, **stages.get(stage, {})})
            for stage in STAGES
        }
        cache = _build(CachePolicy, "cache", data.get("cache", {}))
        embedded_model = data.get("embedded", {}).get("model")
        return cls(**endpoints, cache=cache, embedded_model=embedded_model)

    @classmethod
    def from_toml(cls, path: str | Path) -> SamnerConfig:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"configuration file {str(path)!r} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {str(path)!r} is not valid TOML: {exc}") from exc
        return cls.from_mapping(data)

    def with_env(self, environ: Mapping[str, str] | None = None) -> SamnerConfig:
        """Apply ``SAMNER_<STAGE>_<FIELD>`` and ``SAMNER_API_BASE`` overrides from the environment."""
        environ = os.environ if environ is None else environ
        config = self
        shared_base = environ.get("SAMNER_API_BASE")
        for stage in STAGES:
            overrides: dict[str, Any] = {}
            if shared_base:
                overrides["api_base"] = shared_base
            for f in fields(Endpoint):
                value = environ.get(stage_variable(stage, f.name))
                if value is not None:
                    overrides[f.name] = value
            if overrides:
                config = replace(
                    config, **{stage: _endpoint(stage_variable(stage, "*"), config.endpoint(stage), overrides)}
                )
        return config


def _coerce_field(where: str, name: str, value: Any, current: Any) -> Any:
    if isinstance(current, bool) and isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(current, int | float) and not isinstance(current, bool) and isinstance(value, str):
        try:
            return type(current)(value)
        except ValueError:
            raise ConfigError(f"{where}.{name} must be a number, got {value!r}") from None
    if name in ("api_base", "adapter") and value == "":
        return None
    return value


def _build(kind: type, where: str, values: Mapping[str, Any], current: Any = None) -> Any:
    names = {f.name for f in fields(kind)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown keys {sorted(unknown)} in {where}; allowed: {sorted(names)}")
    template = current if current is not None else kind()
    kwargs = {name: _coerce_field(where, name, value, getattr(template, name)) for name, value in values.items()}
    try:
        return replace(template, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _endpoint(where: str, current: Endpoint, values: Mapping[str, Any]) -> Endpoint:
    return _build(Endpoint, where, values, current)


def stage_variable(stage: str, field_name: str) -> str:
    """The environment variable that overrides one field of a stage's endpoint: ``SAMNER_ANCHOR_ADAPTER``."""
    return f"SAMNER_{stage.upper()}_{field_name.upper()}"


def environment_settings(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``SAMNER_*`` variables that can change what a program answers, as set (those :func:`resolve_config` reads,
    and the embedded engine's prefix store and threads): a report names them beside its command, or a stage's
    adapter (or model) chosen by the environment would be invisible there."""
    environ = os.environ if environ is None else environ
    names = [
        "SAMNER_CONFIG",
        "SAMNER_EMBEDDED_MODEL",
        "SAMNER_API_BASE",
        "SAMNER_PREFIX_STORE",
        "SAMNER_EMBEDDED_THREADS",
    ]
    names += [stage_variable(stage, f.name) for stage in STAGES for f in fields(Endpoint)]
    return {name: environ[name] for name in names if name in environ}


def resolve_config(
    config: SamnerConfig | str | Path | Mapping[str, Any] | None = None, trained: bool = True
) -> SamnerConfig:
    """The configuration a program runs with.

    An explicit value wins (object, TOML path or mapping). Otherwise ``SAMNER_CONFIG`` names a TOML file,
    and with neither, every stage runs on the embedded model (on its committed adapters unless ``trained`` is
    False: :meth:`SamnerConfig.embedded`). Environment overrides apply last.
    """
    if isinstance(config, SamnerConfig):
        resolved = config
    elif isinstance(config, str | Path):
        resolved = SamnerConfig.from_toml(config)
    elif isinstance(config, Mapping):
        resolved = SamnerConfig.from_mapping(config)
    elif config is None and os.environ.get("SAMNER_CONFIG"):
        resolved = SamnerConfig.from_toml(os.environ["SAMNER_CONFIG"])
    elif config is None:
        resolved = SamnerConfig.embedded(os.environ.get("SAMNER_EMBEDDED_MODEL"), trained)
    else:
        raise ConfigError(f"cannot read a configuration from {type(config).__name__}")
    return resolved.with_env()
