"""The embedded model's default configuration runs the committed adapters (samner_dspy.serving.trained)."""

from __future__ import annotations

import json

from samner_dspy.config import SamnerConfig, resolve_config
from samner_dspy.programs.samner import preset_for
from samner_dspy.serving import trained
from samner_dspy.serving.gguf_lora import CONFIG_FILE, WEIGHTS_FILE
from tests.helpers import trained_adapter_folders


def test_the_embedded_default_puts_the_committed_adapters_on_their_stages(tmp_path, monkeypatch):
    model = trained_adapter_folders(tmp_path, "anchor", "archetype-mix", "explorer")
    monkeypatch.setattr(trained, "TRAINED_ADAPTERS", tmp_path)
    monkeypatch.delenv("SAMNER_CONFIG", raising=False)
    monkeypatch.delenv("SAMNER_EMBEDDED_MODEL", raising=False)
    config = SamnerConfig.embedded()
    assert config.anchor.adapter == str(model / "anchor")
    assert config.archetype.adapter == str(model / "archetype-mix")
    assert config.explorer.adapter is None, "the explorer's adapter is committed but not a default"
    assert config.calibrator.adapter is None
    assert resolve_config(None) == config
    assert resolve_config(None, trained=False) == SamnerConfig.embedded(trained=False)
    assert SamnerConfig.embedded(trained=False).anchor.adapter is None
    assert SamnerConfig.embedded("qwen2.5-coder-1.5b").anchor.adapter is None, "none committed for the 1.5B"


def test_the_environment_turns_a_default_adapter_off_and_the_preset_follows(tmp_path, monkeypatch):
    trained_adapter_folders(tmp_path, "anchor", "archetype-mix")
    monkeypatch.setattr(trained, "TRAINED_ADAPTERS", tmp_path)
    config = SamnerConfig.embedded()
    assert preset_for(config) == "trained"
    off = config.with_env({"SAMNER_ANCHOR_ADAPTER": ""})
    assert off.anchor.adapter is None and off.archetype.adapter == config.archetype.adapter
    assert preset_for(off) == "small", "an untrained anchor runs the untrained model's preset"


def test_defaults_apply_only_when_every_one_is_committed(tmp_path, monkeypatch):
    trained_adapter_folders(tmp_path, "anchor")
    monkeypatch.setattr(trained, "TRAINED_ADAPTERS", tmp_path)
    config = SamnerConfig.embedded()
    assert (config.anchor.adapter, config.archetype.adapter) == (None, None)
    assert preset_for(config) == "small"


def test_the_default_adapters_are_committed_for_the_embedded_model():
    """The real folders, as a checkout has them: PEFT LoRAs trained on the embedded model's export."""
    for stage, name in trained.DEFAULT_ADAPTERS.items():
        folder = trained.adapter_folder(SamnerConfig.embedded(trained=False), stage, name)
        settings = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        assert settings["peft_type"] == "LORA", folder
        assert "0.5b" in settings["base_model_name_or_path"].lower(), settings["base_model_name_or_path"]
        assert (folder / WEIGHTS_FILE).stat().st_size > 1_000_000
        assert (folder / "README.md").is_file(), f"{folder} has no model card"
