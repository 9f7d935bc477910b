"""SAM-NER as one DSPy program: discovery, consensus, grounding, archetype mediation, calibration."""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import dspy

from samner_dspy.adapters import IEPileAdapter
from samner_dspy.confidence import combine
from samner_dspy.config import STAGES, SamnerConfig
from samner_dspy.grounding import mention_key
from samner_dspy.modes import (
    CALIBRATION_MODES,
    DEFAULT_MAX_CHARS,
    DEFAULT_OVERLAP,
    PRESET_NAMES,
    PRESETS,
    CalibrationMode,
    ConsensusMode,
    Preset,
    check_mode,
)
from samner_dspy.programs.archetype import ArchetypeClassifier
from samner_dspy.programs.calibrator import DirectTyper, LabelMatcher, TypeCalibrator
from samner_dspy.programs.consensus import ConsensusRefiner, NoiseRule
from samner_dspy.programs.extractor import SpanExtractor
from samner_dspy.programs.program import (
    ConfigLike,
    ConfiguredProgram,
    SchemaLike,
    check_text,
    ground_candidates,
)
from samner_dspy.schema import Schema
from samner_dspy.serving.trained import runs_trained
from samner_dspy.tagging import occurrence_keys
from samner_dspy.tracing import StageRecord, Trace
from samner_dspy.types import Candidate, Document, Entity, Span

# Leaf jobs only (an extractor call never submits here), so any number of callers cannot deadlock it.
_DISCOVERY_WORKERS = ThreadPoolExecutor(max_workers=64, thread_name_prefix="samner-explorer")


@dataclass(frozen=True)
class Discovery:
    """What typing reads from discovery."""

    located: list[tuple[Span, Candidate]]
    """Every grounded mention, with the candidate it came from."""
    evidence: dict[str, float]
    """Each mention's discovery evidence (:mod:`samner_dspy.confidence`), by its mention key."""
    anchor_types: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """The labels the anchor filed each mention under, by mention key (for ``trust_anchor_types``)."""


@dataclass(frozen=True)
class Mediation:
    """What calibration reads from mediation: each span's archetype, by occurrence key."""

    archetypes: dict[str, str] = field(default_factory=dict)
    probabilities: dict[str, float] | None = None
    """The archetype answers' probabilities; None when no archetype was asked for."""


@dataclass(frozen=True)
class Typing:
    """Calibration's result: each span's label, by occurrence key (a span without one is left out)."""

    labels: dict[str, str]
    typed_by: dict[str, str]
    """Which stage gave each label (:data:`~samner_dspy.types.TYPED_BY`), by occurrence key."""
    probabilities: dict[str, float] | None = None
    """The label answers' probabilities; None when no typing request was sent."""


def preset_for(config: SamnerConfig, lms: Mapping[str, dspy.BaseLM] | None = None) -> Preset:
    """The preset a program without one runs: when every stage is on an embedded model (and not overridden by
    ``lms``), ``trained`` if the anchor and archetype stages run adapters (the default configuration gives them the
    committed ones: :func:`samner_dspy.serving.trained.runs_trained`) and ``small`` if not; else ``paper``. Engines that
    re-point the stages (Ray) decide it first, from this."""
    on_embedded = all(stage not in (lms or {}) and config.endpoint(stage).is_embedded for stage in STAGES)
    if not on_embedded:
        return "paper"
    return "trained" if runs_trained(config) else "small"


