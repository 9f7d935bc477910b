"""The corpus through the stages in request rounds, each answered by a Ray Data LLM processor.

    annotate_corpus("corpus.jsonl", "out/", "crossner:music", "samner.toml",
                    llm=VllmEngine("meta-llama/Meta-Llama-3-8B-Instruct", {"anchor": ..., "explorer": ..., ...}))

A round is three Ray Data operations: every row runs the program's own ``forward`` as far as its replies
go, recording the requests of the next stage (:mod:`samner_dspy.scale.requests`); the requests, one row each,
go through the processor (vLLM engines loading the base model and the LoRAs in their GPU workers, or HTTP);
the replies are grouped back onto their rows. Discovery (anchor and explorer together), verification with
``ccr="verify"``, mediation and calibration are one round each, so a job is three or four rounds and a last
pass that assembles the records exactly as the local program does.

Each round waits for all of its rows (the regrouping is a shuffle): the processor sees the whole round's
requests at once, which is what offline GPU batching wants; rows in flight live in Ray's object store, which
spills to disk. Run a very large corpus as several inputs (or input folders) so each job stays a few hours.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dspy
import pandas as pd
import ray

from samner_dspy.programs.document import annotate_document, windows
from samner_dspy.programs.program import check_text
from samner_dspy.programs.samner import SAMNER
from samner_dspy.records import result_record
from samner_dspy.scale.processors import LLMProcessor
from samner_dspy.scale.requests import Book, StageReply, StageRequest, current_book, open_book, recording_backends

if TYPE_CHECKING:
    from samner_dspy.scale.ray_data import Spec

GATED = ("consensus", "archetype", "calibrator", "direct")
"""The stages that read an earlier stage's replies: they wait while any request of the text is unanswered."""


class _Waiting(BaseException):
    """The text waits for replies; a BaseException so no stage or batch catches it."""


class _Gated:
    """Stands in for a stage module: runs it only when every request so far has its reply."""

    def __init__(self, module: Any) -> None:
        self.module = module

    def __call__(self, **inputs: Any) -> Any:
        if current_book().pending:
            raise _Waiting
        return self.module(**inputs)


def rounds_needed(options: dict[str, Any]) -> int:
    """Discovery, verification with ``ccr="verify"``, then direct typing, or mediation and calibration."""
    return 1 + (options.get("ccr") == "verify") + (1 if options.get("calibration") == "off" else 2)


@dataclass
class RoundRow:
    key: dict[str, Any]
    text: str
    parts: list[str] = field(default_factory=list)
    """The texts the program runs on: the text, or its windows."""
    books: dict[str, Book] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    """Window -> the error that stopped it (the document goes on without it)."""
    error: str | None = None
    record: dict[str, Any] | None = None

    @property
    def row_id(self) -> str:
        return json.dumps(self.key, sort_keys=True)

    def pending(self) -> list[StageRequest]:
        """The requests this row waits for (a failed window's are not sent)."""
        waiting = []
        for part, book in self.books.items():
            if part not in self.failed:
                waiting.extend(book.pending.values())
        return waiting


