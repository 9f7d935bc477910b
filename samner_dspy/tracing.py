"""Per-stage records of a pipeline run, so a user sees which stage found, dropped or typed what."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class Dropped:
    item: str
    reason: str


@dataclass
class StageRecord:
    """What one stage did for one input: its model, inputs, outputs, drops, time, tokens, failures."""

    stage: str
    model: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    dropped: list[Dropped] = field(default_factory=list)
    repaired: list[Dropped] = field(default_factory=list)
    requests: int = 0
    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    raw_reply: str | None = None

    def drop(self, item: str, reason: str) -> None:
        self.dropped.append(Dropped(item, reason))

    def repair(self, item: str, how: str) -> None:
        self.repaired.append(Dropped(item, how))

    def fail(self, error: str, raw_reply: str | None = None) -> None:
        """Record a failed request without stopping the pipeline; several failures accumulate."""
        self.error = error if self.error is None else f"{self.error}; {error}"
        if raw_reply is not None:
            self.raw_reply = raw_reply if self.raw_reply is None else f"{self.raw_reply}\n---\n{raw_reply}"

    def add_usage(self, usage: dict[str, Any] | None) -> None:
        for counts in (usage or {}).values():
            self.prompt_tokens += int(counts.get("prompt_tokens") or 0)
            self.completion_tokens += int(counts.get("completion_tokens") or 0)

    def absorb(self, other: StageRecord) -> None:
        """Count another record's requests as this stage's (a helper stage asked on its behalf): its model, time,
        tokens, repairs and failures; its inputs and outputs stay its own."""
        self.model = other.model or self.model
        self.requests += other.requests
        self.latency_s += other.latency_s
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.repaired.extend(other.repaired)
        if other.error is not None:
            self.fail(other.error, other.raw_reply)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class WindowTrace:
    """One window of a long text: its offsets in the text, and its own trace or the error that stopped it."""

    start: int
    end: int
    trace: Trace | None = None
    error: str | None = None


def window_cores(bounds: Sequence[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    """The core of each window ``(start, end)`` of a text of ``length`` characters: from halfway into its overlap
    with the previous window to halfway into the next. The cores tile the text; a long text's entity is kept from
    the window whose core holds its midpoint, and its details are read from that window's trace."""
    cores = []
    for i, (start, end) in enumerate(bounds):
        core_start = 0 if i == 0 else (start + bounds[i - 1][1]) // 2
        core_end = length if i == len(bounds) - 1 else (end + bounds[i + 1][0]) // 2
        cores.append((core_start, core_end))
    return cores


@dataclass
class Trace:
    """The ordered stage records of one text; a long text's windows carry their own (``windows``)."""

    stages: list[StageRecord] = field(default_factory=list)
    windows: list[WindowTrace] = field(default_factory=list)

    def add(self, record: StageRecord) -> StageRecord:
        self.stages.append(record)
        return record

    def __getitem__(self, stage: str) -> StageRecord:
        for record in self.stages:
            if record.stage == stage:
                return record
        if self.windows and not self.stages:
            raise KeyError(
                f"no stage named {stage!r} here: this long text was annotated in {len(self.windows)} windows, "
                "each with its own stages (trace.windows[i].trace[stage])"
            )
        raise KeyError(f"no stage named {stage!r} in this trace; stages: {[r.stage for r in self.stages]}")

    def __contains__(self, stage: object) -> bool:
        return any(record.stage == stage for record in self.stages)

    def _window_traces(self) -> list[Trace]:
        return [window.trace for window in self.windows if window.trace is not None]

    @property
    def requests(self) -> int:
        return sum(record.requests for record in self.stages) + sum(t.requests for t in self._window_traces())

    @property
    def errors(self) -> list[str]:
        """Failed stages, and windows that failed (``window start:end: error``), in order."""
        errors = [f"{record.stage}: {record.error}" for record in self.stages if record.error]
        for window in self.windows:
            if window.error is not None:
                errors.append(f"window {window.start}:{window.end}: {window.error}")
            elif window.trace is not None:
                errors.extend(window.trace.errors)
        return errors

    def dropped_counts(self) -> dict[str, int]:
        """How many items each reason removed, across stages (``stage: reason`` -> count)."""
        counts: dict[str, int] = {}
        for record in self.stages:
            for dropped in record.dropped:
                key = f"{record.stage}: {dropped.reason}"
                counts[key] = counts.get(key, 0) + 1
        for trace in self._window_traces():
            for key, count in trace.dropped_counts().items():
                counts[key] = counts.get(key, 0) + count
        return counts

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"stages": [record.to_dict() for record in self.stages]}
        if self.windows:
            data["windows"] = [
                {"start": w.start, "end": w.end, "trace": w.trace.to_dict() if w.trace else None, "error": w.error}
                for w in self.windows
            ]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trace:
        stages = []
        known = {f.name for f in fields(StageRecord)}
        for raw in data.get("stages") or []:
            raw = {name: value for name, value in raw.items() if name in known}  # a field of another version
            raw["dropped"] = [Dropped(**d) for d in raw.get("dropped", [])]
            raw["repaired"] = [Dropped(**d) for d in raw.get("repaired", [])]
            stages.append(StageRecord(**raw))
        windows = [
            WindowTrace(w["start"], w["end"], cls.from_dict(w["trace"]) if w.get("trace") else None, w.get("error"))
            for w in data.get("windows") or []
        ]
        return cls(stages, windows)
