"""One self-contained HTML page of annotated texts, so results can be looked at offline, in any browser.

Everything the page shows is computed here (text segments, colours, entity details, stage tables) and embedded
as JSON in a ``<script type="application/json">`` block with ``<``, ``>`` and ``&`` escaped, so no text in the
data can close the block. The page's script only copies those strings into the DOM with ``textContent``: a
sentence holding ``<script>`` or an ``onerror=`` attribute is shown as text and never runs. No CDN, no fonts,
no requests: the file opens from disk with the network off.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from samner_dspy.errors import SamnerError
from samner_dspy.grounding import mention_key
from samner_dspy.tagging import occurrence_keys
from samner_dspy.tracing import window_cores
from samner_dspy.types import Span

PALETTE = (
    "#8dd3c7",
    "#ffffb3",
    "#bebada",
    "#fb8072",
    "#80b1d3",
    "#fdb462",
    "#b3de69",
    "#fccde5",
    "#d9d9d9",
    "#bc80bd",
    "#ccebc5",
    "#ffed6f",
)
"""ColorBrewer Set3: light enough for dark text on top; labels take them in sorted order."""
VERDICTS = {"ok": "correct", "fp": "false positive", "label": "wrong label", "fn": "missed (false negative)"}
"""What an evaluation's marks mean (set by :mod:`samner_dspy.evals.review`; the core only displays them)."""


def label_colours(labels: Iterable[str]) -> dict[str, str]:
    """A colour per label, by sorted label name: the same labels always get the same colours."""
    return {label: PALETTE[n % len(PALETTE)] for n, label in enumerate(sorted(set(labels)))}


# --- what each piece of the page says --------------------------------------------------------------------------


def segments(text: str, spans: Sequence[tuple[int, int]]) -> list[list[dict[str, Any]]]:
    """``text`` cut into rows of plain and marked pieces: ``{"t": piece}`` or ``{"t": piece, "m": n}`` for
    ``spans[n]``. Overlapping spans go to further rows (the pipeline's own never overlap), so every span
    is marked exactly once, and the offsets are Python's: the browser never counts characters itself."""
    rows: list[list[dict[str, Any]]] = []
    pending = sorted(range(len(spans)), key=lambda n: (spans[n][0], -spans[n][1]))
    while pending:
        row: list[dict[str, Any]] = []
        cursor, left = 0, []
        for n in pending:
            start, end = spans[n]
            if start < cursor:
                left.append(n)
                continue
            if start > cursor:
                row.append({"t": text[cursor:start]})
            row.append({"t": text[start:end], "m": n})
            cursor = end
        if cursor < len(text):
            row.append({"t": text[cursor:]})
        rows.append(row)
        pending = left
    return rows or [[{"t": text}]]


def _stage(trace: Mapping[str, Any] | None, name: str) -> Mapping[str, Any] | None:
    for stage in (trace or {}).get("stages") or []:
        if isinstance(stage, Mapping) and stage.get("stage") == name:
            return stage
    return None


def _recorded(trace: Mapping[str, Any] | None, output: str, entity: Mapping[str, Any]) -> Any:
    """What the consensus stage recorded for this mention under ``output`` (``decisions``, ``evidence``)."""
    values = ((_stage(trace, "consensus") or {}).get("outputs") or {}).get(output) or {}
    wanted = mention_key(str(entity.get("text", "")))
    return next((value for surface, value in values.items() if mention_key(surface) == wanted), None)


def _decision(entity: Mapping[str, Any], trace: Mapping[str, Any] | None) -> str:
    """Why consensus kept this mention, as the consensus stage recorded its decision."""
    if _stage(trace, "consensus") is None:
        return "no consensus stage (single extractor prompt)" if trace else "no trace"
    decision = _recorded(trace, "decisions", entity)
    return f"kept: {decision}" if decision else "kept (recorded without its reason)"


def _key(entity: Mapping[str, Any], trace: Mapping[str, Any] | None, offset: int) -> str:
    """The name the stages gave this occurrence (``Washington (2)`` for a repeat), from the grounded spans."""
    text = str(entity.get("text", ""))
    spans = ((_stage(trace, "grounding") or {}).get("outputs") or {}).get("spans") or []
    located = [Span(s[0], s[1], s[2]) for s in spans if isinstance(s, list | tuple) and len(s) >= 3]
    where = (entity.get("start", 0) - offset, entity.get("end", 0) - offset)
    names = {(span.start, span.end): key for span, key in zip(located, occurrence_keys(located), strict=True)}
    return names.get(where, text)