def _failure(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class _Advance:
    """A Ray Data callable class: each row's program runs as far as its replies go, recording what it asks next."""

    def __init__(self, spec: Spec, answered_by: str) -> None:
        self.spec = spec
        self.program = SAMNER(spec.config, **spec.options).use_backends(recording_backends(spec.config, answered_by))
        for name in GATED:
            setattr(self.program, name, _Gated(getattr(self.program, name)))

    def _run(self, part: str, book: Book) -> Any:
        """The program on one text with its book; None while it waits for replies."""
        token = open_book(book)
        try:
            result = self.program(part, self.spec.schema)
        except _Waiting:
            return None
        finally:
            token.var.reset(token)
        return None if book.pending else result

    def advance(self, row: RoundRow) -> RoundRow:
        if row.error is not None or row.record is not None:
            return row
        spec = self.spec
        try:
            if not row.parts:
                text = check_text(row.text)
                row.parts = [text]
                if spec.max_chars:
                    row.parts = [text[w.start : w.end] for w in windows(text, spec.max_chars, spec.overlap)]
            if not spec.max_chars:
                result = self._run(row.parts[0], row.books.setdefault(row.parts[0], Book()))
                if result is not None:
                    row.record = result_record(row.key, row.text, result)
                return row
            for part in dict.fromkeys(row.parts):
                if part.strip() and part not in row.failed:
                    try:
                        self._run(part, row.books.setdefault(part, Book()))
                    except Exception as exc:  # one window fails, the document goes on
                        row.failed[part] = _failure(exc)
            if not row.pending():  # every window answered: assemble exactly as local batches do

                def replayed(part: str) -> Any:
                    return self._run(part, row.books.setdefault(part, Book()))

                document = annotate_document(replayed, row.text, spec.max_chars, spec.overlap)
                row.record = result_record(row.key, row.text, document)
        except Exception as exc:  # one bad input must not end the job
            row.error = _failure(exc)
        return row

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        with dspy.context(disable_history=True):
            rows = [self.advance(pickle.loads(state)) for state in batch["state"]]
        return pd.DataFrame({"row_id": [row.row_id for row in rows], "state": [pickle.dumps(row) for row in rows]})


def _requests(row: dict[str, Any]) -> list[dict[str, Any]]:
    state: RoundRow = pickle.loads(row["state"])
    return [
        {"row_id": state.row_id, "key": request.key, "request": json.dumps(request.__dict__)}
        for request in state.pending()
    ]


def _as_reply(row: dict[str, Any]) -> dict[str, Any]:
    reply = {name: row[name] for name in ("text", "prompt_tokens", "completion_tokens", "error")}
    return {"row_id": row["row_id"], "state": b"", "key": row["key"], "reply": json.dumps(reply)}


def _as_state(row: dict[str, Any]) -> dict[str, Any]:
    return {"row_id": row["row_id"], "state": row["state"], "key": "", "reply": ""}


def _absorb(group: pd.DataFrame) -> pd.DataFrame:
    """One row and the replies to its requests: the replies go into the books that asked for them."""
    states = [state for state in group["state"] if state]
    row: RoundRow = pickle.loads(states[0])
    replies = {
        key: StageReply(**json.loads(reply)) for key, reply in zip(group["key"], group["reply"], strict=True) if key
    }
    for book in row.books.values():
        for key in book.pending:
            if key in replies:
                book.replies[key] = replies[key]
    return pd.DataFrame({"row_id": [row.row_id], "state": [pickle.dumps(row)]})


def _finish(batch: pd.DataFrame) -> pd.DataFrame:
    """Records for the sink; a row still waiting after the planned rounds is a failure that says so."""
    records, failed = [], []
    for state in batch["state"]:
        row: RoundRow = pickle.loads(state)
        if row.record is None and row.error is None:
            row.error = f"still waiting for {len(row.pending())} requests after the planned rounds"
        record = row.record if row.error is None else {**row.key, "text": row.text, "error": row.error}
        records.append(json.dumps(record, ensure_ascii=False))
        failed.append(row.error is not None)
    return pd.DataFrame({"record": records, "failed": failed})


def request_rounds(
    rows: ray.data.Dataset, spec: Spec, llm: LLMProcessor, workers: int, batch_size: int, num_cpus: float
) -> ray.data.Dataset:
    """Rows (pickled :class:`RoundRow` states in a ``state`` column) to records, in request rounds."""
    advance = {
        "fn_constructor_args": (spec, llm.name),
        "batch_format": "pandas",
        "batch_size": batch_size,
        "compute": ray.data.ActorPoolStrategy(size=workers),
        "num_cpus": num_cpus,
    }
    for _ in range(rounds_needed(dict(spec.options))):
        advanced = rows.map_batches(_Advance, **advance).materialize()
        replies = llm.apply(advanced.flat_map(_requests)).map(_as_reply)
        rows = (
            advanced.map(_as_state)
            .union(replies)
            .groupby("row_id", num_partitions=max(1, workers))
            .map_groups(_absorb, batch_format="pandas")
        )
    return rows.map_batches(_Advance, **advance).map_batches(_finish, batch_format="pandas")
