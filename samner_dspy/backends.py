"""Turning configured endpoints into dspy LMs, checking they answer, and asking for constrained output."""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import dspy
import httpx

from samner_dspy.config import STAGES, CachePolicy, Endpoint, SamnerConfig
from samner_dspy.errors import EndpointRequestError, EndpointUnreachableError

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@dataclass
class StageBackend:
    """A stage's LM plus what the program needs to know about it: a display name, a URL, its dialect."""

    stage: str
    lm: dspy.BaseLM
    model: str
    api_base: str | None = None
    structured_output: str = "json_schema"
    logprobs: bool = False
    """Ask for token log-probabilities (they feed entity scores). Off where the server cannot give them: the
    embedded llama.cpp server runs without ``logits_all`` and fails such requests; turned off for good after a
    request that asked for them failed."""

    def request_config(self, json_schema: dict[str, Any] | None, name: str) -> dict[str, Any]:
        """Per-request LM kwargs: a decoding constraint from ``json_schema``, and logprobs where supported."""
        extra: dict[str, Any] = {"logprobs": True} if self.logprobs else {}
        if json_schema is None or self.structured_output == "none":
            return extra
        if self.structured_output == "llama_cpp":
            return {"response_format": {"type": "json_object", "schema": json_schema}, **extra}
        return {
            "response_format": {"type": "json_schema", "json_schema": {"name": name, "schema": json_schema}},
            **extra,
        }

    def unreachable(self, reason: object) -> EndpointUnreachableError:
        return EndpointUnreachableError(self.api_base or self.model, self.stage, str(reason))

    def request_failed(self, exc: BaseException) -> EndpointRequestError:
        """The first line of the LM layer's message is the reason; the rest is advice about its own internals."""
        reason = (str(exc).strip().splitlines() or [""])[0]
        return EndpointRequestError(self.api_base or self.model, self.stage, f"{type(exc).__name__}: {reason}")

    @property
    def max_tokens(self) -> int | None:
        return getattr(self.lm, "kwargs", {}).get("max_tokens")


def revision_key(revision: str) -> int:
    """An integer form of a cache revision string, for dspy's ``rollout_id``."""
    return int(hashlib.sha256(revision.encode("utf-8")).hexdigest()[:12], 16)


SELF_HOSTED_PREFIX = "hosted_vllm/"
SELF_HOSTED_PROVIDER = "samner-vllm"
_registration_lock = threading.Lock()


def _declare_self_hosted_provider() -> None:
    """Declare self-hosted vLLM endpoints to dspy as a provider with no price list.

    dspy prices every reply from a model metadata table; a LoRA name is in no table, so each request
    scanned all of it (about 8 ms of CPU, a third of the program's own cost per sentence). A declared
    provider with no metadata namespace is not priced at all, which is the truth for a server you host.
    """
    from dspy.lm15 import AccessPolicy, ModelSupport, ProviderDefinition, register_provider, registered_providers

    definition = ProviderDefinition.chat(
        AccessPolicy(provider=SELF_HOSTED_PROVIDER, base_url="http://localhost:8000/v1"),
        compat="vllm",
        placeholder_key="EMPTY",
        note="a self-hosted vLLM server (samner-dspy)",
    )
    with _registration_lock:
        if not any(p.id == SELF_HOSTED_PROVIDER for p in registered_providers()):
            register_provider(definition, metadata_namespaces=(), supports=ModelSupport(response_schema=True))


def wire_model(endpoint: Endpoint) -> str:
    """The model string dspy is given: ``hosted_vllm/<name>`` with an ``api_base`` goes by the unpriced route.

    The request is the same either way (``"model": "<name>"`` to ``<api_base>/chat/completions``). The route
    carries vLLM's ``json_schema`` response format only; llama.cpp's (a ``schema`` key) keeps dspy's route."""
    if (
        endpoint.api_base
        and endpoint.model.startswith(SELF_HOSTED_PREFIX)
        and endpoint.structured_output != "llama_cpp"
    ):
        _declare_self_hosted_provider()
        return f"{SELF_HOSTED_PROVIDER}/{endpoint.model.removeprefix(SELF_HOSTED_PREFIX)}"
    return endpoint.model


def build_lm(endpoint: Endpoint, cache: CachePolicy) -> dspy.LM:
    kwargs: dict[str, Any] = {}
    if cache.enabled and cache.revision:
        # rollout_id is part of dspy's cache key and stripped before the request is sent, so entries of
        # another revision are never served (dspy warns that it has "no effect" at temperature 0: it
        # means on sampling, not on the key).
        kwargs["rollout_id"] = revision_key(cache.revision)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="rollout_id has no effect")
        return dspy.LM(
            wire_model(endpoint),
            api_base=endpoint.api_base,
            api_key=endpoint.api_key() or ("EMPTY" if endpoint.api_base else None),
            temperature=endpoint.temperature,
            max_tokens=endpoint.max_tokens,
            timeout=endpoint.timeout_s,
            num_retries=endpoint.num_retries,
            cache=cache.enabled,
            **kwargs,
        )


