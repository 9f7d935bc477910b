"""The report of an evaluation: the paper's Table 1 layout per configuration, plus where points are lost."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from samner_dspy.archetypes import crossner_archetype
from samner_dspy.evals import curve
from samner_dspy.evals.metric import (
    Scores,
    archetype_accuracy,
    archetype_consistency,
    label_accuracy,
    macro_average,
    per_label,
    score,
    span_score,
)
from samner_dspy.evals.paired import BASELINE, Bootstrap, compare
from samner_dspy.evals.runner import BASELINES, TITLES
from samner_dspy.grounding import Located, locate, resolve_overlaps
from samner_dspy.tagging import occurrence_keys
from samner_dspy.types import Span

DOMAIN_TITLES = {"ai": "AI", "literature": "Literature", "music": "Music", "politics": "Politics", "science": "Science"}


def _mentions(records: list[dict[str, Any]]) -> tuple[list[list[tuple]], list[list[tuple]], list[list[tuple]]]:
    gold = [[tuple(g) for g in r["gold"]] for r in records]
    predicted = [[(e["start"], e["end"], e["label"]) for e in r["entities"]] for r in records]
    with_archetypes = [[(e["start"], e["end"], e["label"], e.get("archetype")) for e in r["entities"]] for r in records]
    return gold, predicted, with_archetypes


def classified_spans(record: dict[str, Any]) -> list[tuple[int, int, str]]:
    """``(start, end, archetype)`` of every span the record's archetype stage classified: the grounding stage's
    spans, named as the stage names them (:func:`~samner_dspy.tagging.occurrence_keys`), so an entity the
    calibrator later dropped still counts."""
    stages = {stage.get("stage"): stage for stage in record["trace"]["stages"]}
    answers = ((stages.get("archetype") or {}).get("outputs") or {}).get("archetypes") or {}
    grounded = ((stages.get("grounding") or {}).get("outputs") or {}).get("spans") or []
    spans = [Span(int(start), int(end), str(text)) for start, end, text, *_ in grounded]
    keys = dict(zip(spans, occurrence_keys(spans), strict=True))
    return [(span.start, span.end, answers[keys[span]]) for span in spans if keys[span] in answers]


DISCOVERY_STAGES = ("anchor", "explorer", "grounding")
"""The stages whose spans :func:`stage_spans` scores: each extractor alone, and what consensus kept (grounding)."""


def stage_spans(record: dict[str, Any], stage: str) -> list[tuple[int, int, str]] | None:
    """``(start, end, "")`` of the spans one discovery stage gave the record's text, or None when it did not run.

    An extractor's mentions are located as the program locates them (every whole-word occurrence; of overlapping
    ones the longest stays), so its precision and recall are what it alone would give; ``grounding`` is what
    consensus kept."""
    stages = {entry.get("stage"): entry for entry in record["trace"]["stages"]}
    if stage not in stages:
        return None
    outputs = stages[stage].get("outputs") or {}
    if stage == "grounding":
        return [(int(start), int(end), "") for start, end, *_ in outputs.get("spans") or []]
    found = [locate(record["text"], mention) for mention in outputs.get("mentions") or {}]
    kept, _ = resolve_overlaps([span for hit in found if isinstance(hit, Located) for span in hit.spans])
    return [(span.start, span.end, "") for span in kept]


def discovery_by_stage(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Span scores (labels ignored) of each discovery stage that ran on every record, per domain."""
    scores: dict[str, dict[str, Any]] = {}
    for stage in DISCOVERY_STAGES:
        if stage == "grounding" and not scores:
            continue  # a single-request program: its grounded spans are the discovery table's row already
        predicted = [stage_spans(r, stage) for r in records]
        if not records or any(spans is None for spans in predicted):
            continue
        by_domain = {}
        for domain in _ordered({r["domain"] for r in records}):
            pairs = [(r, p) for r, p in zip(records, predicted, strict=True) if r["domain"] == domain]
            gold = [[tuple(g) for g in r["gold"]] for r, _ in pairs]
            by_domain[domain] = span_score(gold, [p for _, p in pairs]).to_dict()
        scores[stage] = by_domain
    return scores


