"""Paired comparisons of configurations on the same sentences, with bootstrap confidence intervals.

Two configurations scored on the same sentences differ partly by chance: which sentences happen to be in the
sample. The bootstrap resamples the sentences (with replacement, within each domain so every domain keeps its
size, as the macro average weighs domains alike), recomputes both configurations' macro strict F1 on the same
resample, and reads the interval of their difference off the resampled differences. An interval that contains 0
cannot tell the two apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from samner_dspy.evals.metric import Mention, Scores, macro_average, score

BASELINE = "direct"
"""The configuration every other one is compared against: the same model prompted directly."""


@dataclass(frozen=True)
class Bootstrap:
    """How the intervals are drawn; fixed by default so a report is reproducible."""

    resamples: int = 2000
    seed: int = 0
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if self.resamples < 1:
            raise ValueError(f"the bootstrap needs at least one resample, got {self.resamples}")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"the confidence level must be between 0 and 1, got {self.confidence}")


def _mentions(record: Mapping[str, Any]) -> tuple[list[Mention], list[Mention]]:
    gold = [(int(g[0]), int(g[1]), str(g[2])) for g in record["gold"]]
    predicted = [(e["start"], e["end"], e["label"]) for e in record["entities"]]
    return gold, predicted


def sentence_counts(records: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Strict ``(tp, fp, fn)`` of each record, one row per record: sums of rows are the micro counts."""
    rows = []
    for record in records:
        gold, predicted = _mentions(record)
        counts = score([gold], [predicted])
        rows.append((counts.tp, counts.fp, counts.fn))
    return np.array(rows, dtype=np.int64).reshape(len(rows), 3)


def _f1(counts: np.ndarray) -> np.ndarray:
    """F1 from ``(..., 3)`` summed counts, 0 where nothing was right (as :attr:`Scores.f1`)."""
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    denominator = 2 * tp + fp + fn
    return np.where(tp > 0, 2 * tp / np.maximum(denominator, 1), 0.0)


def _by_key(records: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {record["key"]: record for record in records}


def compare(
    results: Mapping[str, Sequence[Mapping[str, Any]]],
    baseline: str = BASELINE,
    bootstrap: Bootstrap | None = None,
) -> dict[str, dict[str, Any]]:
    """Every configuration's macro strict F1 minus the baseline's, on the sentences both have, with its interval.

    Empty when the baseline is not among ``results``. Every comparison uses the same resamples (one draw per
    domain from ``bootstrap.seed``), so the intervals of different rows are drawn alike.
    """
    if baseline not in results:
        return {}
    bootstrap = bootstrap or Bootstrap()
    base = _by_key(results[baseline])
    compared: dict[str, dict[str, Any]] = {}
    for name, records in results.items():
        if name == baseline:
            continue
        mine = _by_key(records)
        shared = sorted(set(mine) & set(base))
        compared[name] = _paired([mine[key] for key in shared], [base[key] for key in shared], baseline, bootstrap)
    return compared


def _paired(
    mine: Sequence[Mapping[str, Any]], base: Sequence[Mapping[str, Any]], baseline: str, bootstrap: Bootstrap
) -> dict[str, Any]:
    domains = sorted({record["domain"] for record in mine})
    rng = np.random.default_rng(bootstrap.seed)
    observed = {"mine": {}, "base": {}}
    resampled = np.zeros((2, bootstrap.resamples))
    for domain in domains:
        rows = [i for i, record in enumerate(mine) if record["domain"] == domain]
        counts = np.stack(
            [sentence_counts([mine[i] for i in rows]), sentence_counts([base[i] for i in rows])]
        )  # (2 configurations, sentences, 3)
        observed["mine"][domain] = counts[0].sum(axis=0)
        observed["base"][domain] = counts[1].sum(axis=0)
        # How often each sentence is drawn in each resample: the same weights for both configurations.
        weights = rng.multinomial(len(rows), np.full(len(rows), 1 / len(rows)), size=bootstrap.resamples)
        resampled += _f1(np.einsum("bs,csk->cbk", weights, counts))
    differences = (resampled[0] - resampled[1]) / max(len(domains), 1)
    tail = (1 - bootstrap.confidence) / 2
    low, high = (float(x) for x in np.quantile(differences, [tail, 1 - tail])) if domains else (0.0, 0.0)
    difference = _macro(observed["mine"]) - _macro(observed["base"])
    return {
        "baseline": baseline,
        "difference": difference,
        "low": low,
        "high": high,
        "verdict": verdict(low, high),
        "sentences": len(mine),
        "domains": domains,
        "resamples": bootstrap.resamples,
        "seed": bootstrap.seed,
        "confidence": bootstrap.confidence,
    }


def _macro(counts_by_domain: Mapping[str, np.ndarray]) -> float:
    return macro_average({d: Scores(*(int(x) for x in c)) for d, c in counts_by_domain.items()})


def verdict(low: float, high: float) -> str:
    """``better`` or ``worse`` only when the whole interval is on one side of 0."""
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "no difference"


def rerun_agreement(
    first: Sequence[Mapping[str, Any]], second: Sequence[Mapping[str, Any]], bootstrap: Bootstrap | None = None
) -> dict[str, Any]:
    """How far two runs of one configuration on the same sentences differ: the noise a later change must beat.

    Counts the shared sentences whose predicted ``(start, end, label)`` sets differ, and pairs the two runs' macro
    strict F1 like two configurations (``difference`` is the second run's minus the first's)."""
    a, b = _by_key(first), _by_key(second)
    shared = sorted(set(a) & set(b))
    if not shared:
        raise ValueError("the two runs share no sentence")
    differing = [key for key in shared if sorted(_mentions(a[key])[1]) != sorted(_mentions(b[key])[1])]
    paired = _paired([b[key] for key in shared], [a[key] for key in shared], "first run", bootstrap or Bootstrap())
    return {**paired, "differing": differing}
