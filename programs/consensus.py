"""Collaborative Consensus Refinement: the explorer's noise-prone candidates need the anchor's backing."""

from __future__ import annotations

from dataclasses import dataclass, replace

import dspy

from samner_dspy.confidence import discovery_evidence
from samner_dspy.grounding import mention_key
from samner_dspy.modes import CONSENSUS_MODES, ConsensusMode, check_mode
from samner_dspy.programs.verifier import SpanVerifier
from samner_dspy.schema import Schema
from samner_dspy.tracing import StageRecord
from samner_dspy.types import Candidate


@dataclass(frozen=True)
class NoiseRule:
    """Which explorer candidates are noise-prone.

    The authors' released code treats single-word candidates as noise-prone: silver-trained explorers
    over-generate generic one-word nouns ("data", "system"). Raise ``max_words`` to be stricter.
    """

    max_words: int = 1

    def __post_init__(self) -> None:
        if self.max_words < 0:
            raise ValueError(f"max_words must be >= 0, got {self.max_words}")

    def is_noise_prone(self, surface: str) -> bool:
        return len(surface.split()) <= self.max_words


def _merge(candidates: list[Candidate]) -> list[Candidate]:
    """De-duplicated union in first-seen order; the first spelling (and where it was found) wins, sources and
    types accumulate."""
    merged: dict[str, Candidate] = {}
    for candidate in candidates:
        key = mention_key(candidate.surface)
        if key in merged:
            first = merged[key]
            merged[key] = replace(
                first,
                sources=tuple(dict.fromkeys(first.sources + candidate.sources)),
                types=tuple(dict.fromkeys(first.types + candidate.types)),
            )
        else:
            merged[key] = candidate
    return list(merged.values())


class ConsensusRefiner(dspy.Module):
    """``rule`` (default): uncorroborated noise-prone explorer candidates are dropped, no request.
    ``verify``: they go to the anchor in one request and stay if it confirms them.
    ``off``: the plain union (the paper's "w/o CCR" ablation).

    ``verified`` holds the :func:`mention_key` of every candidate the anchor confirmed, and ``evidence`` each
    candidate's discovery evidence (the first factor of its score); the trace records both, with each decision.
    """

    def __init__(self, mode: ConsensusMode = "rule", noise_rule: NoiseRule | None = None) -> None:
        super().__init__()
        check_mode("consensus mode", mode, CONSENSUS_MODES)
        self.mode = mode
        self.noise_rule = noise_rule or NoiseRule()
        self.verifier = SpanVerifier()

    def forward(
        self,
        text: str,
        schema: Schema,
        anchor: list[Candidate] | None,
        explorer: list[Candidate] | None,
    ) -> dspy.Prediction:
        mode = self.mode if anchor is not None and explorer is not None else "off"
        record = StageRecord("consensus", inputs={"mode": mode, "noise_rule": {"max_words": self.noise_rule.max_words}})
        anchor = anchor or []
        explorer = explorer or []
        anchor_keys = {mention_key(c.surface) for c in anchor}
        kept: list[Candidate] = []
        pending: list[Candidate] = []
        verified: set[str] = set()
        decisions: dict[str, str] = {}  # why each mention was kept, in the rule's words (samner view shows it)
        for candidate in anchor:
            decisions.setdefault(mention_key(candidate.surface), "the precision-oriented anchor proposed it")
        for candidate in explorer:
            key = mention_key(candidate.surface)
            if key in anchor_keys:
                kept.append(candidate)
                decisions[key] = "both extractors proposed it"
            elif mode == "off":
                kept.append(candidate)
                decisions[key] = "no consensus (plain union of the extractors)"
            elif not self.noise_rule.is_noise_prone(candidate.surface):
                kept.append(candidate)
                decisions[key] = f"explorer only, not noise-prone (more than {self.noise_rule.max_words} word(s))"
            else:
                pending.append(candidate)
        if pending and mode == "verify" and self.verifier.backend is not None:
            verdict = self.verifier(text=text, schema=schema, candidates=[c.surface for c in pending])
            record.absorb(verdict.record)
            for candidate in pending:
                if candidate.surface in verdict.confirmed:
                    kept.append(candidate)
                    verified.add(mention_key(candidate.surface))
                    decisions[mention_key(candidate.surface)] = "the anchor confirmed it on verification"
                elif verdict.answered:
                    record.drop(candidate.surface, "the anchor did not confirm it on verification")
                else:
                    record.drop(candidate.surface, "verification failed, so it stays uncorroborated")
        else:
            for candidate in pending:
                record.drop(candidate.surface, "noise-prone explorer candidate without anchor corroboration")
        candidates = _merge(anchor + kept)
        keys = {c.surface: mention_key(c.surface) for c in candidates}
        evidence = {keys[c.surface]: discovery_evidence(c.sources, keys[c.surface] in verified) for c in candidates}
        record.outputs = {
            "candidates": {c.surface: list(c.sources) for c in candidates},
            "decisions": {c.surface: decisions[mention_key(c.surface)] for c in candidates},
            "evidence": {c.surface: evidence[mention_key(c.surface)] for c in candidates},
        }
        if verified:  # the evidence behind these mentions' scores, for viewers and re-scoring
            record.outputs["verified"] = sorted(c.surface for c in kept if mention_key(c.surface) in verified)
        return dspy.Prediction(candidates=candidates, verified=verified, evidence=evidence, record=record)
