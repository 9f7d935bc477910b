"""SAM-NER as one DSPy program: discovery, consensus, grounding, archetype mediation, calibration."""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import dspy

from samner_dspy.adapters import IEPileAdapter
from samner_dspy.backends import StageBackend
from samner_dspy.confidence import combine
from samner_dspy.grounding import mention_key
from samner_dspy.modes import CALIBRATION_MODES, CalibrationMode, ConsensusMode, check_mode
from samner_dspy.prediction import SamnerPrediction
from samner_dspy.programs.archetype import ArchetypeClassifier
from samner_dspy.programs.calibrator import DirectTyper, TypeCalibrator
from samner_dspy.programs.consensus import ConsensusRefiner, NoiseRule
from samner_dspy.programs.extractor import SpanExtractor
from samner_dspy.programs.program import (
    DEFAULT_MAX_CHARS,
    ConfigLike,
    ConfiguredProgram,
    SchemaLike,
    check_text,
    ground_candidates,
)
from samner_dspy.schema import Schema
from samner_dspy.tagging import occurrence_keys
from samner_dspy.tracing import Trace
from samner_dspy.types import Candidate, Entity, Span

# Leaf jobs only (an extractor call never submits here), so any number of callers cannot deadlock it.
_DISCOVERY_WORKERS = ThreadPoolExecutor(max_workers=64, thread_name_prefix="samner-explorer")


class SAMNER(ConfiguredProgram):
    """Zero-shot NER by semantic archetype mediation.

    ``SAMNER()(text, schema)`` returns a ``dspy.Prediction`` with ``entities`` (grounded
    :class:`~samner_dspy.types.Entity` objects) and ``trace`` (one record per stage).

    Args:
        config: a :class:`SamnerConfig`, a TOML path or a mapping; None reads ``SAMNER_CONFIG`` or, failing
            that, runs every stage on the embedded model.
        lms: per-stage LMs that override the configuration (any ``dspy.BaseLM``), e.g. for tests.
        ccr: consensus mode, ``rule`` (default), ``verify`` or ``off``.
        calibration: ``sentence`` (default), ``entity``, ``label`` (see :class:`TypeCalibrator`), or ``off`` for
            direct typing without archetypes.
        use_anchor, use_explorer: the discovery ablations.
        allow_no_label: let typing answer "none" for an entity no label fits, which drops it. Off by default:
            small models answer "none" for nearly everything, and extractors already target the schema.
        max_types_per_request: split large schemas over several extraction requests (None: one request).
        threshold: drop entities whose ``score`` is below it (each drop is traced under the ``confidence``
            stage); 0 keeps all. Scores: :mod:`samner_dspy.confidence`.
        max_chars, overlap, window: a text longer than ``max_chars`` is annotated in overlapping windows (or,
            with ``window=False``, refused before any request). See :class:`ConfiguredProgram`.
    """

    STEPS: tuple[tuple[str, ...], ...] = (("anchor", "explorer", "consensus"), ("archetype",), ("calibrator", "direct"))
    """The stage modules in the order ``forward`` calls them, grouped by what runs together (discovery, mediation,
    calibration): the plan of the Ray actor steps (:mod:`samner_dspy.scale.ray_data`)."""

    def __init__(
        self,
        config: ConfigLike = None,
        *,
        lms: Mapping[str, dspy.BaseLM] | None = None,
        ccr: ConsensusMode = "rule",
        noise_rule: NoiseRule | None = None,
        calibration: CalibrationMode = "sentence",
        use_anchor: bool = True,
        use_explorer: bool = True,
        allow_no_label: bool = False,
        max_types_per_request: int | None = None,
        threshold: float = 0.0,
        max_chars: int = DEFAULT_MAX_CHARS,
        overlap: int = 200,
        window: bool = True,
    ) -> None:
        super().__init__(config, lms, threshold=threshold, max_chars=max_chars, overlap=overlap, window=window)
        if not (use_anchor or use_explorer):
            raise ValueError("at least one extractor must be enabled (use_anchor or use_explorer)")
        check_mode("calibration", calibration, CALIBRATION_MODES)
        self.use_anchor = use_anchor
        self.use_explorer = use_explorer
        self.calibration = calibration
        self.anchor = SpanExtractor("anchor", IEPileAdapter(), max_types_per_request)
        self.explorer = SpanExtractor("explorer", max_types_per_request=max_types_per_request)
        self.consensus = ConsensusRefiner(ccr, noise_rule)
        self.archetype = ArchetypeClassifier()
        self.calibrator = TypeCalibrator("sentence" if calibration == "off" else calibration, allow_no_label)
        self.direct = DirectTyper(allow_no_label)

    def _discover(self, text: str, schema: Schema, backends: dict[str, StageBackend]) -> dict[str, dspy.Prediction]:
        jobs = {}
        if self.use_anchor:
            jobs["anchor"] = lambda: self.anchor(text=text, schema=schema, backend=backends["anchor"])
        if self.use_explorer:
            jobs["explorer"] = lambda: self.explorer(text=text, schema=schema, backend=backends["explorer"])
        if len(jobs) == 1:
            return {name: job() for name, job in jobs.items()}
        # The explorer runs on a long-lived worker, in a copy of this context so the caller's dspy.context
        # settings reach it, while the anchor runs here: no thread is started per sentence.
        side = _DISCOVERY_WORKERS.submit(contextvars.copy_context().run, jobs["explorer"])
        anchor = jobs["anchor"]()
        return {"anchor": anchor, "explorer": side.result()}

    def discover(
        self, text: str, schema: Schema, backends: dict[str, StageBackend], trace: Trace
    ) -> tuple[list[tuple[Span, Candidate]], dict[str, float]]:
        """Discovery, consensus and grounding, traced: the located mentions and each mention's evidence (by
        :func:`~samner_dspy.grounding.mention_key`). Typing reads nothing else, so a subclass that overrides
        this (an evaluation replaying recorded spans, say) changes what is typed and nothing more."""
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
        return located, consensus.evidence

    def forward(self, text: str, schema: SchemaLike) -> dspy.Prediction:
        text = check_text(text)
        schema = Schema.coerce(schema)
        backends = self.backends()
        trace = Trace()
        located, evidence = self.discover(text, schema, backends, trace)
        spans = [span for span, _ in located]
        keys = occurrence_keys(spans)  # archetypes, labels and their probabilities are per span, under these

        archetypes: dict[str, str] = {}
        probabilities: list[dict[str, float]] = []
        if not spans:
            labels: dict[str, str] = {}
        elif self.calibration == "off":
            typed = self.direct(text=text, schema=schema, entities=keys, backend=backends["calibrator"], spans=spans)
            trace.add(typed.record)
            labels = typed.label_of
            probabilities = [typed.probabilities]
        else:
            mediated = self.archetype(text=text, spans=spans, backend=backends["archetype"], keys=keys)
            trace.add(mediated.record)
            archetypes = mediated.archetypes
            calibrated = self.calibrator(
                text=text, schema=schema, archetypes=archetypes, backend=backends["calibrator"], spans=spans
            )
            trace.add(calibrated.record)
            labels = calibrated.label_of
            probabilities = [mediated.probabilities, calibrated.probabilities]

        entities = [
            Entity(
                span.text,
                labels[key],
                span.start,
                span.end,
                archetypes.get(key),
                candidate.sources,
                combine(evidence[mention_key(candidate.surface)], (p.get(key) for p in probabilities)),
                candidate.alignment_status,
            )
            for (span, candidate), key in zip(located, keys, strict=True)
            if key in labels
        ]
        return SamnerPrediction(text=text, entities=entities, trace=trace)
