"""Ray Data LLM processors that answer the stages' recorded requests: vLLM engines in the workers, or HTTP.

Each takes rows with a ``request`` column (a :class:`~samner_dspy.scale.requests.StageRequest` as JSON) and
returns them with ``text``, ``prompt_tokens``, ``completion_tokens`` and ``error`` columns.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import ray.data

from samner_dspy.config import DEFAULT_BASE_MODEL, STAGES, SamnerConfig
from samner_dspy.constraints import response_format
from samner_dspy.errors import SamnerError
from samner_dspy.scale.requests import StageRequest, served_name
from samner_dspy.serving.vllm_server import CPU_KV_CACHE_GIB, cpu_engine_settings, vllm_build
from samner_dspy.training.serve import ANCHOR_ADAPTER, BASE_ADAPTER, checked_adapters

_PASSED = ("row_id", "key")
_HTTP_STAGE_CPUS = 0.25
"""Logical CPUs for each of Ray's HTTP actors, which wait on the network."""
CPU_STAGE_CPUS = 0.25
"""Logical CPUs for each of Ray's chat-template, tokenize and detokenize actors beside a CPU engine: at the
default of one each, a small machine has no CPU left for the engine and the job waits forever."""


class LLMProcessor(Protocol):
    """What the requests-as-rows pipeline needs: a stage that turns request rows into reply rows."""

    @property
    def name(self) -> str:
        """What answers the requests, for error messages."""

    def check(self, config: SamnerConfig) -> None:
        """Raise if the configuration asks for models this processor cannot answer for."""

    def reserved_cpus(self) -> float:
        """About how many logical CPUs its actors hold while a round runs (a cluster with fewer waits forever)."""

    def apply(self, requests: ray.data.Dataset) -> ray.data.Dataset: ...


def request_of(row: Mapping[str, Any]) -> StageRequest:
    fields = json.loads(row["request"])
    return StageRequest(**{**fields, "messages": tuple(tuple(m) for m in fields["messages"])})


def _reply(row: Mapping[str, Any], text: str, prompt: int, completion: int, error: str | None) -> dict[str, Any]:
    return {
        **{name: row[name] for name in _PASSED},
        "text": text,
        "prompt_tokens": int(prompt),
        "completion_tokens": int(completion),
        "error": error,
    }