def summarize(
    results: dict[str, list[dict[str, Any]]],
    bootstrap: Bootstrap | None = None,
    against: Sequence[str] = (BASELINE,),
) -> dict[str, Any]:
    """Scores of every configuration: strict and span-only, label accuracy on found spans, per domain, per label,
    archetype purity, and its paired difference to each configuration of ``against`` that ran, with its interval
    (under ``paired``, by baseline)."""
    summary: dict[str, Any] = {}
    bootstrap = bootstrap or Bootstrap()
    paired = {baseline: compare(results, baseline, bootstrap) for baseline in against}
    for name, records in results.items():
        domains = _ordered({r["domain"] for r in records})
        strict: dict[str, Scores] = {}
        spans: dict[str, Scores] = {}
        labels: dict[str, dict[str, Any]] = {}
        purity: dict[str, Any] = {}
        archetypes: dict[str, Any] = {}
        for domain in domains:
            gold, predicted, with_archetypes = _mentions([r for r in records if r["domain"] == domain])
            strict[domain] = score(gold, predicted)
            spans[domain] = span_score(gold, predicted)
            labels[domain] = {label: s.to_dict() for label, s in sorted(per_label(gold, predicted).items())}
            purity[domain] = archetype_consistency(gold, with_archetypes)
            in_domain = [r for r in records if r["domain"] == domain]
            archetypes[domain] = archetype_accuracy(
                gold, [classified_spans(r) for r in in_domain], lambda label, d=domain: crossner_archetype(d, label)
            )
        typing = {d: _typing(strict[d], spans[d]) for d in domains}
        found = [t["accuracy"] for t in typing.values() if t["accuracy"] is not None]
        requests = [sum(s["requests"] for s in r["trace"]["stages"]) for r in records]
        summary[name] = {
            "title": TITLES.get(name, name),
            "sentences": {d: sum(1 for r in records if r["domain"] == d) for d in domains},
            "strict": {d: s.to_dict() for d, s in strict.items()},
            "strict_avg_f1": macro_average(strict),
            "span": {d: s.to_dict() for d, s in spans.items()},
            "span_avg_f1": macro_average(spans),
            "label_accuracy": typing,
            "label_accuracy_avg": sum(found) / len(found) if found else None,
            "per_label": labels,
            "archetype_consistency": purity,
            "archetype_accuracy": archetypes,
            "requests_per_sentence": sum(requests) / max(len(requests), 1),
            "discovery_by_stage": discovery_by_stage(records),
        }
        versus = {baseline: rows[name] for baseline, rows in paired.items() if name in rows}
        if versus:
            summary[name]["paired"] = versus
    return summary


def strongest_baseline(summary: dict[str, Any]) -> str | None:
    """The single-request baseline with the highest macro strict F1 among those scored, if any."""
    scored = [name for name in BASELINES if name in summary]
    return max(scored, key=lambda name: summary[name]["strict_avg_f1"]) if scored else None


def _typing(strict: Scores, spans: Scores) -> dict[str, Any]:
    """Label accuracy on found spans with its counts: span hits, and how many of them had the gold label."""
    return {"matched": spans.tp, "correct": strict.tp, "accuracy": label_accuracy(strict, spans)}


def _ordered(domains: set[str]) -> list[str]:
    """CrossNER's domains in the paper's order, then any other data set (``--data-file``) by name."""
    known = list(DOMAIN_TITLES)
    return sorted(domains, key=lambda d: (known.index(d) if d in known else len(known), d))


def _domains(summary: dict[str, Any]) -> list[str]:
    return _ordered({d for entry in summary.values() for d in entry["strict"]})


def _f1_row(entry: dict[str, Any], key: str, domains: list[str]) -> list[str]:
    cells = [f"{100 * entry[key][d]['f1']:.1f}" if d in entry[key] else "-" for d in domains]
    return [*cells, f"{100 * entry[f'{key}_avg_f1']:.1f}"]


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _accuracy_row(entry: dict[str, Any], domains: list[str]) -> list[str]:
    cells = [_percent(entry["label_accuracy"][d]["accuracy"]) if d in entry["label_accuracy"] else "-" for d in domains]
    return [*cells, _percent(entry["label_accuracy_avg"])]


