"""What every whole program shares: configuration, lazily built backends, input checks and grounding."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Self

import dspy

from samner_dspy.backends import StageBackend, build_backends
from samner_dspy.config import SamnerConfig, resolve_config
from samner_dspy.errors import InputTextError
from samner_dspy.grounding import resolve_overlaps
from samner_dspy.modes import DEFAULT_MAX_CHARS, DEFAULT_OVERLAP
from samner_dspy.programs.base import LMStage
from samner_dspy.programs.batch import BatchItem, ordered_map
from samner_dspy.programs.document import annotate_document, windows
from samner_dspy.schema import Schema
from samner_dspy.tracing import StageRecord, Trace
from samner_dspy.types import Candidate, Document, Entity, Span

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
    """Every occurrence of every candidate, as it was located when found (``Candidate.spans``: no string is
    located twice); of overlapping ones the best supported, then the longest, stays."""
    record = StageRecord("grounding", inputs={"candidates": [c.surface for c in candidates]})
    owner: dict[Span, Candidate] = {}
    for candidate in candidates:
        if not candidate.spans:
            record.drop(candidate.surface, "not located in the text")
        for span in candidate.spans:
            if text[span.start : span.end] != span.text:
                raise ValueError(f"{span} is not an occurrence in this text: located in another one")
            owner.setdefault(span, candidate)
    kept, discarded = resolve_overlaps(list(owner), priority=lambda span: _support(owner[span]))
    for span in discarded:
        record.drop(f"{span.text} [{span.start}:{span.end}]", "overlaps a better-supported or longer mention")
    record.outputs = {"spans": [[s.start, s.end, s.text, owner[s].alignment_status] for s in kept]}
    return [(span, owner[span]) for span in kept], record


class ConfiguredProgram(dspy.Module):
    """A program whose stages reach their LMs through one configuration (see :mod:`samner_dspy.config`).

    Subclasses annotate one piece of text in ``forward``; calling the program checks the input, windows a long
    text, and applies the confidence threshold, so every program gives one result shape for any input size.

    Args:
        threshold: drop entities whose ``score`` is below it (each drop is traced under the ``confidence``
            stage); 0 keeps all.
        max_chars, overlap: texts longer than ``max_chars`` are split into windows sharing about ``overlap``
            characters; ``window=False`` refuses them instead.
        person_role: file every mention typed ``person`` under the schema's person role where its ``person``
            definition sets one apart (``writer`` in "a person who is not a writer"; :meth:`Schema.person_role`),
            each traced under ``person_role``. Off by default: it trades the role's recall for ``person``'s.
    """

    def __init__(
        self,
        config: ConfigLike = None,
        lms: Mapping[str, dspy.BaseLM] | None = None,
        *,
        threshold: float = 0.0,
        max_chars: int = DEFAULT_MAX_CHARS,
        overlap: int = DEFAULT_OVERLAP,
        window: bool = True,
        person_role: bool = False,
    ) -> None:
        super().__init__()
        self.config = resolve_config(config)
        self.lms = dict(lms or {})
        self._backends: dict[str, StageBackend] | None = None
        self.threshold = check_threshold(threshold)
        self.person_role = person_role
        windows(" ", max_chars, overlap)  # bad window settings fail here, not on the first long text
        self.max_chars = max_chars
        self.overlap = overlap
        self.window = window

    def __getstate__(self) -> dict[str, Any]:
        """Built backends hold API keys: pickles and copies leave them out and rebuild them from the config."""
        state = super().__getstate__()
        state["_backends"] = None
        return state

    def backends(self) -> dict[str, StageBackend]:
        """Built on first use, so constructing a program never starts a server or opens a connection; each stage
        is bound to its endpoint's (again after a copy, which leaves them out)."""
        with _BACKENDS_LOCK:
            if self._backends is None:
                self._backends = build_backends(self.config, self.lms, self.first_signatures())
            self._bind(self._backends)
            return self._backends

    def _bind(self, backends: dict[str, StageBackend]) -> None:
        for _, stage in self.named_sub_modules(LMStage):
            if stage.backend is not backends[stage.endpoint]:
                stage.bind(backends[stage.endpoint])

    def first_signatures(self) -> dict[str, str]:
        """The signature each stage sends first where it is not the paper's modes' (``MAIN_SIGNATURES``): the
        embedded servers of those prompt families are started together, before the first request."""
        return {}

    def use_backends(self, backends: dict[str, StageBackend]) -> Self:
        """Run on these backends instead of the configured ones (the Ray request rounds record requests)."""
        with _BACKENDS_LOCK:
            self._backends = backends
            self._bind(backends)
        return self

    def __call__(
        self,
        text: str,
        schema: SchemaLike,
        *,
        threshold: float | None = None,
        max_chars: int | None = None,
        overlap: int | None = None,
        window_concurrency: int = 1,
    ) -> Document:
        """Annotate ``text``, whatever its length: one result shape (``text``, ``entities``, ``trace``).

        A text longer than ``max_chars`` (the program's, unless given here) is annotated in overlapping
        windows whose traces are part of the one trace (``trace.windows``), offsets mapped back to ``text``;
        with ``window=False`` it is refused before any request. ``threshold`` overrides the program's.
        """
        text = check_text(text)
        schema = Schema.coerce(schema)
        threshold = self.threshold if threshold is None else check_threshold(threshold)
        max_chars = max_chars or self.max_chars
        if len(text) <= max_chars:
            result = super().__call__(text, schema)
        elif not self.window:
            raise InputTextError(
                f"the text is {len(text)} characters, more than max_chars={max_chars} that the stages are sent in one "
                "request; let the program split it into windows (window=True), or raise max_chars if the models' "
                "context holds more"
            )
        else:
            overlap = self.overlap if overlap is None else overlap
            result = annotate_document(
                lambda part: super(ConfiguredProgram, self).__call__(part, schema),
                text,
                max_chars,
                overlap,
                window_concurrency,
            )
        if self.person_role:
            result.entities = apply_person_role(result.entities, schema, result.trace)
        if threshold:
            result.entities = apply_threshold(result.entities, threshold, result.trace)
        return result

    def annotate_batch(
        self,
        texts: Iterable[str],
        schema: SchemaLike,
        concurrency: int = 8,
        skip: Callable[[int], bool] | None = None,
        **options: Any,
    ) -> Iterator[BatchItem]:
        """Annotate many texts with one schema and bounded concurrency; results stream back in input order.
        (``dspy.Module.batch``, over ``dspy.Example`` inputs, keeps its own meaning.)

        A failing input yields a :class:`BatchItem` with its ``exception`` and the batch goes on; ``skip``
        leaves out indices (already done in an earlier, interrupted run); ``options`` are the per-call ones
        (``threshold``, ``max_chars``, ``overlap``). dspy's per-call history is off here, so memory stays flat
        on a corpus of any size (every result still carries its trace).
        """
        schema = Schema.coerce(schema)
        self.backends()

        def annotate(text: str) -> dspy.Prediction:
            with dspy.context(disable_history=True):
                return self(text, schema, **options)

        return ordered_map(annotate, texts, concurrency, skip)

    def annotate_document(
        self,
        text: str,
        schema: SchemaLike,
        max_chars: int = DEFAULT_MAX_CHARS,
        overlap: int = DEFAULT_OVERLAP,
        concurrency: int = 1,
    ) -> dspy.Prediction:
        """The plain call with these window settings (kept for callers of the earlier, separate entry point)."""
        return self(text, schema, max_chars=max_chars, overlap=overlap, window_concurrency=concurrency)

    def predict_entities(
        self, text: str | Iterable[str], labels: SchemaLike, threshold: float | None = None, **options: Any
    ) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """GLiNER-style: plain dicts with ``text``, ``label``, ``start``, ``end``, ``score`` and more.

        ``threshold`` (and the other per-call options) apply to this call only. A list of texts gives a list of
        lists, in order (GLiNER's ``inference``), annotated concurrently; the first failure is raised."""
        if isinstance(text, str):
            return [entity.to_dict() for entity in self(text, labels, threshold=threshold, **options).entities]
        results = []
        for item in self.annotate_batch(text, labels, threshold=threshold, **options):
            if item.exception is not None:
                raise item.exception
            results.append([entity.to_dict() for entity in item.prediction.entities])
        return results


