"""Figures for the reliability tests' closing note, gathered as they run and printed after the session."""

from __future__ import annotations

import threading

FIGURES: dict[str, float] = {"inputs tried": 0, "faults injected": 0, "items lost": 0, "slowest recovery (s)": 0.0}
_LOCK = threading.Lock()


def count(inputs: int = 0, faults: int = 0, lost: int = 0) -> None:
    with _LOCK:
        FIGURES["inputs tried"] += inputs
        FIGURES["faults injected"] += faults
        FIGURES["items lost"] += lost


def recovered_in(seconds: float) -> None:
    with _LOCK:
        FIGURES["slowest recovery (s)"] = max(FIGURES["slowest recovery (s)"], round(seconds, 2))


def summary() -> str | None:
    if not FIGURES["inputs tried"]:
        return None
    return ", ".join(f"{name}: {value:g}" for name, value in FIGURES.items())