def _baselines(summary: dict[str, Any]) -> list[str]:
    """The baselines rows were paired against, in the order asked for (a row paired against all holds it)."""
    fullest = max((list(e.get("paired", {})) for e in summary.values()), key=len, default=[])
    return list(dict.fromkeys([*fullest, *(b for e in summary.values() for b in e.get("paired", {}))]))


def _paired_section(summary: dict[str, Any]) -> list[str]:
    """Each configuration against each baseline on the same sentences: difference, interval, verdict."""
    baselines = _baselines(summary)
    lines: list[str] = []
    strongest = strongest_baseline(summary)
    if strongest is not None:
        lines += [
            "",
            f"Strongest single-request baseline on these sentences: **{summary[strongest]['title']}** "
            f"({100 * summary[strongest]['strict_avg_f1']:.1f} macro strict F1).",
        ]
    for baseline in baselines:
        rows = [e for e in summary.values() if baseline in e.get("paired", {})]
        first = rows[0]["paired"][baseline]
        lines += ["", f"## Paired against {TITLES.get(baseline, baseline)} (macro strict F1)", ""]
        lines.append(
            f"Difference of macro strict F1 on the same sentences, with its {100 * first['confidence']:.0f}% "
            f"bootstrap interval ({first['resamples']} resamples of the sentences within each domain, seed "
            f"{first['seed']}). An interval that contains 0 is no difference."
        )
        lines += ["", "| Method | Difference | Interval | Verdict | Sentences |", "|---|---|---|---|---|"]
        for entry in rows:
            p = entry["paired"][baseline]
            interval = f"[{100 * p['low']:+.1f}, {100 * p['high']:+.1f}]"
            lines.append(
                f"| {entry['title']} | {100 * p['difference']:+.1f} | {interval} | {p['verdict']} | {p['sentences']} |"
            )
    return lines


def markdown(summary: dict[str, Any], heading: str, command: str) -> str:
    domains = _domains(summary)
    header = "| Method | " + " | ".join(DOMAIN_TITLES.get(d, d) for d in domains) + " | Avg. |"
    rule = "|---" * (len(domains) + 2) + "|"
    lines = [f"# {heading}", "", f"Command: `{command}`", "", "## Strict micro-F1 (span and label must match)", ""]
    lines += [header, rule]
    lines += [f"| {e['title']} | " + " | ".join(_f1_row(e, "strict", domains)) + " |" for e in summary.values()]
    lines += ["", "## Discovery: span F1 ignoring labels", "", header, rule]
    lines += [f"| {e['title']} | " + " | ".join(_f1_row(e, "span", domains)) + " |" for e in summary.values()]
    lines += ["", "## Typing: label accuracy on found spans", ""]
    lines += ["Of the predictions whose span matches a gold span, the share with the gold label.", ""]
    lines += [header, rule]
    lines += [f"| {e['title']} | " + " | ".join(_accuracy_row(e, domains)) + " |" for e in summary.values()]
    lines += _paired_section(summary)
    lines += ["", "## Archetype consistency with gold labels (purity of matched spans)", "", header, rule]
    for entry in summary.values():
        if not any(c["matched"] for c in entry["archetype_consistency"].values()):
            continue
        cells = [
            f"{100 * entry['archetype_consistency'][d]['purity']:.1f}" if d in entry["archetype_consistency"] else "-"
            for d in domains
        ]
        lines.append(f"| {entry['title']} | " + " | ".join(cells) + " | |")
    lines += _archetype_section(summary, header, rule, domains)
    lines += _stage_section(summary, header, rule, domains)
    lines += ["", "## Sentences and requests", ""]
    for entry in summary.values():
        counts = ", ".join(f"{d}: {n}" for d, n in entry["sentences"].items())
        lines.append(f"- {entry['title']}: {counts}; {entry['requests_per_sentence']:.2f} LLM requests per sentence")
    return "\n".join(lines) + "\n"