def _probability(stage: Mapping[str, Any] | None, text: str) -> str:
    value = ((stage or {}).get("outputs") or {}).get("probabilities", {}).get(text)
    return f" (p = {value:.3f})" if isinstance(value, int | float) else ""


def _calibration(entity: Mapping[str, Any], trace: Mapping[str, Any] | None, text: str) -> str:
    """Which stage gave the label (to ``text``, the occurrence's key), and with what probability where the
    backend returned one. The entity says who typed it (``typed_by``); an older record without it is read from
    the trace."""
    typed_by = entity.get("typed_by")
    if typed_by == "anchor":
        return f"the anchor filed it under {entity.get('label')!r}; no typing request"
    if typed_by == "direct":
        return "typed by the single direct prompt"
    if typed_by == "person_role":
        return f"typed 'person', filed under the schema's person role {entity.get('label')!r} (person_role)"
    for name, what in (
        ("calibrator", "definition-guided calibration"),
        ("matcher", "the archetype classifier over the labels' definitions"),
        ("direct_typing", "direct typing"),
    ):
        stage = _stage(trace, name)
        if stage is not None and typed_by in (None, name):
            label = ((stage.get("outputs") or {}).get("labels") or {}).get(text, entity.get("label"))
            mode = (stage.get("inputs") or {}).get("mode")
            how = f"{what}, {mode} mode" if mode else what
            return f"{how} chose {label!r}{_probability(stage, text)}"
    if _stage(trace, "direct") is not None:
        return "typed by the single direct prompt"
    return "not in the trace"


def entity_details(entity: Mapping[str, Any], trace: Mapping[str, Any] | None, offset: int = 0) -> list[list[str]]:
    """The rows the details panel shows for one entity: ``[name, value]`` pairs, all plain strings. ``offset``
    is where the text ``trace`` ran on starts (a long text's window)."""
    key = _key(entity, trace, offset)
    sources = list(entity.get("sources") or [])
    score = entity.get("score")
    evidence = _recorded(trace, "evidence", entity)
    if isinstance(score, int | float):
        score_text = f"{score:.4f}"
    elif isinstance(evidence, int | float):
        score_text = f"{evidence:.2f} (evidence only; recorded without a score)"
    else:
        score_text = "not recorded"
    archetype = entity.get("archetype")
    rows = [
        ["text", str(entity.get("text", ""))],
        ["label", str(entity.get("label", ""))],
        ["offsets", f"{entity.get('start')}:{entity.get('end')}"],
        ["archetype", f"{archetype}{_probability(_stage(trace, 'archetype'), key)}"]
        if archetype
        else ["archetype", "none (no mediation stage)"],
        ["found by", ", ".join(sources) or "the direct prompt"],
        ["consensus", _decision(entity, trace)],
        ["alignment", str(entity.get("alignment_status") or "not recorded")],
        ["calibration", _calibration(entity, trace, key)],
        ["score", score_text],
    ]
    if entity.get("verdict"):
        verdict = VERDICTS.get(str(entity["verdict"]), str(entity["verdict"]))
        if entity.get("gold_label"):
            verdict += f" (gold: {entity['gold_label']})"
        rows.append(["evaluation", verdict])
    return rows


def _items(values: object) -> str:
    return "; ".join(f"{d.get('item')}: {d.get('reason')}" for d in values or [] if isinstance(d, Mapping))


def stage_rows(trace: Mapping[str, Any] | None) -> list[list[str]]:
    """One row per stage: stage, model, requests, latency, tokens, dropped and repaired (with reasons), error."""
    rows = []
    for stage in (trace or {}).get("stages") or []:
        if not isinstance(stage, Mapping):
            continue
        tokens = f"{stage.get('prompt_tokens', 0)} + {stage.get('completion_tokens', 0)}"
        rows.append(
            [
                str(stage.get("stage", "")),
                str(stage.get("model") or "-"),
                str(stage.get("requests", 0)),
                f"{float(stage.get('latency_s') or 0.0):.2f} s",
                tokens,
                _items(stage.get("dropped")) or "-",
                _items(stage.get("repaired")) or "-",
                str(stage.get("error") or "-"),
            ]
        )
    return rows


STAGE_HEADER = ["stage", "model", "requests", "latency", "tokens (prompt + completion)", "dropped", "repaired", "error"]


