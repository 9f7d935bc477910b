"""SAM-NER as one DSPy program: discovery, consensus, grounding, archetype mediation, calibration."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dspy

from samner_dspy.adapters import IEPileAdapter
from samner_dspy.backends import StageBackend, build_backends
from samner_dspy.config import SamnerConfig, resolve_config
from samner_dspy.errors import InputTextError
from samner_dspy.grounding import Located, locate, resolve_overlaps
from samner_dspy.programs.archetype import ArchetypeClassifier
from samner_dspy.programs.calibrator import CalibrationMode, DirectTyper, TypeCalibrator
from samner_dspy.programs.consensus import ConsensusMode, ConsensusRefiner, NoiseRule
from samner_dspy.programs.extractor import SpanExtractor
from samner_dspy.schema import Schema
from samner_dspy.tracing import StageRecord, Trace
from samner_dspy.types import Candidate, Entity, Span

SchemaLike = Schema | Mapping[str, str] | Iterable[str] | str


def check_text(text: object) -> str:
    if not isinstance(text, str):
        raise InputTextError(f"the text to annotate must be a string, got {type(text).__name__}")
    if not text.strip():
        raise InputTextError("the text to annotate is empty or only whitespace")
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


class SAMNER(dspy.Module):
    """Zero-shot NER by semantic archetype mediation.

    ``SAMNER()(text, schema)`` returns a ``dspy.Prediction`` with ``entities`` (grounded
    :class:`~samner_dspy.types.Entity` objects) and ``trace`` (one record per stage).

    Args:
        config: a :class:`SamnerConfig`, a TOML path or a mapping; None reads ``SAMNER_CONFIG`` or, failing
            that, runs every stage on the embedded model.
        lms: per-stage LMs that override the configuration (any ``dspy.BaseLM``), e.g. for tests.
        ccr: consensus mode, ``rule`` (default), ``verify`` or ``off``.
        calibration: ``sentence`` (default), ``entity``, or ``off`` for direct typing without archetypes.
        use_anchor, use_explorer: the discovery ablations.
        allow_no_label: let typing answer "none" for an entity no label fits, which drops it. Off by default:
            small models answer "none" for nearly everything, and extractors already target the schema.
        max_types_per_request: split large schemas over several extraction requests (None: one request).
    """

    def __init__(
        self,
        config: SamnerConfig | str | Path | Mapping[str, Any] | None = None,
        *,
        lms: Mapping[str, dspy.BaseLM] | None = None,
        ccr: ConsensusMode = "rule",
        noise_rule: NoiseRule | None = None,
        calibration: CalibrationMode | str = "sentence",
        use_anchor: bool = True,
        use_explorer: bool = True,
        allow_no_label: bool = False,
        max_types_per_request: int | None = None,
    ) -> None:
        super().__init__()
        if not (use_anchor or use_explorer):
            raise ValueError("at least one extractor must be enabled (use_anchor or use_explorer)")
        if calibration not in ("sentence", "entity", "off"):
            raise ValueError(f"unknown calibration {calibration!r}; choose 'sentence', 'entity' or 'off'")
        self.config = resolve_config(config)
        self.lms = dict(lms or {})
        self.use_anchor = use_anchor
        self.use_explorer = use_explorer
        self.calibration = calibration
        self.anchor = SpanExtractor("anchor", IEPileAdapter(), max_types_per_request)
        self.explorer = SpanExtractor("explorer", max_types_per_request=max_types_per_request)
        self.consensus = ConsensusRefiner(ccr, noise_rule)
        self.archetype = ArchetypeClassifier()
        self.calibrator = TypeCalibrator("entity" if calibration == "entity" else "sentence", allow_no_label)
        self.direct = DirectTyper(allow_no_label)
        self._backends: dict[str, StageBackend] | None = None
        self._backends_lock = threading.Lock()

    def backends(self) -> dict[str, StageBackend]:
        """Built on first use, so constructing a program never starts a server or opens a connection."""
        with self._backends_lock:
            if self._backends is None:
                self._backends = build_backends(self.config, self.lms)
            return self._backends

    def _discover(self, text: str, schema: Schema, backends: dict[str, StageBackend]) -> dict[str, dspy.Prediction]:
        jobs = {}
        if self.use_anchor:
            jobs["anchor"] = lambda: self.anchor(text=text, schema=schema, backend=backends["anchor"])
        if self.use_explorer:
            jobs["explorer"] = lambda: self.explorer(text=text, schema=schema, backend=backends["explorer"])
        if len(jobs) == 1:
            return {name: job() for name, job in jobs.items()}
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            futures = {name: pool.submit(job) for name, job in jobs.items()}
            return {name: future.result() for name, future in futures.items()}

    def forward(self, text: str, schema: SchemaLike) -> dspy.Prediction:
        text = check_text(text)
        schema = Schema.coerce(schema)
        backends = self.backends()
        trace = Trace()

        found = self._discover(text, schema, backends)
        for name in ("anchor", "explorer"):
            if name in found:
                trace.add(found[name].record)
        consensus = self.consensus(
            text=text,
            schema=schema,
            anchor=found["anchor"].candidates if "anchor" in found else None,
            explorer=found["explorer"].candidates if "explorer" in found else None,
            verifier_backend=backends["anchor"],
        )
        trace.add(consensus.record)
        located, grounding = ground_candidates(text, consensus.candidates)
        trace.add(grounding)
        spans = [span for span, _ in located]

        archetypes: dict[str, str] = {}
        if not spans:
            labels: dict[str, str] = {}
        elif self.calibration == "off":
            typed = self.direct(
                text=text,
                schema=schema,
                entities=list(dict.fromkeys(s.text for s in spans)),
                backend=backends["calibrator"],
            )
            trace.add(typed.record)
            labels = typed.label_of
        else:
            mediated = self.archetype(text=text, spans=spans, backend=backends["archetype"])
            trace.add(mediated.record)
            archetypes = mediated.archetypes
            calibrated = self.calibrator(
                text=text, schema=schema, archetypes=archetypes, backend=backends["calibrator"]
            )
            trace.add(calibrated.record)
            labels = calibrated.label_of

        entities = [
            Entity(span.text, labels[span.text], span.start, span.end, archetypes.get(span.text), candidate.sources)
            for span, candidate in located
            if span.text in labels
        ]
        return dspy.Prediction(entities=entities, trace=trace)

    def predict_entities(self, text: str, labels: SchemaLike) -> list[dict[str, Any]]:
        """GLiNER-style convenience: plain dicts with ``text``, ``label``, ``start``, ``end`` and more."""
        return [entity.to_dict() for entity in self(text, labels).entities]
