"""Scripted LMs for unit tests: dspy's DummyLM rendering answers the way each stage's adapter reads them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dspy.utils import DummyLM

from samner_dspy.adapters import IEPileAdapter, SamnerAdapter


class ScriptedLM(DummyLM):
    """Answers in order (or, given a dict, the answer whose key occurs in the prompt's last message);
    a plain string answer is sent verbatim, to script malformed replies."""

    def __init__(self, answers: list[dict[str, Any] | str] | dict[str, Any], iepile: bool = False) -> None:
        super().__init__(answers, adapter=IEPileAdapter() if iepile else SamnerAdapter())

    def _format_answer_fields(self, field_names_and_values: Any) -> str:
        if isinstance(field_names_and_values, str):
            return field_names_and_values
        return super()._format_answer_fields(field_names_and_values)


def stage_lms(
    anchor: list[Any] | None = None,
    explorer: list[Any] | None = None,
    archetype: list[Any] | None = None,
    calibrator: list[Any] | None = None,
) -> dict[str, ScriptedLM]:
    return {
        "anchor": ScriptedLM(anchor or [], iepile=True),
        "explorer": ScriptedLM(explorer or []),
        "archetype": ScriptedLM(archetype or []),
        "calibrator": ScriptedLM(calibrator or []),
    }


def trained_adapter_folders(root: Path, *names: str) -> Path:
    """Stand-ins for committed adapters under ``root/<embedded model>/<name>/`` (their config file only), for the
    evaluation rows that look them up; returns the model's folder."""
    from samner_dspy.serving.gguf_lora import CONFIG_FILE

    model = root / "qwen2.5-coder-0.5b"
    for name in names:
        (model / name).mkdir(parents=True)
        (model / name / CONFIG_FILE).write_text("{}")
    return model
