"""``samner serve``: adapter checks, the vLLM command, and a configuration the program loads."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import stat
from pathlib import Path

import pytest

from samner_dspy import SAMNER
from samner_dspy.cli import main
from samner_dspy.config import SamnerConfig
from samner_dspy.training.serve import ServeError, plan, same_base_model
from tests.conftest import require

BASE = "meta-llama/Meta-Llama-3-8B-Instruct"


def adapter(folder: Path, base: str = BASE, rank: int = 8, weights: bool = True, **extra) -> Path:
    """A PEFT adapter folder as peft writes it (the weights' content is never read by the checks)."""
    folder.mkdir(parents=True)
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "base_model_name_or_path": base, **extra}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    if weights:
        (folder / "adapter_model.safetensors").write_bytes(b"")
    return folder


@pytest.fixture
def adapters(tmp_path):
    anchor = adapter(tmp_path / "anchor", base="/data/models/Llama-3-8B-Instruct", rank=16)
    return {
        "anchor": str(anchor),
        "explorer": str(adapter(tmp_path / "explorer")),
        "archetype": str(adapter(tmp_path / "archetype")),
    }


def serve_args(adapters: dict[str, str], *more: str) -> list[str]:
    return ["serve", *(f"--{name}={path}" for name, path in adapters.items()), *more]


def test_dry_run_prints_the_vllm_command_and_a_configuration_the_program_loads(adapters, tmp_path, capsys):
    assert main(serve_args(adapters, "--dry-run", "--port", "8100", "--", "--enforce-eager")) == 0
    printed = capsys.readouterr().out
    command_part, toml_part = printed.split("# samner.toml")
    (exec_line,) = [line for line in command_part.splitlines() if line.startswith("exec ")]
    command = shlex.split(exec_line)[1:]
    assert command[:3] == ["vllm", "serve", BASE]
    modules = command.index("--lora-modules")
    assert command[modules + 1 : modules + 4] == [f"{name}={path}" for name, path in adapters.items()]
    assert "--enable-lora" in command and command[-1] == "--enforce-eager"
    assert command[command.index("--max-lora-rank") + 1] == "16", "the anchor's rank 16 sizes the server"
    assert command[command.index("--max-loras") + 1] == "3", "all three LoRAs in one batch"
    assert command[command.index("--port") + 1] == "8100"
    config_file = tmp_path / "samner.toml"
    config_file.write_text(toml_part.split("\n", 1)[1])
    assert SamnerConfig.from_toml(config_file) == SamnerConfig.vllm("http://127.0.0.1:8100/v1", BASE)
    program = SAMNER(str(config_file))
    assert program.config.explorer.model == "hosted_vllm/explorer"
    assert program.config.calibrator.model == f"hosted_vllm/{BASE}"
    assert program.config.anchor.api_base == "http://127.0.0.1:8100/v1"


