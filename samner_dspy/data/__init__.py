"""The JSON files shipped with the package (archetypes, schemas, projection tables) and their one loader."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


@cache
def load_data(name: str) -> Any:
    """Parsed content of ``samner_dspy/data/<name>.json``; cached because it never changes at run time."""
    with resources.files("samner_dspy").joinpath("data", f"{name}.json").open(encoding="utf-8") as handle:
        return json.load(handle)