def check_threshold(threshold: float) -> float:
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return threshold


def apply_person_role(entities: list[Entity], schema: Schema, trace: Trace) -> list[Entity]:
    """File the mentions typed ``person`` under the schema's person role (:meth:`Schema.person_role`), each one
    traced as a repair under the ``person_role`` stage; a schema without a role is left as it is."""
    pair = schema.person_role()
    record = trace.add(StageRecord("person_role", inputs={"person": pair[0], "role": pair[1]} if pair else {}))
    if pair is None:
        return entities
    general, role = pair
    filed = []
    for entity in entities:
        if entity.label == general:
            record.repair(f"{entity.text} [{entity.start}:{entity.end}]", f"{general!r} filed under the role {role!r}")
            entity = replace(entity, label=role, typed_by="person_role")
        filed.append(entity)
    return filed


def apply_threshold(entities: list[Entity], threshold: float, trace: Trace) -> list[Entity]:
    """Keep entities scoring at least the threshold; every drop is traced with its score."""
    record = trace.add(StageRecord("confidence", inputs={"threshold": threshold}))
    kept = []
    for entity in entities:
        if entity.score is not None and entity.score < threshold:
            record.drop(
                f"{entity.text} [{entity.start}:{entity.end}] (score {entity.score:.4f})",
                f"score below the threshold {threshold}",
            )
        else:
            kept.append(entity)
    record.outputs = {"scores": {f"{e.text} [{e.start}:{e.end}]": e.score for e in entities}}
    return kept