def test_dry_run_writes_nothing(adapters, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(serve_args(adapters, "--dry-run")) == 0
    assert not (tmp_path / "serve").exists()


def test_launch_writes_script_and_configuration_then_runs_vllm(adapters, tmp_path, monkeypatch, capsys):
    record = tmp_path / "argv.json"
    fake = tmp_path / "bin" / "vllm"
    fake.parent.mkdir()
    fake.write_text(
        f'#!/bin/sh\npython3 -c \'import json, sys; json.dump(sys.argv[1:], open("{record}", "w"))\' "$@"\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "deploy"
    assert main(serve_args(adapters, "--output-dir", str(out), "--tensor-parallel-size", "2", "--host", "0.0.0.0")) == 0
    argv = json.loads(record.read_text())
    assert argv[:2] == ["serve", BASE] and argv[argv.index("--tensor-parallel-size") + 1] == "2"
    assert shlex.split((out / "vllm-serve.sh").read_text().splitlines()[-1])[2:] == argv
    assert SamnerConfig.from_toml(out / "samner.toml") == SamnerConfig.vllm("http://localhost:8000/v1", BASE)


def test_launch_without_vllm_installed_explains(adapters, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(serve_args(adapters, "--output-dir", str(tmp_path / "d"))) == 2
    assert "vLLM is not installed" in capsys.readouterr().err


def test_an_adapter_trained_on_another_base_model_is_refused_with_both_names(adapters, tmp_path, capsys):
    adapters["explorer"] = str(adapter(tmp_path / "qwen", base="Qwen/Qwen2.5-7B-Instruct"))
    assert main(serve_args(adapters, "--dry-run")) == 2
    error = capsys.readouterr().err
    assert "explorer adapter" in error and "Qwen/Qwen2.5-7B-Instruct" in error and BASE in error
    assert main(serve_args(adapters, "--dry-run", "--skip-base-check")) == 0
    assert "warning: the explorer adapter" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("trained_on", "same"),
    [
        (BASE, True),
        ("/scratch/Meta-Llama-3-8B-Instruct/", True),
        ("/disk/llama-3-8b-instruct", True),
        ("meta-llama/Meta-Llama-3.1-8B-Instruct", False),
        ("meta-llama/Meta-Llama-3-8B", False),
    ],
)
def test_base_models_compare_by_name_not_folder(trained_on, same):
    assert same_base_model(trained_on, BASE) is same


def test_rank_above_max_lora_rank_is_refused(adapters, capsys):
    assert main(serve_args(adapters, "--dry-run", "--max-lora-rank", "8")) == 2
    error = capsys.readouterr().err
    assert "the anchor adapter has rank 16, above --max-lora-rank 8" in error
    assert main(serve_args(adapters, "--dry-run", "--max-lora-rank", "12")) == 2
    assert "is not one vLLM accepts" in capsys.readouterr().err


def test_rank_beyond_what_vllm_serves_is_refused(adapters, tmp_path):
    adapters["archetype"] = str(adapter(tmp_path / "huge", rank=1024))
    with pytest.raises(ServeError, match="above the largest rank vLLM serves"):
        plan(adapters["explorer"], adapters["archetype"], anchor=adapters["anchor"])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p, "adapter folder .* does not exist"),
        (lambda p: p.mkdir() or p, "has no adapter_config.json"),
        (lambda p: adapter(p, weights=False), "has no weights"),
        (lambda p: adapter(p, use_dora=True), "DoRA"),
        (lambda p: adapter(p, peft_type="IA3"), "vLLM serves only LoRA"),
        (lambda p: adapter(p, base_model_name_or_path=None), "does not say which base model"),
    ],
)
def test_broken_adapters_are_explained_before_vllm_starts(adapters, tmp_path, make, message):
    broken = make(tmp_path / "broken")
    with pytest.raises(ServeError, match=message):
        plan(str(broken), adapters["archetype"], anchor=adapters["anchor"])


def test_hub_adapters_resolve_from_the_local_hugging_face_cache(adapters, tmp_path, monkeypatch):
    """The anchor is a hub id: it is read from the hub cache (layout of huggingface_hub), or explained."""
    require(importlib.util.find_spec("huggingface_hub") is not None, "huggingface_hub (with datasets)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = str(tmp_path / "hub")
    with pytest.raises(
        ServeError,
        match=r"neither a folder here nor in the local Hugging Face cache.*hf download zjunlp/llama3-8b-iepile-lora",
    ):
        plan(adapters["explorer"], adapters["archetype"], hub_cache=cache)
    repo = tmp_path / "hub" / "models--zjunlp--llama3-8b-iepile-lora"
    commit = "0123456789abcdef0123456789abcdef01234567"
    adapter(repo / "snapshots" / commit, base="/data/Meta-Llama-3-8B-Instruct", rank=16)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    served = plan(adapters["explorer"], adapters["archetype"], hub_cache=cache)
    assert served.adapters[0].path == repo / "snapshots" / commit
    assert f"anchor={repo / 'snapshots' / commit}" in served.command