@dataclass(frozen=True)
class VllmEngine:
    """Ray Data's vLLM engine processor: the base model and the stages' LoRAs loaded in the workers.

    ``adapters`` maps the served names the configuration uses (``anchor``, ``explorer``, ``archetype``) to
    LoRA folders present on every worker node, or Hugging Face ids; requests naming ``base_model`` (the
    calibrator's) run on the base model. ``replicas`` engines, each ``tensor_parallel_size`` GPUs of
    ``accelerator_type`` or, with vLLM's CPU build, that many CPUs. ``build`` is the workers' vLLM build,
    ``cpu`` or ``cuda`` (default: the one installed here, CUDA when there is none); the CPU build gets a
    KV cache of ``kv_cache_gib`` GiB, weights in bf16 where native (float32 elsewhere) and a context of
    ``max_model_len`` (default 4096).
    """

    base_model: str
    adapters: Mapping[str, str] = field(default_factory=dict)
    max_lora_rank: int = 64
    replicas: int = 1
    batch_size: int = 64
    tensor_parallel_size: int = 1
    accelerator_type: str | None = None
    max_model_len: int | None = None
    engine_kwargs: Mapping[str, Any] = field(default_factory=dict)
    build: Literal["cpu", "cuda"] | None = None
    kv_cache_gib: float = CPU_KV_CACHE_GIB

    @classmethod
    def for_adapters(
        cls,
        explorer: str,
        archetype: str,
        *,
        anchor: str = ANCHOR_ADAPTER,
        base_model: str = DEFAULT_BASE_MODEL,
        max_lora_rank: int | None = None,
        download: bool = False,
        **settings: Any,
    ) -> VllmEngine:
        """The engine for ``samner serve``'s three LoRAs, checked as ``samner serve`` checks them (they exist, are
        PEFT LoRAs trained on ``base_model``, fit the rank); their folders must exist on every worker node. An
        adapter given as ``base`` is none: that stage runs on the base model."""
        sources = {"anchor": anchor, "explorer": explorer, "archetype": archetype}
        sources = {name: source for name, source in sources.items() if source != BASE_ADAPTER}
        if not sources:  # every stage on the base model
            return cls(base_model, {}, **settings)
        adapters, rank, notes = checked_adapters(sources, base_model, max_lora_rank, download=download)
        for note in notes:
            warnings.warn(note, stacklevel=2)
        return cls(base_model, {a.name: str(a.path) for a in adapters}, rank, **settings)

    @property
    def name(self) -> str:
        return f"the Ray Data vLLM engine on {self.base_model}"

    def check(self, config: SamnerConfig) -> None:
        for stage in STAGES:
            name = served_name(config.endpoint(stage).model)
            if name not in self.adapters and name != self.base_model:
                loaded = ", ".join([*self.adapters, self.base_model])
                raise SamnerError(
                    f"the {stage} stage asks for the model {name!r}, which this vLLM engine does not load ({loaded}); "
                    "use SamnerConfig.vllm(base_model=...) or name these models in the configuration"
                )

    @property
    def cpu_build(self) -> bool:
        return (self.build or vllm_build() or "cuda") == "cpu"

    def reserved_cpus(self) -> float:
        # An engine: the CPU build's bundles, or on CUDA the CPU beside its GPUs; then Ray's three CPU stages.
        stage = CPU_STAGE_CPUS if self.cpu_build else 1.0
        return self.replicas * (self.tensor_parallel_size + 3 * stage)

    def config(self) -> Any:
        from ray.data.llm import vLLMEngineProcessorConfig

        cpu = self.cpu_build
        engine_kwargs: dict[str, Any] = {
            "enable_prefix_caching": True,  # every stage's instructions and definitions are a shared prefix
            "tensor_parallel_size": self.tensor_parallel_size,
        }
        if self.adapters:
            engine_kwargs.update(enable_lora=True, max_lora_rank=self.max_lora_rank, max_loras=len(self.adapters))
        if self.max_model_len:
            engine_kwargs["max_model_len"] = self.max_model_len
        settings: dict[str, Any] = {}
        if cpu:
            env, cpu_engine = cpu_engine_settings(self.kv_cache_gib, self.max_model_len)
            engine_kwargs.update(cpu_engine)
            cpu_stage = {"num_cpus": CPU_STAGE_CPUS}
            settings = {
                # Ray's default asks for a GPU per engine worker, and waits forever on a node with none.
                "placement_group_config": {"bundles": [{"CPU": 1}] * self.tensor_parallel_size},
                # Ray's metrics wrapper fails in the CPU build's engine ("RayPrometheusMetric requires Ray").
                "log_engine_metrics": False,
                # The engine actor's environment: the driver's is not the workers' on a cluster.
                "runtime_env": {"env_vars": env},
                "chat_template_stage": cpu_stage,
                "tokenize_stage": cpu_stage,
                "detokenize_stage": cpu_stage,
            }
        engine_kwargs.update(self.engine_kwargs)
        return vLLMEngineProcessorConfig(
            model_source=self.base_model,
            engine_kwargs=engine_kwargs,
            concurrency=self.replicas,
            batch_size=self.batch_size,
            accelerator_type=self.accelerator_type,
            should_continue_on_error=True,  # a failed request fails its input, in errors/, not the job
            **settings,
        )

    def engine_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """A request as the vLLM stage reads it: chat messages, sampling with the reply's JSON schema, the LoRA."""
        request = request_of(row)
        sampling: dict[str, Any] = {"temperature": request.temperature or 0.0}
        if request.max_tokens:
            sampling["max_tokens"] = request.max_tokens
        if request.json_schema:
            # As a string: Ray's Arrow blocks would merge the keys of different rows' schemas into each other.
            sampling["structured_outputs"] = {"json": request.json_schema}
        return {
            **{name: row[name] for name in _PASSED},
            "messages": request.chat(),
            "sampling_params": sampling,
            "model": self.adapters.get(request.model, self.base_model),
        }

    @staticmethod
    def reply_row(row: Mapping[str, Any]) -> dict[str, Any]:
        error = row.get("__inference_error__") or None
        return _reply(
            row, row.get("generated_text") or "", row.get("num_input_tokens") or 0,
            row.get("num_generated_tokens") or 0, error,
        )  # fmt: skip

    def apply(self, requests: ray.data.Dataset) -> ray.data.Dataset:
        from ray.data.llm import build_processor

        processor = build_processor(self.config(), preprocess=self.engine_row)
        return processor(requests).map(self.reply_row)


