"""What every LM-backed stage shares: one call path with tracing, usage accounting and failure capture."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Self

import dspy
import httpx
from dspy.utils.exceptions import AdapterParseError, LMError

from samner_dspy.adapters import SamnerAdapter, noting_lenient_reads
from samner_dspy.backends import StageBackend
from samner_dspy.confidence import answer_probabilities
from samner_dspy.constraints import JsonSchema, reply_tokens
from samner_dspy.grounding import mention_key
from samner_dspy.tracing import StageRecord

_CONNECTION_ERROR_NAMES = ("APIConnectionError", "ConnectError", "ConnectTimeout", "ServiceUnavailableError")


def _is_connection_error(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if (
            isinstance(current, ConnectionError | httpx.ConnectError)
            or type(current).__name__ in _CONNECTION_ERROR_NAMES
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


def _cut_off(usage: dict[str, Any] | None, limit: int | None) -> bool:
    """Did a reply spend its whole token budget (finish_reason "length", often endless repetition)?"""
    return bool(limit) and any(int((c or {}).get("completion_tokens") or 0) >= limit for c in (usage or {}).values())


def answer_for(answers: object, key: str, surface: str | None = None) -> Any:
    """The value a reply gives for ``key``, tolerating a reply that changed its case or spacing.

    ``surface`` is the string an occurrence key names (``Washington`` for ``Washington (2)``): a reply that
    answered the string rather than each of its occurrences gives every occurrence the string's answer.
    """
    if not isinstance(answers, dict):
        return None
    for wanted in (key, surface) if surface is not None and surface != key else (key,):
        if wanted in answers:
            return answers[wanted]
        folded = mention_key(wanted)
        found = next(
            (value for name, value in answers.items() if isinstance(name, str) and mention_key(name) == folded), None
        )
        if found is not None:
            return found
    return None


@dataclass(frozen=True)
class Reply:
    """One request's answer: its output fields (None when the reply could not be read) and, where the backend
    returned them, its token log-probabilities (they feed entity scores)."""

    fields: dict[str, Any] | None
    logprobs: Any = None

    @property
    def answered(self) -> bool:
        return self.fields is not None

    def get(self, name: str) -> Any:
        return None if self.fields is None else self.fields.get(name)

    def key_probabilities(
        self, answers: object, keys: Iterable[str], surfaces: Mapping[str, str] | None = None
    ) -> dict[str, float]:
        """The probability of each key's answer in a reply that answers per key (``answers``, its mapping), where
        the backend gave log-probabilities; ``surfaces`` as for :func:`answer_for`. A key without one is left out."""
        if not self.logprobs or not isinstance(answers, dict):
            return {}
        raw = answer_probabilities(self.logprobs, {k: v for k, v in answers.items() if isinstance(k, str)})
        found = {key: answer_for(raw, key, (surfaces or {}).get(key)) for key in keys}
        return {key: p for key, p in found.items() if p is not None}


class LMStage(dspy.Module):
    """A DSPy module whose predictors run against the backend of one configured endpoint.

    ``endpoint`` names it (:data:`samner_dspy.config.STAGES`); the program binds the backend before its first
    request (:meth:`bind`, as ``set_lm`` binds an LM), so ``forward`` takes only the signature's inputs. A copy or a
    pickle leaves the backend out (it holds API keys), and the program binds it again.
    """

    def __init__(self, endpoint: str, adapter: dspy.Adapter | None = None) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.adapter = adapter or SamnerAdapter()
        self.backend: StageBackend | None = None

    def bind(self, backend: StageBackend) -> Self:
        self.backend = backend
        return self

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["backend"] = None
        return state

    def reply_schema(self, predictor: dspy.Predict, field_schemas: dict[str, JsonSchema]) -> JsonSchema:
        """The whole reply's JSON schema as this stage's adapter lays it out."""
        return self.adapter.reply_schema(predictor.signature, field_schemas)

    def call_lm(
        self,
        predictor: dspy.Predict,
        record: StageRecord,
        field_schemas: dict[str, JsonSchema] | None,
        **inputs: Any,
    ) -> Reply:
        """Run one request on the bound backend; an unparseable reply is recorded with its raw text and answers
        nothing. A server that refuses a request because it asked for token log-probabilities is asked again
        without them.

        A request that fails after the LM's retries raises :class:`EndpointUnreachableError` (no connection)
        or :class:`EndpointRequestError` (anything else), so the caller's input fails with a clear reason.
        """
        backend = self.backend
        if backend is None:
            raise RuntimeError(
                f"the {self.endpoint} stage has no backend: a program binds it; alone, call .bind(backend) first"
            )
        record.model = backend.model
        record.requests += 1
        schema = self.reply_schema(predictor, field_schemas) if field_schemas else None
        config = backend.request_config(schema, predictor.signature.__name__)
        limit = backend.max_tokens
        if schema is not None and limit and (needed := reply_tokens(schema)) and needed > limit:
            config["max_tokens"] = limit = needed  # an answer per entity: room for every one of them
        started = time.perf_counter()
        lm = None
        try:
            lm = backend.lm_for(predictor.signature.__name__)
            with dspy.context(lm=lm, adapter=self.adapter, track_usage=True), noting_lenient_reads() as lenient:
                prediction = predictor(**inputs, config=config)
        except AdapterParseError as exc:
            record.fail(f"unparseable reply ({exc.message or 'parse error'})".strip(), exc.lm_response or "")
            return Reply(None)
        except Exception as exc:
            if _is_connection_error(exc):
                raise backend.unreachable(exc, lm) from exc
            if backend.logprobs and "logprob" in str(exc).lower():
                backend.logprobs = False  # for good, and for every thread: the server cannot give them
                record.repair("request", "the server refused token logprobs; asked again without them")
                return self.call_lm(predictor, record, field_schemas, **inputs)
            if isinstance(exc, LMError):
                raise backend.request_failed(exc, lm) from exc
            raise
        finally:
            record.latency_s += time.perf_counter() - started
        usage = prediction.get_lm_usage()
        record.add_usage(usage)
        for note in lenient:
            record.repair("reply", note)
        if _cut_off(usage, limit):
            # The lenient parse kept what was complete; grounding drops a torn-off last mention.
            record.repair("reply", f"cut off at the token limit ({limit} tokens); read what was complete")
        fields = {name: prediction.get(name) for name in predictor.signature.output_fields}
        return Reply(fields, prediction.get("logprobs") or None)
