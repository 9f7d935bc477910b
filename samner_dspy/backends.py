"""Turning configured endpoints into dspy LMs, checking they answer, and asking for constrained output."""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import dspy
import httpx

from samner_dspy.config import STAGES, CachePolicy, Endpoint, SamnerConfig, StructuredOutput
from samner_dspy.constraints import response_format
from samner_dspy.errors import EndpointRequestError, EndpointUnreachableError

if TYPE_CHECKING:
    from samner_dspy.serving.embedded import EmbeddedServer

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
    lm_of_signature: Callable[[str], dspy.BaseLM] | None = None
    """Where a stage's signatures are served apart (the embedded model: one server per prompt family), the LM of
    each signature's requests; None sends every request to ``lm``."""

    def lm_for(self, signature: str) -> dspy.BaseLM:
        """The LM that answers requests of the signature named ``signature``."""
        return self.lm if self.lm_of_signature is None else self.lm_of_signature(signature)

    def request_config(self, json_schema: dict[str, Any] | None, name: str) -> dict[str, Any]:
        """Per-request LM kwargs: a decoding constraint from ``json_schema``, and logprobs where supported."""
        extra: dict[str, Any] = {"logprobs": True} if self.logprobs else {}
        if json_schema is None or self.structured_output == "none":
            return extra
        return {"response_format": response_format(json_schema, name, self.structured_output), **extra}

    def unreachable(self, reason: object, lm: dspy.BaseLM | None = None) -> EndpointUnreachableError:
        """``lm``: the LM that was asked (an embedded stage's signatures have servers of their own)."""
        url = self._url(lm)
        return EndpointUnreachableError(url, self.stage, f"{reason}{self._ended_server(url)}")

    def request_failed(self, exc: BaseException, lm: dspy.BaseLM | None = None) -> EndpointRequestError:
        """The first line of the LM layer's message is the reason; the rest is advice about its own internals."""
        url = self._url(lm)
        reason = (str(exc).strip().splitlines() or [""])[0]
        return EndpointRequestError(url, self.stage, f"{type(exc).__name__}: {reason}{self._ended_server(url)}")

    def _url(self, lm: dspy.BaseLM | None) -> str:
        return getattr(lm, "kwargs", {}).get("api_base") or self.api_base or self.model

    def _ended_server(self, url: str) -> str:
        """Where the embedded server behind ``url`` has died (a crash, the OOM killer), how and where its log is:
        a refused connection alone would hide it."""
        if self.lm_of_signature is None:  # not an embedded stage: no server of ours behind it
            return ""
        from samner_dspy.serving.embedded import ended_server_note

        note = ended_server_note(url)
        return f" ({note})" if note else ""

    @property
    def max_tokens(self) -> int | None:
        return getattr(self.lm, "kwargs", {}).get("max_tokens")


def revision_key(revision: str) -> int:
    """An integer form of a cache revision string, for dspy's ``rollout_id``."""
    return int(hashlib.sha256(revision.encode("utf-8")).hexdigest()[:12], 16)


SELF_HOSTED_PREFIX = "hosted_vllm/"
SELF_HOSTED_PROVIDER = "samner-hosted"
_registration_lock = threading.Lock()


def _declare_self_hosted_provider() -> None:
    """Declare self-hosted OpenAI-compatible servers (vLLM, the embedded model's) to dspy as a provider with no
    price list.

    dspy prices every reply from a model metadata table; a LoRA name is in no table, so each request
    scanned all of it (about 8 ms of CPU, a third of the program's own cost per sentence). A declared
    provider with no metadata namespace is not priced at all, which is the truth for a server you host. Its
    requests go through dspy's own client, which does not import LiteLLM (4 s on 2 cores).
    """
    from dspy.lm15 import AccessPolicy, ModelSupport, ProviderDefinition, register_provider, registered_providers

    definition = ProviderDefinition.chat(
        AccessPolicy(provider=SELF_HOSTED_PROVIDER, base_url="http://localhost:8000/v1"),
        compat="vllm",
        placeholder_key="EMPTY",
        note="a self-hosted OpenAI-compatible server (samner-dspy)",
    )
    with _registration_lock:
        if not any(p.id == SELF_HOSTED_PROVIDER for p in registered_providers()):
            register_provider(definition, metadata_namespaces=(), supports=ModelSupport(response_schema=True))