class SAMNER(ConfiguredProgram):
    """Zero-shot NER by semantic archetype mediation.

    ``SAMNER()(text, schema)`` returns a ``dspy.Prediction`` with ``entities`` (grounded
    :class:`~samner_dspy.types.Entity` objects) and ``trace`` (one record per stage).

    Args:
        config: a :class:`SamnerConfig`, a TOML path or a mapping; None reads ``SAMNER_CONFIG`` or, failing
            that, runs every stage on the embedded model.
        lms: per-stage LMs that override the configuration (any ``dspy.BaseLM``), e.g. for tests.
        preset: the defaults of ``ccr``, ``calibration``, ``trust_anchor_types``, ``use_explorer`` and
            ``person_role`` (:data:`samner_dspy.modes.PRESETS`): ``paper``, ``small`` (:meth:`for_small_models`) or
            ``trained``. None picks one from the stages (:func:`preset_for`): ``trained`` on the embedded model with
            its trained adapters (the default), ``small`` on it without them, ``paper`` otherwise (vLLM and the LoRAs).
        ccr: consensus mode, ``rule`` (the paper's), ``verify`` or ``off``.
        calibration: ``sentence`` (the paper's), ``entity``, ``matched`` (the archetype stage's classifier
            types the spans against the labels' definitions), ``off`` for direct typing without archetypes, or
            ``anchor`` (the anchor's own types; :data:`samner_dspy.modes.CalibrationMode`).
        use_anchor, use_explorer: the discovery ablations (None: the preset's ``use_explorer``).
        allow_no_label: let typing answer "none" for an entity no label fits, which drops it. Off by default:
            small models answer "none" for nearly everything, and extractors already target the schema.
        trust_anchor_types: a mention the precision-oriented anchor filed under exactly one label keeps that
            label, and calibration types only the others (each kept label is traced under the calibrator's
            ``from_anchor``). Off in the paper's configuration; on in :meth:`for_small_models`, where the
            anchor's unambiguous types are right about twice as often as the calibrator's.
        max_types_per_request: split large schemas over several extraction requests (None: one request).
        threshold: drop entities whose ``score`` is below it (each drop is traced under the ``confidence``
            stage); 0 keeps all. Scores: :mod:`samner_dspy.confidence`.
        max_chars, overlap, window: a text longer than ``max_chars`` is annotated in overlapping windows (or,
            with ``window=False``, refused before any request). See :class:`ConfiguredProgram`.
        person_role: mentions typed ``person`` take the role the schema's ``person`` definition sets apart
            (:meth:`ConfiguredProgram`'s option; None: the preset's).
    """

    STEPS: tuple[tuple[str, ...], ...] = (
        ("anchor", "explorer", "consensus"),
        ("archetype",),
        ("calibrator", "matcher", "direct"),
    )
    """The stage modules in the order ``forward`` calls them, grouped by what runs together (discovery, mediation,
    calibration): the plan of the Ray actor steps (:mod:`samner_dspy.scale.ray_data`)."""

    def __init__(
        self,
        config: ConfigLike = None,
        *,
        lms: Mapping[str, dspy.BaseLM] | None = None,
        preset: Preset | None = None,
        ccr: ConsensusMode | None = None,
        noise_rule: NoiseRule | None = None,
        calibration: CalibrationMode | None = None,
        use_anchor: bool = True,
        use_explorer: bool | None = None,
        allow_no_label: bool = False,
        trust_anchor_types: bool | None = None,
        max_types_per_request: int | None = None,
        threshold: float = 0.0,
        max_chars: int = DEFAULT_MAX_CHARS,
        overlap: int = DEFAULT_OVERLAP,
        window: bool = True,
        person_role: bool | None = None,
    ) -> None:
        super().__init__(config, lms, threshold=threshold, max_chars=max_chars, overlap=overlap, window=window)
        if preset is None:
            preset = preset_for(self.config, self.lms)
        check_mode("preset", preset, PRESET_NAMES)
        chosen = {
            "ccr": ccr,
            "calibration": calibration,
            "trust_anchor_types": trust_anchor_types,
            "use_explorer": use_explorer,
            "person_role": person_role,
        }
        options = {**PRESETS[preset], **{name: value for name, value in chosen.items() if value is not None}}
        ccr, calibration = options["ccr"], options["calibration"]
        trust_anchor_types = bool(options["trust_anchor_types"])
        use_explorer = bool(options["use_explorer"])
        self.person_role = bool(options["person_role"])
        if not (use_anchor or use_explorer):
            raise ValueError(
                f"at least one extractor must be enabled (use_anchor or use_explorer; the {preset!r} preset's "
                f"use_explorer is {PRESETS[preset]['use_explorer']})"
            )
        check_mode("calibration", calibration, CALIBRATION_MODES)
        self.preset = preset
        self.use_anchor = use_anchor
        self.use_explorer = use_explorer
        self.calibration = calibration
        self.trust_anchor_types = trust_anchor_types
        self.anchor = SpanExtractor("anchor", IEPileAdapter(), max_types_per_request)
        self.explorer = SpanExtractor("explorer", max_types_per_request=max_types_per_request)
        self.consensus = ConsensusRefiner(ccr, noise_rule)
        self.archetype = ArchetypeClassifier()
        self.calibrator = TypeCalibrator("entity" if calibration == "entity" else "sentence", allow_no_label)
        self.direct = DirectTyper(allow_no_label)
        self.matcher = LabelMatcher(allow_no_label)

    @classmethod
    def for_small_models(cls, config: ConfigLike = None, **options: Any) -> SAMNER:
        """The ``small`` preset: CCR's verification, one calibration request per entity, and the anchor's
        unambiguous types trusted: the best preset found for the untrained embedded model
        (``SamnerConfig.embedded(trained=False)``), level with a plain prompt out of sample (README, "Evaluation on
        CrossNER")."""
        return cls(config, preset="small", **options)

    def first_signatures(self) -> dict[str, str]:
        if self.calibration == "entity":
            return {"calibrator": self.calibrator.predict_entity.signature.__name__}
        return {"calibrator": self.direct.predict.signature.__name__} if self.calibration == "off" else {}

    def _discover(self, text: str, schema: Schema) -> dict[str, dspy.Prediction]:
        jobs = {}
        if self.use_anchor:
            jobs["anchor"] = lambda: self.anchor(text=text, schema=schema)
        if self.use_explorer:
            jobs["explorer"] = lambda: self.explorer(text=text, schema=schema)
        if len(jobs) == 1:
            return {name: job() for name, job in jobs.items()}
        # The explorer runs on a long-lived worker, in a copy of this context so the caller's dspy.context
        # settings reach it, while the anchor runs here: no thread is started per sentence.
        side = _DISCOVERY_WORKERS.submit(contextvars.copy_context().run, jobs["explorer"])
        anchor = jobs["anchor"]()
        return {"anchor": anchor, "explorer": side.result()}

    @staticmethod
    def _anchor_labels(discovery: Discovery, keys: list[str], schema: Schema, only_one: bool = True) -> dict[str, str]:
        """The label the anchor filed each mention under: with ``only_one``, only mentions filed under exactly
        one label; else the first label of each. A label outside the schema is no label."""
        labels = {}
        for (_, candidate), key in zip(discovery.located, keys, strict=True):
            types = discovery.anchor_types.get(mention_key(candidate.surface), ())
            if types and (len(types) == 1 or not only_one) and (label := schema.match_label(types[0])):
                labels[key] = label
        return labels

    def discover(self, text: str, schema: Schema, trace: Trace) -> Discovery:
        """Discovery, consensus and grounding, traced. Typing reads nothing else, so a subclass that overrides
        this (an evaluation replaying recorded spans, say) changes what is typed and nothing more."""
        found = self._discover(text, schema)
        for name in ("anchor", "explorer"):
            if name in found:
                trace.add(found[name].record)
        consensus = self.consensus(
            text=text,
            schema=schema,
            anchor=found["anchor"].candidates if "anchor" in found else None,
            explorer=found["explorer"].candidates if "explorer" in found else None,
        )
        trace.add(consensus.record)
        located, grounding = ground_candidates(text, consensus.candidates)
        trace.add(grounding)
        anchored = found["anchor"].candidates if "anchor" in found else []
        return Discovery(located, consensus.evidence, {mention_key(c.surface): c.types for c in anchored})

    @staticmethod
    def _entities(
        discovery: Discovery, keys: list[str], typing: Typing, archetypes: Mapping[str, str], probabilities: list
    ) -> list[Entity]:
        """The typed mentions as entities, in discovery's order; a mention without a label is left out."""
        return [
            Entity(
                span.text,
                typing.labels[key],
                span.start,
                span.end,
                archetypes.get(key),
                candidate.sources,
                combine(discovery.evidence[mention_key(candidate.surface)], (p.get(key) for p in probabilities)),
                candidate.alignment_status,
                typing.typed_by[key],
            )
            for (span, candidate), key in zip(discovery.located, keys, strict=True)
            if key in typing.labels
        ]

    def mediate(self, text: str, discovery: Discovery, keys: list[str], trace: Trace) -> Mediation:
        """Mediation: one archetype per span, unless typing reads none (``calibration`` ``off`` or ``anchor``)."""
        spans = [span for span, _ in discovery.located]
        if self.calibration in ("off", "anchor") or not spans:
            return Mediation()
        mediated = self.archetype(text=text, spans=spans, keys=keys)
        trace.add(mediated.record)
        return Mediation(mediated.archetypes, mediated.probabilities)

    def calibrate(
        self,
        text: str,
        schema: Schema,
        discovery: Discovery,
        keys: list[str],
        mediation: Mediation,
        trace: Trace,
    ) -> Typing:
        """Calibration: one target label per span, from its archetype (``calibration`` ``sentence`` or
        ``entity``), by the archetype classifier over the labels' definitions (``matched``), from the definitions
        alone (``off``), or the anchor's own (``anchor``, no request). With
        ``trust_anchor_types`` a span the anchor filed under one label keeps it and is not asked about."""
        if self.calibration == "anchor":
            labels = self._anchor_labels(discovery, keys, schema, only_one=False)
            record = trace.add(StageRecord("anchor_typing", inputs={"entities": keys}, outputs={"labels": labels}))
            for key in keys:
                if key not in labels:
                    record.drop(key, "the anchor gave it no label of the schema (calibration='anchor')")
            return Typing(labels, dict.fromkeys(labels, "anchor"))
        from_anchor = self._anchor_labels(discovery, keys, schema) if self.trust_anchor_types else {}
        spans = [span for span, _ in discovery.located]
        open_spans = [(span, key) for span, key in zip(spans, keys, strict=True) if key not in from_anchor]
        stage = {"off": "direct_typing", "matched": "matcher"}.get(self.calibration, "calibrator")
        at, open_keys = [span for span, _ in open_spans], [key for _, key in open_spans]
        typed = None
        if open_spans and stage == "matcher":
            typed = self.matcher(text=text, schema=schema, spans=at, keys=open_keys)
        elif open_spans and stage == "direct_typing":
            typed = self.direct(text=text, schema=schema, entities=open_keys, spans=at)
        elif open_spans:
            archetypes = {key: mediation.archetypes[key] for key in open_keys}
            typed = self.calibrator(text=text, schema=schema, archetypes=archetypes, spans=at)
        record = typed.record if typed is not None else None
        if typed is None and from_anchor:  # the anchor typed every mention: no typing request
            record = StageRecord(stage, inputs={"entities": []}, outputs={"labels": {}})
        if record is not None:
            if self.trust_anchor_types:
                record.inputs["from_anchor"] = from_anchor
            trace.add(record)
        labels = typed.label_of if typed is not None else {}
        typed_by = {**dict.fromkeys(labels, stage), **dict.fromkeys(from_anchor, "anchor")}
        return Typing({**labels, **from_anchor}, typed_by, typed.probabilities if typed is not None else None)

    def forward(self, text: str, schema: SchemaLike) -> dspy.Prediction:
        """The paper's three stages: discovery finds spans, mediation gives each an archetype, calibration a label."""
        text, schema = check_text(text), Schema.coerce(schema)
        self.backends()  # binds every stage to its endpoint on first use
        trace = Trace()
        discovery = self.discover(text, schema, trace)
        keys = occurrence_keys([span for span, _ in discovery.located])  # later stages answer per span, by key
        mediation = self.mediate(text, discovery, keys, trace)
        typing = self.calibrate(text, schema, discovery, keys, mediation, trace)
        probabilities = [p for p in (mediation.probabilities, typing.probabilities) if p is not None]
        entities = self._entities(discovery, keys, typing, mediation.archetypes, probabilities)
        return Document(text=text, entities=entities, trace=trace)
