"""samner-dspy: zero-shot NER by semantic archetype mediation, as a DSPy program.

>>> from samner_dspy import SAMNER, Schema
>>> result = SAMNER()("Geoffrey Hinton works on deep learning.", Schema.from_name("crossner:ai"))
>>> [(e.text, e.label, e.start, e.end) for e in result.entities]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from samner_dspy.config import CachePolicy, Endpoint, SamnerConfig
from samner_dspy.errors import (
    ConfigError,
    DataFileError,
    EmbeddedModelError,
    EndpointRequestError,
    EndpointUnreachableError,
    InputTextError,
    SamnerError,
    SchemaError,
)
from samner_dspy.schema import Schema
from samner_dspy.tracing import StageRecord, Trace
from samner_dspy.types import Entity

if TYPE_CHECKING:
    from samner_dspy.programs import SAMNER

__all__ = [
    "SAMNER",
    "CachePolicy",
    "ConfigError",
    "DataFileError",
    "EmbeddedModelError",
    "Endpoint",
    "EndpointRequestError",
    "EndpointUnreachableError",
    "Entity",
    "InputTextError",
    "SamnerConfig",
    "SamnerError",
    "Schema",
    "SchemaError",
    "StageRecord",
    "Trace",
]


def __getattr__(name: str) -> Any:
    # The program imports the signatures, which import this package: load it on first use, not here.
    if name == "SAMNER":
        from samner_dspy.programs import SAMNER

        return SAMNER
    raise AttributeError(f"module 'samner_dspy' has no attribute {name!r}")
