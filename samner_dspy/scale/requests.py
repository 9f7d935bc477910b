"""The stages' LM requests as data: recorded while the program runs, answered later by a Ray Data LLM processor.

A Ray Data LLM processor (a vLLM engine in the workers, or HTTP requests) takes prompts as rows; the stages
build their prompts and JSON schemas inside their own calls. So each stage's LM is a :class:`RecordingEngine`:
it answers a request from the replies the row has collected, and records a request it has no reply for,
answering it with an empty reply so the stage's other, independent requests (one per entity or per window) are
recorded in the same pass. The prompts, schemas and parsing are therefore those of the local program.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import dspy
from dspy.lm15 import Message, Response, TextPart, Usage

from samner_dspy.backends import StageBackend
from samner_dspy.config import STAGES, SamnerConfig


@dataclass(frozen=True)
class StageRequest:
    """One chat request, dialect-free: the processors render it for vLLM's engine or for an HTTP server."""

    stage: str
    model: str
    """The name the server or engine knows: a LoRA's, or the base model's."""
    messages: tuple[tuple[str, str], ...]
    """(role, content) pairs."""
    temperature: float | None = None
    max_tokens: int | None = None
    json_schema: str | None = None
    """The reply's JSON schema, serialised in its own key order (grammar-guided decoding follows that order;
    rows carry strings, not nested objects of varying shape)."""
    schema_name: str | None = None

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode("utf-8")).hexdigest()

    def chat(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]

    def schema(self) -> dict[str, Any] | None:
        return json.loads(self.json_schema) if self.json_schema else None


@dataclass(frozen=True)
class StageReply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    """Why the processor could not answer (the request then fails as an HTTP request would)."""


@dataclass
class Book:
    """One input's requests: the replies collected so far, those still to be asked this round, and the texts
    (the input, or its windows) whose stages wait for them."""

    replies: dict[str, StageReply] = field(default_factory=dict)
    pending: dict[str, StageRequest] = field(default_factory=dict)
    waiting: set[str] = field(default_factory=set)


_BOOK: contextvars.ContextVar[Book] = contextvars.ContextVar("samner_request_book")
ASKED: contextvars.ContextVar[list[str]] = contextvars.ContextVar("samner_asked")
"""The keys of the requests the current stage call recorded without a reply (set by the replaying stage)."""


def open_book(book: Book) -> contextvars.Token:
    """Make ``book`` the one this thread's stage calls answer from and record into, for a new pass."""
    book.pending.clear()
    book.waiting.clear()
    return _BOOK.set(book)


class ProcessorError(Exception):
    """A request the LLM processor could not answer (engine error, HTTP error after retries)."""


def _system_text(system: object) -> str:
    return system if isinstance(system, str) else "".join(getattr(part, "text", "") or "" for part in system)


def _schema_of(response_format: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """The JSON schema (serialised) and its name from dspy's canonical ``response_format``."""
    if not response_format or not response_format.get("schema"):
        return None, None
    return json.dumps(response_format["schema"], ensure_ascii=False), response_format.get("name")


class RecordingEngine:
    """A dspy engine (``dspy.LM(..., engine=...)``) that answers from the current :class:`Book`."""

    def __init__(self, stage: str, model: str) -> None:
        self.stage = stage
        self.model = model

    def complete(self, request: Any) -> Response:
        messages = [("system", _system_text(request.system))] if request.system else []
        messages += [(message.role, message.text or "") for message in request.messages]
        config = request.config
        asked = StageRequest(
            self.stage,
            self.model,
            tuple(messages),
            config.temperature,
            config.max_tokens,
            *_schema_of(config.response_format),
        )
        book = _BOOK.get()
        reply = book.replies.get(asked.key)
        if reply is None:
            book.pending.setdefault(asked.key, asked)
            ASKED.get([]).append(asked.key)
            reply = StageReply("")
        elif reply.error is not None:
            raise ProcessorError(reply.error)
        usage = Usage(
            input_tokens=reply.prompt_tokens,
            output_tokens=reply.completion_tokens,
            total_tokens=reply.prompt_tokens + reply.completion_tokens,
        )
        return Response(
            id=None,
            model=self.model,
            message=Message.assistant([TextPart(reply.text)]),
            finish_reason="stop",
            usage=usage,
        )

    def close(self) -> None:
        pass


def served_name(model: str) -> str:
    """The model name a request carries: a LiteLLM model string without its provider prefix."""
    return model.split("/", 1)[1] if "/" in model else model


def recording_backends(config: SamnerConfig, answered_by: str) -> dict[str, StageBackend]:
    """One recording backend per stage, with the configured sampling and a JSON schema per request.

    ``answered_by`` names the processor in errors. Log-probabilities are not asked for: the processors return
    text only (scores then come from discovery evidence alone, as with the embedded llama.cpp server)."""
    backends = {}
    for stage in STAGES:
        endpoint = config.endpoint(stage)
        model = served_name(endpoint.model)
        lm = dspy.LM(
            f"openai/{model}",
            engine=RecordingEngine(stage, model),
            cache=False,
            num_retries=0,
            temperature=endpoint.temperature,
            max_tokens=endpoint.max_tokens,
        )
        dialect = "none" if endpoint.structured_output == "none" else "json_schema"
        backends[stage] = StageBackend(stage, lm, model, answered_by, dialect)
    return backends
