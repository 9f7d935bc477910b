"""Optional few-shot demos for small models, bootstrapped from a domain's train split by DSPy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dspy
from dspy.teleprompt import BootstrapFewShot

from samner_dspy.evals.metric import score
from samner_dspy.formats.labelled import Sentence
from samner_dspy.programs.program import ConfiguredProgram
from samner_dspy.schema import Schema


def examples(sentences: Sequence[Sentence], schema: Schema) -> list[dspy.Example]:
    return [
        dspy.Example(text=s.text, schema=schema, gold=[(e.start, e.end, e.label) for e in s.entities]).with_inputs(
            "text", "schema"
        )
        for s in sentences
    ]


def sentence_f1(example: dspy.Example, prediction: Any, trace: object = None) -> float | bool:
    """Strict F1 of one sentence; while bootstrapping, a run qualifies as a demo only if it is perfect."""
    f1 = score([example.gold], [[(e.start, e.end, e.label) for e in prediction.entities]]).f1
    return f1 == 1.0 if trace is not None else f1


def bootstrap(
    program: ConfiguredProgram, train: Sequence[Sentence], schema: Schema, demos: int, max_rounds: int = 1
) -> ConfiguredProgram:
    """A copy of ``program`` whose stage predictors carry up to ``demos`` demonstrations each.

    Demos are the program's own stage inputs and outputs on train sentences it got exactly right, so
    each stage learns from calls in its own format (IEPile's for the anchor, JSON for the others).
    """
    optimizer = BootstrapFewShot(
        metric=sentence_f1, max_bootstrapped_demos=demos, max_labeled_demos=0, max_rounds=max_rounds
    )
    return optimizer.compile(program, trainset=examples(train, schema))
