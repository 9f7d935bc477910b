"""Many inputs through one program: bounded concurrency, results in input order, memory that stays flat."""

from __future__ import annotations

import contextvars
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import dspy

from samner_dspy.errors import describe


@dataclass
class BatchItem:
    """One input's outcome: its prediction, or the exception that stopped it (the batch goes on).

    ``exception`` is the exception itself (its type, attributes and traceback, for callers that handle it);
    ``error`` its one-line description, as output files record it."""

    index: int
    text: str
    prediction: dspy.Prediction | None = None
    exception: Exception | None = None

    @property
    def error(self) -> str | None:
        return None if self.exception is None else describe(self.exception)

    @property
    def ok(self) -> bool:
        return self.exception is None


def ordered_map(
    work: Callable[[str], Any], texts: Iterable[str], concurrency: int, skip: Callable[[int], bool] | None = None
) -> Iterator[BatchItem]:
    """Run ``work`` on each text with at most ``concurrency`` in flight, yielding in input order.

    Inputs are pulled lazily and at most ``2 * concurrency`` results wait to be yielded, so a corpus of
    any size streams through in constant memory. An exception fails only its own item.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")

    def guarded(index: int, text: str) -> BatchItem:
        try:
            return BatchItem(index, text, prediction=work(text))
        except Exception as exc:  # one bad item must not end the batch
            return BatchItem(index, text, exception=exc)

    pending: deque[Future[BatchItem]] = deque()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for index, text in enumerate(texts):
            if skip is not None and skip(index):
                continue
            # A copy of the caller's context per item: dspy.context settings reach the worker threads.
            pending.append(pool.submit(contextvars.copy_context().run, guarded, index, text))
            while len(pending) >= 2 * concurrency:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
