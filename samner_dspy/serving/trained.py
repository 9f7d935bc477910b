"""The LoRA adapters trained here for the embedded model, committed under ``adapters/<embedded model>/<stage>/`` with
their model cards: where they are, and a configuration with them on their stages."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from samner_dspy.errors import SamnerError
from samner_dspy.serving.embedded import model_spec
from samner_dspy.serving.gguf_lora import CONFIG_FILE

if TYPE_CHECKING:
    from samner_dspy.config import SamnerConfig

TRAINED_ADAPTERS = Path(__file__).resolve().parents[2] / "adapters"
"""The committed adapters, ``<embedded model>/<stage>/`` (a source checkout or an editable install has them)."""

DEFAULT_ADAPTERS: dict[str, str] = {"anchor": "anchor", "archetype": "archetype-mix"}
"""Stage -> the committed adapter the embedded model's default configuration gives it (:meth:`SamnerConfig.embedded`),
chosen on the dev decision sample: the trained anchor finds the spans, ``archetype-mix`` matches them to the labels
(README, "Evaluation on CrossNER"). The explorer's adapter is committed but not a default: it added nothing on dev."""


def adapter_folder(config: SamnerConfig, stage: str, name: str) -> Path:
    """Where the committed adapter ``name`` for ``stage``'s embedded model is (it may not exist)."""
    endpoint = config.endpoint(stage)
    return TRAINED_ADAPTERS / model_spec(endpoint.embedded_model(config.embedded_model)).name / name


def with_adapters(config: SamnerConfig, adapters: Mapping[str, str]) -> SamnerConfig:
    """``config`` with each named stage on its committed adapter; a stage not on the embedded model, or an adapter not
    committed for its model, is an error that names the folder."""
    stages = {}
    for stage, name in adapters.items():
        endpoint = config.endpoint(stage)
        folder = adapter_folder(config, stage, name)
        if not endpoint.is_embedded or not (folder / CONFIG_FILE).is_file():
            raise SamnerError(
                f"the trained {stage} adapter is for the embedded model and needs {folder} (see adapters/); "
                f"the {stage} stage runs {endpoint.model}"
            )
        stages[stage] = replace(endpoint, adapter=str(folder))
    return replace(config, **stages)


def with_default_adapters(config: SamnerConfig) -> SamnerConfig:
    """``config`` with :data:`DEFAULT_ADAPTERS` on their stages where every one of them is committed for the stage's
    embedded model; unchanged otherwise (another embedded model, or an install without ``adapters/``)."""
    if all((adapter_folder(config, stage, name) / CONFIG_FILE).is_file() for stage, name in DEFAULT_ADAPTERS.items()):
        return with_adapters(config, DEFAULT_ADAPTERS)
    return config


def runs_trained(config: SamnerConfig) -> bool:
    """Whether every stage of :data:`DEFAULT_ADAPTERS` runs an adapter on the embedded model (the ``trained``
    preset's condition)."""
    return all(config.endpoint(stage).is_embedded and config.endpoint(stage).adapter for stage in DEFAULT_ADAPTERS)