def _traces(record: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any] | None]]:
    """``(caption, trace)``: the text's own trace, or one per window of a long text."""
    trace = record.get("trace") or {}
    windows = [w for w in trace.get("windows") or [] if isinstance(w, Mapping)]
    own = [("", trace)] if trace.get("stages") or not windows else []
    return own + [(f"window {w.get('start')}:{w.get('end')}", w.get("trace")) for w in windows if w.get("trace")]


def _trace_of(entity: Mapping[str, Any], record: Mapping[str, Any]) -> tuple[Mapping[str, Any] | None, int]:
    """The trace that produced ``entity`` and where its text starts: for a long text, the window whose core holds
    the entity's midpoint (the one the merge kept it from, not the first that contains it); else the record's own."""
    trace = record.get("trace") or {}
    windows = [w for w in trace.get("windows") or [] if isinstance(w, Mapping)]
    if not windows:
        return trace or None, 0
    bounds = [(int(w.get("start", 0)), int(w.get("end", 0))) for w in windows]
    middle = (int(entity.get("start", 0)) + int(entity.get("end", 0))) // 2
    for window, (core_start, core_end) in zip(
        windows, window_cores(bounds, len(str(record.get("text", "")))), strict=True
    ):
        if core_start <= middle < core_end:
            return window.get("trace"), int(window.get("start", 0))
    return trace or None, 0


def _record_data(record: Mapping[str, Any], number: int) -> dict[str, Any]:
    text = record["text"]
    entities = [e for e in record.get("entities") or [] if isinstance(e, Mapping)]
    for entity in entities:
        start, end = entity.get("start"), entity.get("end")
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text)):
            raise SamnerError(f"record {number}: entity {entity.get('text')!r} has offsets outside the text")
    gold = [g for g in record.get("gold") or [] if isinstance(g, Mapping | list | tuple)]
    gold = [g if isinstance(g, Mapping) else {"start": g[0], "end": g[1], "label": g[2]} for g in gold]
    data: dict[str, Any] = {
        "n": number,
        "index": record.get("index", number),
        "key": str(record.get("key") or record.get("index", number)),
        "domain": str(record.get("domain") or ""),
        "rows": segments(text, [(e["start"], e["end"]) for e in entities]),
        "entities": [
            {
                "text": text[e["start"] : e["end"]],
                "label": str(e.get("label", "")),
                "verdict": str(e.get("verdict") or ""),
                "details": entity_details(e, *_trace_of(e, record)),
            }
            for e in entities
        ],
        "traces": [{"caption": caption, "rows": stage_rows(trace)} for caption, trace in _traces(record)],
        "errors": [
            f"window {w.get('start')}:{w.get('end')}: {w['error']}"
            for w in (record.get("trace") or {}).get("windows") or []
            if w.get("error")
        ],
    }
    if "gold" in record:
        data["gold"] = [
            {"text": text[g["start"] : g["end"]], "label": str(g["label"]), "verdict": str(g.get("verdict") or "")}
            for g in gold
        ]
        data["gold_rows"] = segments(text, [(g["start"], g["end"]) for g in gold])
    return data


def page_data(
    records: Iterable[Mapping[str, Any]], tables: Sequence[Mapping[str, Any]] = (), title: str = "samner view"
) -> dict[str, Any]:
    """Everything the page shows, as JSON-able data: records with their pieces, colours, filters, tables."""
    items = [_record_data(record, n) for n, record in enumerate(records)]
    labels = {e["label"] for item in items for e in item["entities"]}
    labels |= {g["label"] for item in items for g in item.get("gold", [])}
    return {
        "title": title,
        "colours": label_colours(labels),
        "labels": sorted(labels),
        "domains": sorted({item["domain"] for item in items if item["domain"]}),
        "evaluation": any("gold" in item for item in items),
        "verdicts": VERDICTS,
        "stage_header": STAGE_HEADER,
        "tables": [dict(t) for t in tables],
        "records": items,
    }