def _archetype_section(summary: dict[str, Any], header: str, rule: str, domains: list[str]) -> list[str]:
    """Archetype accuracy per row that classified gold spans: cells are accuracy (spans classified)."""
    rows = []
    for entry in summary.values():
        scores = entry.get("archetype_accuracy", {})
        matched = [scores[d] for d in domains if d in scores and scores[d]["matched"]]
        if not matched:
            continue
        cells = [f"{_percent(scores[d]['accuracy'])} ({scores[d]['matched']})" if d in scores else "-" for d in domains]
        overall = sum(s["correct"] for s in matched) / sum(s["matched"] for s in matched)
        rows.append(f"| {entry['title']} | " + " | ".join(cells) + f" | {_percent(overall)} |")
    intro = (
        "Of the gold spans the archetype stage classified, the share given their label's archetype "
        "(`samner_dspy/data/crossner_archetypes.json`); the last column pools every span."
    )
    return _section("Archetype accuracy on gold spans", intro, [header, rule, *rows]) if rows else []


def _section(title: str, intro: str, table: list[str]) -> list[str]:
    return ["", f"## {title}", "", intro, "", *table]


STAGE_TITLES = {"anchor": "anchor alone", "explorer": "explorer alone", "grounding": "spans kept by consensus"}


def _stage_section(summary: dict[str, Any], header: str, rule: str, domains: list[str]) -> list[str]:
    """Span precision / recall of each discovery stage, per row that traced it; the last column pools the
    domains' counts."""
    rows = []
    for entry in summary.values():
        for stage, by_domain in (entry.get("discovery_by_stage") or {}).items():
            cells = [
                f"{_percent(by_domain[d]['precision'])} / {_percent(by_domain[d]['recall'])}" if d in by_domain else "-"
                for d in domains
            ]
            pooled = sum((Scores(s["tp"], s["fp"], s["fn"]) for s in by_domain.values()), Scores())
            total = f"{_percent(pooled.precision)} / {_percent(pooled.recall)}"
            rows.append(f"| {entry['title']}: {STAGE_TITLES[stage]} | " + " | ".join(cells) + f" | {total} |")
    intro = (
        "Span precision / recall (labels ignored) of each extractor's own mentions, located as the program "
        "locates them, and of the spans consensus kept; the last column pools every domain."
    )
    return _section("Discovery by stage: span precision / recall", intro, [header, rule, *rows]) if rows else []


def rich_table(summary: dict[str, Any]) -> Table:
    domains = _domains(summary)
    table = Table(title="Strict micro-F1 (x100)")
    baseline = next(iter(_baselines(summary)), None)
    versus_title = f"vs {TITLES.get(baseline, baseline)}" if baseline else "vs baseline"
    columns = ["Method", *(DOMAIN_TITLES.get(d, d) for d in domains), "Avg.", "span Avg.", "label acc.", versus_title]
    for column in columns:
        table.add_column(column)
    for entry in summary.values():
        paired = entry.get("paired", {}).get(baseline) if baseline else None
        versus = "" if paired is None else f"{100 * paired['difference']:+.1f} ({paired['verdict']})"
        table.add_row(
            entry["title"],
            *_f1_row(entry, "strict", domains),
            f"{100 * entry['span_avg_f1']:.1f}",
            _percent(entry["label_accuracy_avg"]),
            versus,
        )
    return table


def write(
    summary: dict[str, Any],
    directory: Path,
    heading: str,
    command: str,
    results: dict[str, list[dict[str, Any]]] | None = None,
) -> tuple[Path, Path]:
    """report.md and report.json; given the scored records, also pr_curve.svg and its section in report.md."""
    directory.mkdir(parents=True, exist_ok=True)
    md_path = directory / "report.md"
    json_path = directory / "report.json"
    text = markdown(summary, heading, command)
    if results:
        text += "\n" + "\n".join(curve.write(results, directory, TITLES)) + "\n"
    md_path.write_text(text, encoding="utf-8")
    json_path.write_text(json.dumps({"command": command, "results": summary}, indent=2), encoding="utf-8")
    return md_path, json_path
