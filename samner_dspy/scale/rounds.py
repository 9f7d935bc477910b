"""The corpus through the stages in request rounds, each answered by a Ray Data LLM processor.

    annotate_corpus("corpus.jsonl", "out/", "crossner:music", "samner.toml",
                    llm=VllmEngine("meta-llama/Meta-Llama-3-8B-Instruct", {"anchor": ..., "explorer": ..., ...}))

A round is three Ray Data operations: every row runs the program's own ``forward`` as far as its replies
go, recording the requests of the next stage (:mod:`samner_dspy.scale.requests`); the requests, one row each,
go through the processor (vLLM engines loading the base model and the LoRAs in their workers, or HTTP);
the replies are grouped back onto their rows. Rounds go on until no row asks anything more: discovery (anchor
and explorer together), verification with ``ccr="verify"``, mediation and calibration are one round each, and
the pass that asks nothing assembles the records exactly as the local program does (:mod:`.replay`).

Each round waits for all of its rows (the regrouping is a shuffle): the processor sees the whole round's
requests at once, which is what offline GPU batching wants; rows in flight live in Ray's object store, which
spills to disk. Run a very large corpus as several inputs (or input folders) so each job stays a few hours.
"""

from __future__ import annotations

import json
import pickle
from typing import Any

import pandas as pd
import ray

from samner_dspy.programs.samner import SAMNER
from samner_dspy.scale.processors import LLMProcessor
from samner_dspy.scale.replay import Row, Spec, advance, finished, replaying
from samner_dspy.scale.requests import StageReply, recording_backends

MAX_ROUNDS = 16
"""A bound on rounds, well above the four the stages take, so a row that keeps asking fails instead of looping."""


class _Advance:
    """A Ray Data callable class: each row's program runs as far as its replies go, recording what it asks next."""

    def __init__(self, spec: Spec, answered_by: str) -> None:
        self.spec = spec
        recording = recording_backends(spec.config, answered_by)
        self.program = replaying(SAMNER(spec.config, **spec.options).use_backends(recording))

    def advance(self, row: Row) -> Row:
        return advance(self.program, row, self.spec.schema)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        rows = [self.advance(pickle.loads(state)) for state in batch["state"]]
        return pd.DataFrame({"row_id": [row.row_id for row in rows], "state": [pickle.dumps(row) for row in rows]})


def _requests(row: dict[str, Any]) -> list[dict[str, Any]]:
    state: Row = pickle.loads(row["state"])
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
    """One row and the replies to its requests: the replies go into the book that asked for them."""
    states = [state for state in group["state"] if state]
    row: Row = pickle.loads(states[0])
    for key, reply in zip(group["key"], group["reply"], strict=True):
        if key and key in row.book.pending:
            row.book.replies[key] = StageReply(**json.loads(reply))
    return pd.DataFrame({"row_id": [row.row_id], "state": [pickle.dumps(row)]})


def _finish(batch: pd.DataFrame) -> pd.DataFrame:
    return finished([pickle.loads(state) for state in batch["state"]])


def request_rounds(
    rows: ray.data.Dataset, spec: Spec, llm: LLMProcessor, workers: int, batch_size: int, num_cpus: float
) -> ray.data.Dataset:
    """Rows (pickled :class:`Row` states in a ``state`` column) to records, in request rounds."""
    advance_step = {
        "fn_constructor_args": (spec, llm.name),
        "batch_format": "pandas",
        "batch_size": batch_size,
        "compute": ray.data.ActorPoolStrategy(size=workers),
        "num_cpus": num_cpus,
    }
    for _ in range(MAX_ROUNDS):
        advanced = rows.map_batches(_Advance, **advance_step).materialize()
        requests = advanced.flat_map(_requests).materialize()
        if requests.count() == 0:
            break
        replies = llm.apply(requests).map(_as_reply)
        rows = (
            advanced.map(_as_state)
            .union(replies)
            .groupby("row_id", num_partitions=max(1, workers))
            .map_groups(_absorb, batch_format="pandas")
        )
    return advanced.map_batches(_finish, batch_format="pandas")
