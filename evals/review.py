"""An evaluation's predictions next to its gold spans, for ``samner view``: which are right, and how not."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from samner_dspy.evals.report import DOMAIN_TITLES, _domains, _f1_row


def judge(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of an eval record whose entities and gold spans carry a ``verdict``, matched as the strict metric
    matches them (each gold entity once): ``ok``; ``fp`` (no gold span there) or ``label`` (a gold span with
    another label, named in ``gold_label``) for predictions; ``fn`` (missed) or ``label`` for gold spans."""
    gold = [{"start": int(g[0]), "end": int(g[1]), "label": str(g[2])} for g in record.get("gold") or []]
    unmatched = Counter((g["start"], g["end"], g["label"]) for g in gold)
    gold_labels: dict[tuple[int, int], list[str]] = {}
    for g in gold:
        gold_labels.setdefault((g["start"], g["end"]), []).append(g["label"])
    entities = []
    predicted_spans = set()
    for entity in record.get("entities") or []:
        entity = dict(entity)
        key = (entity["start"], entity["end"], entity["label"])
        predicted_spans.add(key[:2])
        if unmatched[key] > 0:
            unmatched[key] -= 1
            entity["verdict"] = "ok"
        elif key[:2] in gold_labels:
            entity["verdict"], entity["gold_label"] = "label", " / ".join(gold_labels[key[:2]])
        else:
            entity["verdict"] = "fp"
        entities.append(entity)
    for g in gold:
        key = (g["start"], g["end"], g["label"])
        if unmatched[key] > 0:
            unmatched[key] -= 1
            g["verdict"] = "label" if key[:2] in predicted_spans else "fn"
        else:
            g["verdict"] = "ok"
    return {**record, "entities": entities, "gold": gold}


def report_tables(report_json: Path) -> list[dict[str, Any]]:
    """The strict and span F1 tables of a ``report.json`` (as in report.md), for the top of the page."""
    summary = json.loads(report_json.read_text(encoding="utf-8"))["results"]
    domains = _domains(summary)
    header = ["Method", *(DOMAIN_TITLES.get(d, d) for d in domains), "Avg."]
    return [
        {
            "title": title,
            "header": header,
            "rows": [[entry["title"], *_f1_row(entry, key, domains)] for entry in summary.values()],
        }
        for key, title in (
            ("strict", "Strict micro-F1 (span and label must match)"),
            ("span", "Discovery: span F1 ignoring labels"),
        )
    ]
