"""Terminal views of results with rich: the entities of a text and its stage trace."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from samner_dspy.tracing import Trace
from samner_dspy.types import Entity


def entities_table(entities: list[Entity]) -> Table:
    table = Table(title="Entities", show_lines=False)
    for column in ("text", "label", "archetype", "start", "end", "found by", "score"):
        table.add_column(column)
    for entity in entities:
        table.add_row(
            entity.text,
            entity.label,
            entity.archetype or "-",
            str(entity.start),
            str(entity.end),
            "+".join(entity.sources),
            "-" if entity.score is None else f"{entity.score:.2f}",
        )
    return table


def highlighted(text: str, entities: list[Entity]) -> Text:
    rendered = Text(text)
    for entity in entities:
        rendered.stylize("bold reverse", entity.start, entity.end)
    return rendered


def _summary(values: dict[str, object]) -> str:
    parts = []
    for key, value in values.items():
        shown = value if isinstance(value, str) else repr(value)
        parts.append(f"{key}: {shown if len(shown) <= 160 else shown[:157] + '...'}")
    return "\n".join(parts)


def trace_table(trace: Trace) -> Table:
    table = Table(title="Stage trace", show_lines=True)
    for column in ("stage", "model", "requests", "latency s", "tokens in/out", "output", "dropped / repaired / errors"):
        table.add_column(column, overflow="fold")
    for record in trace.stages:
        notes = [f"dropped {d.item!r}: {d.reason}" for d in record.dropped]
        notes += [f"repaired {r.item!r}: {r.reason}" for r in record.repaired]
        if record.error:
            notes.append(f"error: {record.error}")
        table.add_row(
            record.stage,
            record.model or "-",
            str(record.requests),
            f"{record.latency_s:.2f}",
            f"{record.prompt_tokens}/{record.completion_tokens}",
            _summary(record.outputs),
            "\n".join(notes) or "-",
        )
    return table


def _pieces(trace: Trace) -> list[tuple[str, Trace]]:
    """``(caption, trace)``: the text's own stages, then each window's (a long text's)."""
    pieces = [("", trace)] if trace.stages or not trace.windows else []
    return pieces + [(f"window {w.start}:{w.end}", w.trace) for w in trace.windows if w.trace is not None]


def trace_tables(trace: Trace) -> list[Table]:
    """One stage table for a text, or one per window of a long text (captioned with its offsets)."""
    tables = []
    for caption, piece in _pieces(trace):
        table = trace_table(piece)
        table.caption = caption or None
        tables.append(table)
    return tables


def stage_lines(trace: Trace) -> list[str]:
    """One line per stage: requests, latency, tokens, and how many items it dropped or repaired, or its error."""
    lines = []
    for caption, piece in _pieces(trace):
        prefix = f"{caption} " if caption else ""
        for record in piece.stages:
            line = (
                f"{prefix}{record.stage}: {record.requests} request(s), {record.latency_s:.2f} s, "
                f"{record.prompt_tokens}/{record.completion_tokens} tokens"
            )
            line += f", {len(record.dropped)} dropped" if record.dropped else ""
            line += f", {len(record.repaired)} repaired" if record.repaired else ""
            lines.append(line + (f", error: {record.error}" if record.error else ""))
    lines += [f"window {w.start}:{w.end} failed: {w.error}" for w in trace.windows if w.error is not None]
    return lines
