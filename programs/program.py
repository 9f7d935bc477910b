"""What every whole program shares: configuration, lazily built backends, input checks and grounding."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Self

import dspy

from samner_dspy.backends import StageBackend, build_backends
from samner_dspy.config import SamnerConfig, resolve_config
from samner_dspy.errors import InputTextError
from samner_dspy.grounding import Located, locate, resolve_overlaps
from samner_dspy.programs.batch import BatchItem, ordered_map
from samner_dspy.programs.document import annotate_document
from samner_dspy.schema import Schema
from samner_dspy.tracing import StageRecord
from samner_dspy.types import Candidate, Span

SchemaLike = Schema | Mapping[str, str] | Iterable[str] | str
_BACKENDS_LOCK = threading.Lock()  # module-level: programs are deep-copied by optimizers, locks cannot be
ConfigLike = SamnerConfig | str | Path | Mapping[str, Any] | None
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_text(text: object) -> str:
    if not isinstance(text, str):
        raise InputTextError(f"the text to annotate must be a string, got {type(text).__name__}")
    if not text.strip():
        raise InputTextError("the text to annotate is empty or only whitespace")
    if surrogate := _SURROGATE.search(text):
        # Not valid Unicode: no LM endpoint can receive it, so fail here with the place rather than mid-request.
        raise InputTextError(
            f"the text has a lone surrogate (U+{ord(surrogate.group()):04X}) at offset {surrogate.start()}, which is "
            "not valid Unicode; repair it first, e.g. text.encode('utf-8', 'replace').decode('utf-8')"
        )
    return text


def _support(candidate: Candidate) -> tuple[int, int]:
    """Mentions both extractors found outrank the precision-oriented anchor's, which outrank the explorer's."""
    return len(candidate.sources), int("anchor" in candidate.sources)


def ground_candidates(text: str, candidates: list[Candidate]) -> tuple[list[tuple[Span, Candidate]], StageRecord]:
    """Every occurrence of every candidate; of overlapping ones the best supported, then the longest, stays."""
    record = StageRecord("grounding", inputs={"candidates": [c.surface for c in candidates]})
    owner: dict[Span, Candidate] = {}
    for candidate in candidates:
        where = locate(text, candidate.surface)
        if not isinstance(where, Located):
            record.drop(candidate.surface, where.reason)
            continue
        for span in where.spans:
            owner.setdefault(span, candidate)
    kept, discarded = resolve_overlaps(list(owner), priority=lambda span: _support(owner[span]))
    for span in discarded:
        record.drop(f"{span.text} [{span.start}:{span.end}]", "overlaps a better-supported or longer mention")
    record.outputs = {"spans": [[s.start, s.end, s.text] for s in kept]}
    return [(span, owner[span]) for span in kept], record


class ConfiguredProgram(dspy.Module):
    """A program whose stages reach their LMs through one configuration (see :mod:`samner_dspy.config`)."""

    def __init__(self, config: ConfigLike = None, lms: Mapping[str, dspy.BaseLM] | None = None) -> None:
        super().__init__()
        self.config = resolve_config(config)
        self.lms = dict(lms or {})
        self._backends: dict[str, StageBackend] | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Built backends hold API keys: pickles and copies leave them out and rebuild them from the config."""
        state = super().__getstate__()
        state["_backends"] = None
        return state

    def backends(self) -> dict[str, StageBackend]:
        """Built on first use, so constructing a program never starts a server or opens a connection."""
        with _BACKENDS_LOCK:
            if self._backends is None:
                self._backends = build_backends(self.config, self.lms)
            return self._backends

    def use_backends(self, backends: dict[str, StageBackend]) -> Self:
        """Run on these backends instead of the configured ones (the Ray request rounds record requests)."""
        with _BACKENDS_LOCK:
            self._backends = backends
        return self

    def batch(
        self,
        texts: Iterable[str],
        schema: SchemaLike,
        concurrency: int = 8,
        skip: Callable[[int], bool] | None = None,
        max_chars: int | None = None,
        overlap: int = 200,
    ) -> Iterator[BatchItem]:
        """Annotate many texts with bounded concurrency; results stream back in input order.

        A failing input yields a :class:`BatchItem` with ``error`` set and the batch goes on; ``skip``
        leaves out indices (already done in an earlier, interrupted run); ``max_chars`` treats each text as
        a document split into overlapping windows. dspy's per-call history is off here, so memory stays flat
        on a corpus of any size (every result still carries its trace).
        """
        schema = Schema.coerce(schema)
        self.backends()

        def annotate(text: str) -> dspy.Prediction:
            with dspy.context(disable_history=True):
                if max_chars:
                    return self.annotate_document(text, schema, max_chars, overlap)
                return self(text, schema)

        return ordered_map(annotate, texts, concurrency, skip)

    def annotate_document(
        self, text: str, schema: SchemaLike, max_chars: int = 2000, overlap: int = 200, concurrency: int = 1
    ) -> dspy.Prediction:
        """A text of any length: overlapping windows, offsets mapped back to ``text``, duplicates merged."""
        text = check_text(text)
        schema = Schema.coerce(schema)
        return annotate_document(lambda window: self(window, schema), text, max_chars, overlap, concurrency)

    def predict_entities(self, text: str, labels: SchemaLike) -> list[dict[str, Any]]:
        """GLiNER-style convenience: plain dicts with ``text``, ``label``, ``start``, ``end`` and more."""
        return [entity.to_dict() for entity in self(text, labels).entities]