def check_reachable(api_base: str, stage: str, timeout_s: float = 5.0) -> None:
    """Fail fast, naming the URL, when an OpenAI-compatible server does not answer ``GET /models``.

    A server that takes the connection but is slow to answer is busy, not unreachable (llama.cpp's single slot
    holds ``/models`` while it decodes): the stage's own requests wait for it under their own timeout."""
    url = api_base.rstrip("/") + "/models"
    try:
        response = httpx.get(url, timeout=timeout_s)
    except httpx.ReadTimeout:
        return
    except httpx.HTTPError as exc:
        raise EndpointUnreachableError(api_base, stage, f"{type(exc).__name__}: {exc}") from exc
    if response.status_code >= 500:
        raise EndpointUnreachableError(api_base, stage, f"GET {url} answered HTTP {response.status_code}")


PROMPT_ROLES: dict[str, str] = {"verifier": "anchor", "direct": "calibrator"}
"""Requests with a prompt of their own that run on a stage's model: CCR's verification on the anchor's, the
direct-prompting baseline on the calibrator's. On the embedded model each gets a server of its own, so it
does not evict its stage's evaluated prompt prefix (see :func:`samner_dspy.embedded.shared_servers`)."""


def backend_for(backends: Mapping[str, StageBackend], role: str) -> StageBackend:
    """The backend of a stage, or of a role in :data:`PROMPT_ROLES` (its stage's backend where it has none)."""
    try:
        return backends[role]
    except KeyError:
        if role not in PROMPT_ROLES:
            raise
        return backends[PROMPT_ROLES[role]]


class _Backends(dict):
    """The stages' backends; a role's backend is built on first use (only then is its embedded server started)."""

    def __init__(self, stages: dict[str, StageBackend], build_role: Callable[[str], StageBackend | None]) -> None:
        super().__init__(stages)
        self._build_role = build_role
        self._lock = threading.Lock()

    def __missing__(self, role: str) -> StageBackend:
        if role not in PROMPT_ROLES:
            raise KeyError(role)
        with self._lock:
            if role not in self:
                self[role] = self._build_role(role) or self[PROMPT_ROLES[role]]
            return self[role]


def _embedded_endpoint(endpoint: Endpoint, api_base: str) -> Endpoint:
    """A stage's embedded endpoint, as the local llama.cpp server is asked: by its served name, at its URL."""
    from samner_dspy.embedded import SERVED_NAME

    return Endpoint(
        f"openai/{SERVED_NAME}",
        api_base=api_base,
        temperature=endpoint.temperature,
        max_tokens=endpoint.max_tokens,
        timeout_s=endpoint.timeout_s,
        num_retries=endpoint.num_retries,
    )


def build_backends(config: SamnerConfig, overrides: dict[str, dspy.BaseLM] | None = None) -> dict[str, StageBackend]:
    """One backend per stage (and, on first use, per prompt role); embedded stages get one local server each,
    started here together."""
    overrides = overrides or {}
    if config.cache.enabled and config.cache.directory:
        dspy.configure_cache(enable_disk_cache=True, enable_memory_cache=True, disk_cache_dir=config.cache.directory)
    embedded = [s for s in STAGES if s not in overrides and config.endpoint(s).is_embedded]
    servers: dict[str, Any] = {}
    if embedded:
        from samner_dspy.embedded import shared_servers

        servers = shared_servers(embedded, config.embedded_model)
    backends: dict[str, StageBackend] = {}
    checked: set[str] = set()

    def build(stage: str, endpoint: Endpoint, name: str) -> StageBackend:
        dialect = endpoint.structured_output
        if endpoint.is_embedded:
            from samner_dspy.embedded import shared_server

            server = servers.get(name) or shared_server(config.embedded_model, name)
            endpoint = _embedded_endpoint(endpoint, server.api_base)
            dialect = "llama_cpp" if dialect != "none" else "none"
        if endpoint.api_base and endpoint.api_base not in checked:
            check_reachable(endpoint.api_base, stage)
            checked.add(endpoint.api_base)
        return StageBackend(
            stage,
            build_lm(endpoint, config.cache),
            endpoint.model,
            endpoint.api_base,
            dialect,
            # OpenAI-compatible servers that take a JSON schema (vLLM, OpenAI) return logprobs when asked.
            logprobs=dialect == "json_schema",
        )

    for stage in STAGES:
        if stage in overrides:
            lm = overrides[stage]
            backends[stage] = StageBackend(stage, lm, getattr(lm, "model", type(lm).__name__), None, "none")
        else:
            backends[stage] = build(stage, config.endpoint(stage), stage)

    def build_role(role: str) -> StageBackend | None:
        stage = PROMPT_ROLES[role]
        if stage in overrides or not config.endpoint(stage).is_embedded:
            return None  # the stage's own backend
        return build(stage, config.endpoint(stage), role)

    return _Backends(backends, build_role)
