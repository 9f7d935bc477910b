"""What every LM-backed stage shares: one call path with tracing, usage accounting and failure capture."""

from __future__ import annotations

import time
from typing import Any

import dspy
import httpx
from dspy.utils.exceptions import AdapterParseError, LMError

from samner_dspy.adapters import SamnerAdapter, noting_lenient_reads
from samner_dspy.backends import StageBackend
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


class LMStage(dspy.Module):
    """A DSPy module whose predictors run against a per-call backend with a per-call response schema."""

    def __init__(self, adapter: dspy.Adapter | None = None) -> None:
        super().__init__()
        self.adapter = adapter or SamnerAdapter()

    def reply_schema(self, predictor: dspy.Predict, field_schemas: dict[str, JsonSchema]) -> JsonSchema:
        """The whole reply's JSON schema as this stage's adapter lays it out."""
        return self.adapter.reply_schema(predictor.signature, field_schemas)

    def call_lm(
        self,
        predictor: dspy.Predict,
        backend: StageBackend,
        record: StageRecord,
        field_schemas: dict[str, JsonSchema] | None,
        token_logprobs: list[Any] | None = None,
        **inputs: Any,
    ) -> dict[str, Any] | None:
        """Run one request; an unparseable reply is recorded with its raw text and yields None.

        Where the backend returns token log-probabilities they are appended to ``token_logprobs`` (they feed
        entity scores); a server that refuses a request because it asked for them is asked again without.

        A request that fails after the LM's retries raises :class:`EndpointUnreachableError` (no connection)
        or :class:`EndpointRequestError` (anything else), so the caller's input fails with a clear reason.
        """
        record.model = backend.model
        record.requests += 1
        schema = self.reply_schema(predictor, field_schemas) if field_schemas else None
        config = backend.request_config(schema, predictor.signature.__name__)
        limit = backend.max_tokens
        if schema is not None and limit and (needed := reply_tokens(schema)) and needed > limit:
            config["max_tokens"] = limit = needed  # an answer per entity: room for every one of them
        started = time.perf_counter()
        try:
            lm = backend.lm_for(predictor.signature.__name__)
            with dspy.context(lm=lm, adapter=self.adapter, track_usage=True), noting_lenient_reads() as lenient:
                prediction = predictor(**inputs, config=config)
        except AdapterParseError as exc:
            record.fail(f"unparseable reply ({exc.message or 'parse error'})".strip(), exc.lm_response or "")
            return None
        except Exception as exc:
            if _is_connection_error(exc):
                raise backend.unreachable(exc) from exc
            if backend.logprobs and "logprob" in str(exc).lower():
                backend.logprobs = False
                record.repair("request", "the server refused token logprobs; asked again without them")
                return self.call_lm(predictor, backend, record, field_schemas, token_logprobs, **inputs)
            if isinstance(exc, LMError):
                raise backend.request_failed(exc) from exc
            raise
        finally:
            record.latency_s += time.perf_counter() - started
        if token_logprobs is not None and prediction.get("logprobs"):
            token_logprobs.append(prediction.get("logprobs"))
        usage = prediction.get_lm_usage()
        record.add_usage(usage)
        for note in lenient:
            record.repair("reply", note)
        if _cut_off(usage, limit):
            # The lenient parse kept what was complete; grounding drops a torn-off last mention.
            record.repair("reply", f"cut off at the token limit ({limit} tokens); read what was complete")
        return {name: prediction.get(name) for name in predictor.signature.output_fields}