def _script_json(data: object) -> str:
    """JSON safe inside ``<script>``: no ``<``, ``>`` or ``&`` can end the block or start a comment."""
    text = json.dumps(data, ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028")):
        text = text.replace(char, escaped)
    return text.replace("\u2029", "\\u2029")


def render_html(
    records: Iterable[Mapping[str, Any]], tables: Sequence[Mapping[str, Any]] = (), title: str = "samner view"
) -> str:
    """The whole page: static markup, inline CSS and JS, and the data block; nothing from the data is markup."""
    return PAGE.replace("/*DATA*/", _script_json(page_data(records, tables, title)))


def write_html(
    records: Iterable[Mapping[str, Any]],
    path: str | Path,
    tables: Sequence[Mapping[str, Any]] = (),
    title: str = "samner view",
) -> Path:
    path = Path(path)
    path.write_text(render_html(records, tables, title), encoding="utf-8")
    return path


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; \
script-src 'unsafe-inline'; img-src data:">
<title>samner view</title>
<style>
body { font: 15px/1.5 system-ui, sans-serif; margin: 0; color: #222; background: #fafafa; }
header { position: sticky; top: 0; background: #fff; border-bottom: 1px solid #ddd; padding: 8px 16px; z-index: 2; }
header h1 { font-size: 17px; margin: 0 8px 0 0; display: inline; }
header label { margin-right: 12px; }
main { display: flex; gap: 16px; padding: 16px; align-items: flex-start; }
#records { flex: 1; min-width: 0; }
#panel { width: 360px; position: sticky; top: 64px; background: #fff; border: 1px solid #ddd; padding: 8px 12px; }
#panel table td:first-child { color: #666; padding-right: 8px; vertical-align: top; white-space: nowrap; }
section.record { background: #fff; border: 1px solid #e3e3e3; border-radius: 4px; padding: 8px 12px; margin: 0 0 12px; }
.meta { color: #777; font-size: 12px; }
p.sentence { margin: 4px 0; white-space: pre-wrap; overflow-wrap: anywhere; }
p.gold::before { content: "gold: "; color: #777; font-size: 12px; }
p.pred::before { content: "predicted: "; color: #777; font-size: 12px; }
mark { padding: 1px 2px; border-radius: 3px; cursor: pointer; color: #111; }
mark[data-label]::after { content: attr(data-label); font-size: 10px; margin-left: 3px; color: #444; }
mark.fp { outline: 2px dashed #c00; }
mark.label { outline: 2px dotted #e67e00; }
mark.fn { outline: 2px solid #c00; }
mark.selected { box-shadow: 0 0 0 4px #000; }
table { border-collapse: collapse; font-size: 12px; }
th, td { border-bottom: 1px solid #eee; padding: 2px 6px; text-align: left; vertical-align: top; }
details { margin-top: 4px; }
.tables { padding: 8px 16px 0; }
.tables table { font-size: 13px; margin-bottom: 8px; background: #fff; }
.legend mark { margin-left: 10px; font-size: 12px; background: #fff; cursor: default; }
.error { color: #a00; }
</style>
</head>
<body>
<header>
<h1>samner view</h1><span id="summary" class="meta"></span>
<div id="filters"></div>
</header>
<div class="tables" id="tables"></div>
<main><div id="records"></div><aside id="panel"><em>Click an entity to see how it was found.</em></aside></main>
<script type="application/json" id="samner-data">/*DATA*/</script>
<script>
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("samner-data").textContent);
  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }
  function table(header, rows) {
    const t = el("table");
    if (header) {
      const head = el("tr");
      header.forEach(function (h) { head.appendChild(el("th", h)); });
      t.appendChild(head);
    }
    rows.forEach(function (row) {
      const tr = el("tr");
      row.forEach(function (cell) { tr.appendChild(el("td", cell)); });
      t.appendChild(tr);
    });
    return t;
  }
  function colour(label) { return data.colours[label] || "#ddd"; }
  function verdict(item) { return item.verdict ? " (" + (data.verdicts[item.verdict] || item.verdict) + ")" : ""; }
  const panel = document.getElementById("panel");
  let selected = null;
  function select(mark, record) {
    if (selected) selected.classList.remove("selected");
    selected = mark;
    mark.classList.add("selected");
    const entity = record.entities[Number(mark.dataset.m)];
    panel.replaceChildren(el("h3", entity.text), table(null, entity.details));
    panel.dataset.selected = mark.dataset.id;
    mark.closest("section").querySelectorAll("details").forEach(function (d) { d.open = true; });
  }
  function sentence(rows, items, record, cls, kind) {
    const nodes = [];
    rows.forEach(function (row) {
      const p = el("p", null, "sentence " + cls);
      row.forEach(function (piece) {
        if (piece.m === undefined) { p.appendChild(document.createTextNode(piece.t)); return; }
        const item = items[piece.m];
        const mark = el("mark", piece.t, item.verdict || "");
        mark.style.background = colour(item.label);
        mark.dataset.label = item.label;
        mark.dataset.m = String(piece.m);
        mark.dataset.kind = kind;
        if (kind === "entity") {
          mark.dataset.id = record.n + "." + piece.m;
          mark.title = item.label + verdict(item);
          mark.addEventListener("click", function () { select(mark, record); });
        } else {
          mark.title = "gold: " + item.label + verdict(item);
        }
        p.appendChild(mark);
      });
      nodes.push(p);
    });
    return nodes;
  }
  const list = document.getElementById("records");
  const sections = [];
  data.records.forEach(function (record) {
    const section = el("section", null, "record");
    section.dataset.domain = record.domain;
    section.dataset.labels = JSON.stringify(record.entities.map(function (e) { return e.label; })
      .concat((record.gold || []).map(function (g) { return g.label; })));
    const wrong = record.entities.some(function (e) { return e.verdict && e.verdict !== "ok"; }) ||
      (record.gold || []).some(function (g) { return g.verdict && g.verdict !== "ok"; });
    section.dataset.wrong = wrong ? "1" : "0";
    section.appendChild(el("div", "#" + record.key + (record.domain ? " \u00b7 " + record.domain : "") +
      " \u00b7 " + record.entities.length + " entities", "meta"));
    sentence(record.rows, record.entities, record, data.evaluation ? "pred" : "", "entity")
      .forEach(function (p) { section.appendChild(p); });
    if (record.gold) {
      sentence(record.gold_rows, record.gold, record, "gold", "gold").forEach(function (p) { section.appendChild(p); });
    }
    record.errors.forEach(function (e) { section.appendChild(el("div", e, "error")); });
    record.traces.forEach(function (trace) {
      if (!trace.rows.length) { section.appendChild(el("div", "no stage trace recorded", "meta")); return; }
      const details = el("details");
      details.appendChild(el("summary", "stage trace" + (trace.caption ? " (" + trace.caption + ")" : "")));
      details.appendChild(table(data.stage_header, trace.rows));
      section.appendChild(details);
    });
    list.appendChild(section);
    sections.push(section);
  });
  const tables = document.getElementById("tables");
  data.tables.forEach(function (t) {
    tables.appendChild(el("h3", t.title));
    tables.appendChild(table(t.header, t.rows));
  });
  const filters = document.getElementById("filters");
  const state = { domain: "", label: "", wrong: false };
  function apply() {
    let shown = 0;
    sections.forEach(function (s) {
      const ok = (!state.domain || s.dataset.domain === state.domain) &&
        (!state.label || JSON.parse(s.dataset.labels).indexOf(state.label) >= 0) &&
        (!state.wrong || s.dataset.wrong === "1");
      s.hidden = !ok;
      if (ok) shown += 1;
    });
    document.getElementById("summary").textContent = shown + " of " + sections.length + " texts";
  }
  function chooser(name, values, key) {
    const label = el("label", name + " ");
    const box = el("select");
    box.id = "filter-" + key;
    box.appendChild(el("option", "all"));
    box.firstChild.value = "";
    values.forEach(function (v) { const o = el("option", v); o.value = v; box.appendChild(o); });
    box.addEventListener("change", function () { state[key] = box.value; apply(); });
    label.appendChild(box);
    filters.appendChild(label);
  }
  if (data.domains.length) chooser("domain", data.domains, "domain");
  chooser("label", data.labels, "label");
  if (data.evaluation) {
    const label = el("label");
    const box = el("input");
    box.type = "checkbox";
    box.id = "filter-wrong";
    box.addEventListener("change", function () { state.wrong = box.checked; apply(); });
    label.appendChild(box);
    label.appendChild(document.createTextNode(" only texts with mistakes"));
    filters.appendChild(label);
    const legend = el("span", null, "legend");
    [["fp", "false positive"], ["label", "wrong label"], ["fn", "missed (gold row)"]].forEach(function (v) {
      legend.appendChild(el("mark", v[1], v[0]));
    });
    filters.appendChild(legend);
  }
  apply();
  const wanted = new URLSearchParams(location.search || location.hash.slice(1)).get("select");
  if (wanted !== null) {
    const id = wanted.indexOf(".") >= 0 ? wanted : "0." + wanted;
    const mark = list.querySelector('mark[data-kind="entity"][data-id="' + CSS.escape(id) + '"]');
    if (mark) {
      const n = Number(id.split(".")[0]);
      select(mark, data.records.filter(function (r) { return r.n === n; })[0]);
    }
  }
}());
</script>
</body>
</html>
"""