def wire_model(endpoint: Endpoint, self_hosted: bool = False) -> str:
    """The model string dspy is given: ``hosted_vllm/<name>`` with an ``api_base``, or a ``self_hosted`` endpoint
    (the embedded model's server), goes by the unpriced route.

    The request is the same either way (``"model": "<name>"`` to ``<api_base>/chat/completions``). The route
    carries OpenAI's ``json_schema`` response format only; llama.cpp's (a ``schema`` key) keeps dspy's route."""
    if (
        endpoint.api_base
        and (self_hosted or endpoint.model.startswith(SELF_HOSTED_PREFIX))
        and endpoint.structured_output != "llama_cpp"
    ):
        _declare_self_hosted_provider()
        return f"{SELF_HOSTED_PROVIDER}/{endpoint.model.split('/', 1)[-1]}"
    return endpoint.model


def build_lm(endpoint: Endpoint, cache: CachePolicy, self_hosted: bool = False) -> dspy.LM:
    kwargs: dict[str, Any] = {}
    if cache.enabled and cache.revision:
        # rollout_id is part of dspy's cache key and stripped before the request is sent, so entries of
        # another revision are never served (dspy warns that it has "no effect" at temperature 0: it
        # means on sampling, not on the key).
        kwargs["rollout_id"] = revision_key(cache.revision)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="rollout_id has no effect")
        return dspy.LM(
            wire_model(endpoint, self_hosted),
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


MAIN_SIGNATURES: dict[str, str] = {
    "anchor": "ExtractSpans",
    "explorer": "ExtractSpans",
    "archetype": "ClassifyArchetype",
    "calibrator": "CalibrateType",
}
"""The signature each stage sends first in the paper's modes; a program in other modes names its own
(:meth:`~samner_dspy.programs.program.ConfiguredProgram.first_signatures`)."""


def embedded_role(stage: str, signature: str) -> str:
    """The embedded server a stage's signature is sent to: one per prompt family, so none evicts another's
    evaluated prefix (CCR's verification, per-entity calibration and direct prompting each get their own)."""
    return stage if MAIN_SIGNATURES.get(stage) == signature else f"{stage}-{signature}"


class _EmbeddedLMs:
    """A stage's LMs on the embedded model, one per signature, each on its own server (started on first use)."""

    def __init__(self, stage: str, make: Callable[[str], dspy.BaseLM], role: str, lm: dspy.BaseLM) -> None:
        self.stage = stage
        self._make = make
        self._lms: dict[str, dspy.BaseLM] = {role: lm}
        self._lock = threading.Lock()

    def __call__(self, signature: str) -> dspy.BaseLM:
        role = embedded_role(self.stage, signature)
        with self._lock:
            if role not in self._lms:
                self._lms[role] = self._make(role)
            return self._lms[role]


def _embedded_endpoint(endpoint: Endpoint, api_base: str, dialect: StructuredOutput = "json_schema") -> Endpoint:
    """A stage's embedded endpoint, as the local llama.cpp server is asked: by its served name, at its URL, with
    OpenAI's ``json_schema`` response format, which the embedded server takes besides llama.cpp's own
    (:mod:`samner_dspy.serving.embedded_child`), unless the stage turned structured output off. The Ray driver points
    its workers at its one server with ``dialect="llama_cpp"`` (:mod:`samner_dspy.scale.ray_data`): their
    endpoints are plain OpenAI-compatible ones, and that dialect tells them the server gives no logprobs."""
    from samner_dspy.serving.embedded import SERVED_NAME

    return Endpoint(
        f"openai/{SERVED_NAME}",
        api_base=api_base,
        temperature=endpoint.temperature,
        max_tokens=endpoint.max_tokens,
        timeout_s=endpoint.timeout_s,
        num_retries=endpoint.num_retries,
        structured_output="none" if endpoint.structured_output == "none" else dialect,
    )


def _embedded_cache(cache: CachePolicy, server: EmbeddedServer) -> CachePolicy:
    """dspy's response cache keys a request by model name and messages, not by URL, and every embedded server is
    ``embedded``: a server with a LoRA keys its replies by the adapter too, so none is served the base model's."""
    lora = server.lora_id
    return replace(cache, revision=f"{cache.revision}+lora:{lora}") if lora else cache


def build_backends(
    config: SamnerConfig,
    overrides: dict[str, dspy.BaseLM] | None = None,
    signatures: dict[str, str] | None = None,
) -> dict[str, StageBackend]:
    """One backend per stage. Embedded stages get a local server per prompt family: the family each stage sends
    first (``signatures``, by stage; default :data:`MAIN_SIGNATURES`) is started here, all together, any other
    (verification, direct prompting) on first use."""
    overrides = overrides or {}
    first = {**MAIN_SIGNATURES, **(signatures or {})}
    if config.cache.enabled and config.cache.directory:
        dspy.configure_cache(enable_disk_cache=True, enable_memory_cache=True, disk_cache_dir=config.cache.directory)
    embedded = [s for s in STAGES if s not in overrides and config.endpoint(s).is_embedded]
    if embedded:
        from samner_dspy.serving.embedded import shared_servers

        by_model: dict[str | None, list[str]] = {}
        for stage in embedded:
            by_model.setdefault(config.endpoint(stage).embedded_model(config.embedded_model), []).append(stage)
        for model, stages in by_model.items():
            # The anchor and the explorer send their requests at the same time (SAMNER._discover).
            discovery = [s for s in ("anchor", "explorer") if s in stages]
            shared_servers(
                [embedded_role(s, first[s]) for s in stages],
                model,
                discovery if len(discovery) == 2 else (),
                loras={embedded_role(s, first[s]): config.endpoint(s).adapter for s in stages},
            )
    backends: dict[str, StageBackend] = {}
    checked: set[str] = set()
    for stage in STAGES:
        if stage in overrides:
            lm = overrides[stage]
            backends[stage] = StageBackend(stage, lm, getattr(lm, "model", type(lm).__name__), None, "none")
            continue
        configured = endpoint = config.endpoint(stage)
        model = configured.embedded_model(config.embedded_model)
        role = embedded_role(stage, first[stage])
        cache = config.cache
        if configured.is_embedded:
            from samner_dspy.serving.embedded import shared_server

            server = shared_server(model, role, configured.adapter)
            endpoint = _embedded_endpoint(configured, server.api_base)
            cache = _embedded_cache(config.cache, server)
        if endpoint.api_base and endpoint.api_base not in checked:
            check_reachable(endpoint.api_base, stage)
            checked.add(endpoint.api_base)
        lm = build_lm(endpoint, cache, self_hosted=configured.is_embedded)
        per_signature = None
        if configured.is_embedded:

            def embedded_lm(role: str, configured: Endpoint = configured, model: str | None = model) -> dspy.BaseLM:
                server = shared_server(model, role, configured.adapter)
                endpoint = _embedded_endpoint(configured, server.api_base)
                return build_lm(endpoint, _embedded_cache(config.cache, server), self_hosted=True)

            per_signature = _EmbeddedLMs(stage, embedded_lm, role, lm)
        dialect = endpoint.structured_output
        named = configured.model if configured.embedded_model() else endpoint.model  # the trace names a chosen model
        backends[stage] = StageBackend(
            stage,
            lm,
            f"{named}+lora:{configured.adapter}" if configured.is_embedded and configured.adapter else named,
            endpoint.api_base,
            dialect,
            # OpenAI-compatible servers that take a JSON schema (vLLM, OpenAI) return logprobs when asked; the
            # embedded server runs without llama.cpp's logits_all and cannot.
            logprobs=dialect == "json_schema" and not configured.is_embedded,
            lm_of_signature=per_signature,
        )
    return backends