class _BodySession:
    """An aiohttp session for Ray's HTTP stage that sends each row's body as it was serialised in the row."""

    def __init__(self) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession()

    async def __aenter__(self) -> _BodySession:
        await self.session.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.__aexit__(*exc)

    def post(self, url: str, *, headers: Mapping[str, str], data: str) -> Any:
        return self.session.post(url, headers=headers, data=json.loads(data)["body"].encode("utf-8"))


@dataclass(frozen=True)
class HttpEndpoint:
    """Ray Data's HTTP request processor against one OpenAI-compatible server (vLLM, or llama.cpp's).

    The same rows as the engine path, over HTTP: this is how the requests-as-rows pipeline runs on CPU, in
    the tests against the embedded model. ``dialect`` is the server's JSON-schema form (``llama_cpp`` for
    llama.cpp's server). A reply with an HTTP error fails its input; a connection that fails after
    ``max_retries`` stops the job (Ray's HTTP stage raises), and a rerun resumes it.
    """

    api_base: str
    dialect: Literal["json_schema", "llama_cpp"] = "json_schema"
    api_key_env: str | None = None
    concurrency: int = 1
    batch_size: int = 16
    max_retries: int = 3

    @property
    def name(self) -> str:
        return self.api_base

    def check(self, config: SamnerConfig) -> None:
        """The server answers for whatever models it serves; its replies say so."""

    def reserved_cpus(self) -> float:
        return self.concurrency * _HTTP_STAGE_CPUS

    def payload(self, request: StageRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"model": request.model, "messages": request.chat()}
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens:
            body["max_tokens"] = request.max_tokens
        schema = request.schema()
        if schema is not None:
            body["response_format"] = response_format(schema, request.schema_name or request.stage, self.dialect)
        return body

    def http_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        # The body travels as one string (see _BodySession): as a nested column, Ray's Arrow blocks would merge
        # the keys of different rows' JSON schemas into each other.
        body = json.dumps(self.payload(request_of(row)), ensure_ascii=False)
        return {**{name: row[name] for name in _PASSED}, "payload": {"body": body}}

    @staticmethod
    def reply_row(row: Mapping[str, Any]) -> dict[str, Any]:
        response = row.get("http_response") or {}
        try:
            text = response["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            reason = response.get("error") if isinstance(response, dict) else None
            return _reply(row, "", 0, 0, f"the server answered without a reply: {json.dumps(reason or response)[:500]}")
        usage = response.get("usage") or {}
        return _reply(row, text, usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0, None)

    def apply(self, requests: ray.data.Dataset) -> ray.data.Dataset:
        from ray.data.llm import HttpRequestProcessorConfig, build_processor

        headers = {}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise SamnerError(f"the environment variable {self.api_key_env} (the API key) is not set")
            headers["Authorization"] = f"Bearer {key}"
        config = HttpRequestProcessorConfig(
            url=self.api_base.rstrip("/") + "/chat/completions",
            headers=headers,
            concurrency=self.concurrency,
            batch_size=self.batch_size,
            max_retries=self.max_retries,
            http_request_stage={"num_cpus": _HTTP_STAGE_CPUS},
            session_factory=_BodySession,
        )
        return build_processor(config, preprocess=self.http_row)(requests).map(self.reply_row)
