"""The program's own ``forward``, a step or a round at a time: recorded stages replayed, later ones deferred.

Both Ray back ends run :class:`SAMNER` itself on each row, with the program's stage modules (its direct
``dspy.Module`` attributes) wrapped: a stage this row ran before is answered from its recorded result (no
request), and a stage that cannot run yet defers the row (:class:`Deferred`), which travels on, pickled, to the
next actor pool or round. What "cannot run yet" means is the one difference between the back ends:

- endpoints (the actor steps of :mod:`samner_dspy.scale.ray_data`): the stage is not in this step's group of
  the program's ``STEPS``; the others run live, against the endpoints;
- an LLM processor (the request rounds of :mod:`samner_dspy.scale.rounds`): the stage reads an earlier stage's
  result while a request of its text is still unanswered; the others run on recording backends
  (:mod:`samner_dspy.scale.requests`), and a stage whose requests were all answered is recorded.

So the glue between the stages (consensus, grounding, entities, scores, thresholds, long texts' windows) is the
program's own code, and a long text's windows go on while one of them waits or fails.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import dspy
import pandas as pd
from dspy.primitives.base_module import BaseModule

from samner_dspy.config import STAGES, SamnerConfig
from samner_dspy.errors import describe
from samner_dspy.programs.document import Deferred
from samner_dspy.programs.samner import SAMNER
from samner_dspy.scale.requests import ASKED, Book, StageRequest, open_book
from samner_dspy.schema import Schema
from samner_dspy.types import Document


@dataclass(frozen=True)
class Spec:
    """What every actor rebuilds its program from (pickled to the workers; holds no API key)."""

    config: SamnerConfig
    schema: Schema
    options: Mapping[str, Any] = field(default_factory=dict)
    api_bases: tuple[str, ...] = ()
    threads: int = 8

    def programs(self) -> list[SAMNER]:
        """One program per endpoint replica: every self-hosted stage moved to that ``api_base``."""
        configs = [self.config]
        if self.api_bases:
            configs = [
                replace(self.config, **{s: replace(self.config.endpoint(s), api_base=base) for s in self._hosted()})
                for base in self.api_bases
            ]
        return [SAMNER(config, **self.options) for config in configs]

    def _hosted(self) -> list[str]:
        return [s for s in STAGES if self.config.endpoint(s).api_base]


@dataclass
class Row:
    """One input on its way through the steps or rounds."""

    key: dict[str, Any]
    text: str
    book: Book | None = None
    """The requests and replies of the request rounds (None on the endpoints' actor steps)."""
    tape: dict[tuple[str, str], Any] = field(default_factory=dict)
    """(stage, text it ran on) -> its result, or the :class:`_Failure` it raised."""
    error: str | None = None
    record: dict[str, Any] | None = None

    @property
    def row_id(self) -> str:
        return json.dumps(self.key, sort_keys=True)

    def pending(self) -> list[StageRequest]:
        return list(self.book.pending.values()) if self.book is not None else []


@dataclass(frozen=True)
class _Failure:
    """A stage's exception, kept by type name and message (exceptions do not all survive pickling)."""

    kind: str
    message: str

    def exception(self) -> Exception:
        return type(self.kind, (Exception,), {})(self.message)


@dataclass
class _Run:
    row: Row
    live: frozenset[str] | None


_RUN: contextvars.ContextVar[_Run] = contextvars.ContextVar("samner_replay")
_OWN_INPUTS = frozenset({"text", "schema"})
"""A stage called with nothing more reads no other stage's result (the extractors), so it never waits."""


class _Stage(BaseModule):
    """Stands in for one stage module of the program: replays, runs, or defers. A ``BaseModule`` (not a
    ``dspy.Module``: no call wrapping), so the program still finds the stage inside it to bind its backend."""

    def __init__(self, name: str, module: Any) -> None:
        self.name = name
        self.module = module

    def __call__(self, **inputs: Any) -> Any:
        run = _RUN.get()
        text, book = inputs["text"], run.row.book
        key = (self.name, text)
        if key in run.row.tape:
            result = run.row.tape[key]
            if isinstance(result, _Failure):
                raise result.exception()
            return result
        waits = book is not None and text in book.waiting and not set(inputs) <= _OWN_INPUTS
        if waits or (run.live is not None and self.name not in run.live):
            raise Deferred
        asked: list[str] = []
        token = ASKED.set(asked)
        try:
            result = self.module(**inputs)
        except Exception as exc:
            run.row.tape[key] = _Failure(type(exc).__name__, str(exc))
            raise
        finally:
            ASKED.reset(token)
        if asked and book is not None:  # answered with placeholders: run again once the replies are in
            book.waiting.add(text)
        else:
            run.row.tape[key] = result
        return result


def replaying(program: SAMNER) -> SAMNER:
    """The program with each of its stage modules wrapped by :class:`_Stage`."""
    for name, module in list(vars(program).items()):
        if isinstance(module, dspy.Module):
            setattr(program, name, _Stage(name, module))
    return program


def advance(program: SAMNER, row: Row, schema: Schema, live: frozenset[str] | None = None) -> Row:
    """Run the (replaying) program on the row as far as it goes; the row gets its record, its error, or waits."""
    if row.error is not None or row.record is not None:
        return row
    if row.book is not None:
        open_book(row.book)
    token = _RUN.set(_Run(row, live))
    try:
        with dspy.context(disable_history=True):
            result = program(row.text, schema)
        if not row.pending():  # else the last stages ran on placeholder replies: the row waits for the real ones
            row.record = Document.of(result, row.key).to_dict()
    except Deferred:
        pass
    except Exception as exc:  # one bad input must not end the job
        row.error = describe(exc)
    finally:
        _RUN.reset(token)
    return row


class Rotation:
    """Programs (one per endpoint replica) taken in turn, so rows spread over the replicas."""

    def __init__(self, programs: list[SAMNER]) -> None:
        self.programs = [replaying(program) for program in programs]
        self.turn = itertools.count()

    def next(self) -> SAMNER:
        return self.programs[next(self.turn) % len(self.programs)]


def to_rows(
    batch: pd.DataFrame, text_column: str, id_column: str | None, done: frozenset, recording: bool = False
) -> pd.DataFrame:
    """Input rows to pickled :class:`Row` states, leaving out those an earlier run has written."""
    key_column = id_column or "index"
    states = []
    for key, text in zip(batch[key_column], batch[text_column], strict=True):
        key = key.item() if hasattr(key, "item") else key
        if key not in done:
            states.append(pickle.dumps(Row({"id" if id_column else "index": key}, text, Book() if recording else None)))
    return pd.DataFrame({"state": states}, dtype=object)


def finished(rows: list[Row]) -> pd.DataFrame:
    """Records for the sink; a row still waiting after the last step or round is a failure that says so."""
    for row in rows:
        if row.record is None and row.error is None:
            row.error = f"still waiting for {len(row.pending()) or 'later'} stage requests after the last step"
    records = [row.record if row.error is None else {**row.key, "text": row.text, "error": row.error} for row in rows]
    return pd.DataFrame(
        {
            "record": [json.dumps(record, ensure_ascii=False) for record in records],
            "failed": [row.error is not None for row in rows],
        }
    )
