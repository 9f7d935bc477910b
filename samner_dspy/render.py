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
