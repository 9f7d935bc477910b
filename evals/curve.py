"""Precision and recall over the confidence threshold: what ``--threshold`` would have bought on this data.

Each prediction's ``score`` is ranked against the strict metric's matching (span and label, each gold entity
once). Records written before scores existed get the score's evidence term back from the trace
(:func:`samner_dspy.confidence.discovery_evidence`). The figure is hand-written SVG: no plotting dependency.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from samner_dspy.confidence import discovery_evidence
from samner_dspy.grounding import mention_key

TABLE_THRESHOLDS = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")


@dataclass(frozen=True)
class Point:
    threshold: float
    precision: float
    recall: float
    kept: int


def _verified(record: Mapping[str, Any]) -> set[str]:
    for stage in (record.get("trace") or {}).get("stages") or []:
        if stage.get("stage") == "consensus":
            return {mention_key(v) for v in (stage.get("outputs") or {}).get("verified") or []}
    return set()


def scored(records: Iterable[Mapping[str, Any]]) -> tuple[list[tuple[float, bool]], int]:
    """``(score, correct)`` per prediction, and the number of gold entities."""
    pairs: list[tuple[float, bool]] = []
    gold_total = 0
    for record in records:
        gold = Counter((int(g[0]), int(g[1]), str(g[2])) for g in record.get("gold") or [])
        gold_total += sum(gold.values())
        verified = _verified(record)
        # Higher scores claim gold first, so a duplicate prediction is the lower-scored one's miss.
        entities = sorted(record.get("entities") or [], key=lambda e: -_score(e, verified))
        for entity in entities:
            key = (entity["start"], entity["end"], entity["label"])
            correct = gold[key] > 0
            gold[key] -= correct
            pairs.append((_score(entity, verified), correct))
    return pairs, gold_total


def _score(entity: Mapping[str, Any], verified: set[str]) -> float:
    score = entity.get("score")
    if isinstance(score, int | float):
        return float(score)
    return discovery_evidence(entity.get("sources") or [], mention_key(entity.get("text", "")) in verified)


def curve(records: Iterable[Mapping[str, Any]], thresholds: Sequence[float] | None = None) -> list[Point]:
    """Precision and recall keeping predictions scoring at least each threshold (by default every score seen,
    ascending); a threshold that keeps nothing has no precision and is left out."""
    pairs, gold_total = scored(records)
    points = []
    for threshold in thresholds if thresholds is not None else sorted({s for s, _ in pairs}):
        kept = [correct for score, correct in pairs if score >= threshold]
        if kept:
            precision = sum(kept) / len(kept)
            recall = sum(kept) / gold_total if gold_total else 0.0
            points.append(Point(threshold, precision, recall, len(kept)))
    return points


def svg(curves: Mapping[str, list[Point]], title: str = "Precision and recall over the score threshold") -> str:
    """A recall (x) / precision (y) plot, one line per configuration; each point's tooltip names its threshold."""
    width, height, left, top, size = 560, 420, 60, 40, 320
    x = lambda r: left + r * size  # noqa: E731
    y = lambda p: top + (1 - p) * size  # noqa: E731
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="#fff"/>',
        f'<text x="{left}" y="22" font-size="14">{escape(title)}</text>',
    ]
    for tick in range(11):
        value = tick / 10
        parts.append(f'<line x1="{x(value):.1f}" y1="{top}" x2="{x(value):.1f}" y2="{top + size}" stroke="#eee"/>')
        parts.append(f'<line x1="{left}" y1="{y(value):.1f}" x2="{left + size}" y2="{y(value):.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{x(value):.1f}" y="{top + size + 16}" text-anchor="middle">{value:.1f}</text>')
        parts.append(f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:.1f}</text>')
    parts.append(f'<rect x="{left}" y="{top}" width="{size}" height="{size}" fill="none" stroke="#444"/>')
    parts.append(f'<text x="{left + size / 2}" y="{top + size + 34}" text-anchor="middle">recall</text>')
    parts.append(
        f'<text x="16" y="{top + size / 2}" text-anchor="middle" transform="rotate(-90 16 {top + size / 2})">'
        "precision</text>"
    )
    for n, (name, points) in enumerate(curves.items()):
        colour = COLOURS[n % len(COLOURS)]
        line = " ".join(f"{x(p.recall):.1f},{y(p.precision):.1f}" for p in points)
        if line:
            parts.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for p in points:
            tip = f"{name}: threshold {p.threshold:.3f}, precision {p.precision:.3f}, recall {p.recall:.3f}"
            parts.append(
                f'<circle cx="{x(p.recall):.1f}" cy="{y(p.precision):.1f}" r="3" fill="{colour}">'
                f"<title>{escape(tip)}</title></circle>"
            )
        legend_y = top + 10 + 18 * n
        parts.append(f'<rect x="{left + size + 14}" y="{legend_y - 9}" width="12" height="12" fill="{colour}"/>')
        parts.append(f'<text x="{left + size + 32}" y="{legend_y + 1}">{escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def markdown_table(results: Mapping[str, Iterable[Mapping[str, Any]]]) -> list[str]:
    """Precision / recall (x100) at :data:`TABLE_THRESHOLDS`, one column per configuration."""
    columns = {name: {p.threshold: p for p in curve(records, TABLE_THRESHOLDS)} for name, records in results.items()}
    lines = ["| score ≥ | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for threshold in TABLE_THRESHOLDS:
        cells = [
            f"{100 * p.precision:.1f} / {100 * p.recall:.1f}" if (p := points.get(threshold)) else "-"
            for points in columns.values()
        ]
        lines.append(f"| {threshold:g} | " + " | ".join(cells) + " |")
    return lines


def write(results: Mapping[str, list[Mapping[str, Any]]], directory: Path, titles: Mapping[str, str]) -> list[str]:
    """Write ``pr_curve.svg`` into ``directory``; returns the report.md section that shows and tabulates it."""
    curves = {titles.get(name, name): curve(records) for name, records in results.items()}
    (directory / "pr_curve.svg").write_text(svg(curves), encoding="utf-8")
    named = {titles.get(name, name): records for name, records in results.items()}
    return [
        "## Precision and recall over the confidence threshold",
        "",
        "Predictions scoring at least the threshold are kept (`--threshold`); precision / recall, strict (x100).",
        "",
        "![precision-recall curve over the score threshold](pr_curve.svg)",
        "",
        *markdown_table(named),
    ]
