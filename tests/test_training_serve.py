"""``samner serve``: adapter checks, the vLLM command, and a configuration the program loads."""

from __future__ import annotations

import importlib.util
import json
import shlex
from pathlib import Path

import pytest

from samner_dspy import SAMNER
from samner_dspy.cli import main
from samner_dspy.config import SamnerConfig
from samner_dspy.serving.hardware import fast_dtype
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


@pytest.fixture
def cuda_build(monkeypatch):
    monkeypatch.setattr("samner_dspy.training.serve.vllm_build", lambda: "cuda")


def exec_command(printed: str) -> list[str]:
    (exec_line,) = [line for line in printed.splitlines() if line.startswith("exec ")]
    return shlex.split(exec_line)[1:]


def test_dry_run_prints_the_vllm_command_and_a_configuration_the_program_loads(adapters, tmp_path, capsys, cuda_build):
    assert main(serve_args(adapters, "--dry-run", "--port", "8100", "--", "--enforce-eager")) == 0
    printed = capsys.readouterr().out
    command_part, toml_part = printed.split("# samner.toml")
    command = exec_command(command_part)
    assert command[1:5] == ["-m", "vllm.entrypoints.openai.api_server", "--model", BASE]
    assert command[command.index("--served-model-name") + 1] == BASE
    modules = command.index("--lora-modules")
    assert command[modules + 1 : modules + 4] == [f"{name}={path}" for name, path in adapters.items()]
    assert "--enable-lora" in command and command[-1] == "--enforce-eager"
    assert command[command.index("--max-lora-rank") + 1] == "16", "the anchor's rank 16 sizes the server"
    assert command[command.index("--max-loras") + 1] == "3", "all three LoRAs in one batch"
    assert command[command.index("--port") + 1] == "8100"
    assert "--dtype" not in command and "VLLM_CPU_KVCACHE_SPACE" not in command_part
    config_file = tmp_path / "samner.toml"
    config_file.write_text(toml_part.split("\n", 1)[1])
    assert SamnerConfig.from_toml(config_file) == SamnerConfig.vllm("http://127.0.0.1:8100/v1", BASE)
    program = SAMNER(str(config_file))
    assert program.config.explorer.model == "hosted_vllm/explorer"
    assert program.config.calibrator.model == f"hosted_vllm/{BASE}"
    assert program.config.anchor.api_base == "http://127.0.0.1:8100/v1"


def test_the_cpu_build_gets_bf16_a_context_length_and_kv_cache_memory(adapters, monkeypatch, tmp_path):
    monkeypatch.setattr("samner_dspy.training.serve.vllm_build", lambda: "cpu")
    local_base = tmp_path / "qwen2.5-coder-0.5b"
    local_base.mkdir()
    for name in ("explorer", "archetype"):
        adapters[name] = str(adapter(tmp_path / f"q-{name}", base=str(local_base)))
    served = plan(
        adapters["explorer"], adapters["archetype"], anchor="base", base_model=str(local_base), kv_cache_gib=3
    )
    assert served.env == {"VLLM_CPU_KVCACHE_SPACE": "3"} and served.build == "cpu"
    assert served.command[served.command.index("--dtype") + 1] == fast_dtype()
    assert served.command[served.command.index("--max-model-len") + 1] == "4096"
    assert served.command[served.command.index("--served-model-name") + 1] == "qwen2.5-coder-0.5b", "a folder's name"
    assert served.models == ("qwen2.5-coder-0.5b", "explorer", "archetype")
    assert served.script().splitlines()[-1].startswith("exec env VLLM_CPU_KVCACHE_SPACE=3 ")
    assert 'model = "hosted_vllm/qwen2.5-coder-0.5b"' in served.config_toml.split("[stages.anchor]")[1].split("[")[0]


def test_dry_run_with_no_options_prints_the_command_and_says_what_is_missing(tmp_path, monkeypatch, capsys, cuda_build):
    """A new user who has trained nothing and downloaded nothing still sees what would run, and why it can't yet."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    assert main(["serve", "--dry-run"]) == 0
    captured = capsys.readouterr()
    command = exec_command(captured.out)
    modules = command.index("--lora-modules")
    assert command[modules + 1 : modules + 4] == [
        "anchor=zjunlp/llama3-8b-iepile-lora",
        "explorer=adapters/explorer",
        "archetype=adapters/archetype",
    ]
    assert "anchor adapter zjunlp/llama3-8b-iepile-lora is not in the local Hugging Face cache" in captured.err
    assert "vLLM downloads it when it starts" in captured.err
    assert "explorer adapter folder adapters/explorer does not exist (`samner train explorer` writes it)" in (
        captured.err
    )
    assert main(["serve"]) == 2, "without --dry-run the missing folders are an error"
    assert "explorer adapter folder adapters/explorer does not exist" in capsys.readouterr().err


def test_dry_run_writes_nothing(adapters, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(serve_args(adapters, "--dry-run")) == 0
    assert not (tmp_path / "serve").exists()


def test_an_adapter_trained_on_another_base_model_is_refused_with_both_names(adapters, tmp_path, capsys):
    adapters["explorer"] = str(adapter(tmp_path / "qwen", base="Qwen/Qwen2.5-7B-Instruct"))
    assert main(serve_args(adapters, "--output-dir", str(tmp_path / "out"))) == 2, "refused before vLLM starts"
    error = capsys.readouterr().err
    assert "explorer adapter" in error and "Qwen/Qwen2.5-7B-Instruct" in error and BASE in error
    assert not (tmp_path / "out").exists()
    assert main(serve_args(adapters, "--dry-run")) == 0, "a dry run prints the command and the problem"
    assert "warning: vLLM would refuse this command:\n  - the explorer adapter" in capsys.readouterr().err
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
    assert main(serve_args(adapters, "--max-lora-rank", "8")) == 2
    error = capsys.readouterr().err
    assert "the anchor adapter has rank 16, above --max-lora-rank 8" in error
    assert main(serve_args(adapters, "--max-lora-rank", "12")) == 2
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
    """The anchor is a hub id: it is read from the hub cache (layout of huggingface_hub), or left to vLLM."""
    require(importlib.util.find_spec("huggingface_hub") is not None, "huggingface_hub (with datasets)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = str(tmp_path / "hub")
    missing = plan(adapters["explorer"], adapters["archetype"], hub_cache=cache)
    assert "anchor=zjunlp/llama3-8b-iepile-lora" in missing.command, "left for vLLM to download"
    assert [a.name for a in missing.adapters] == ["explorer", "archetype"], "only the local ones were checked"
    assert any("not in the local Hugging Face cache" in warning for warning in missing.warnings)
    assert missing.command[missing.command.index("--max-lora-rank") + 1] == "64", "room for an unread rank"
    repo = tmp_path / "hub" / "models--zjunlp--llama3-8b-iepile-lora"
    commit = "0123456789abcdef0123456789abcdef01234567"
    adapter(repo / "snapshots" / commit, base="/data/Meta-Llama-3-8B-Instruct", rank=16)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    served = plan(adapters["explorer"], adapters["archetype"], hub_cache=cache)
    assert served.adapters[0].path == repo / "snapshots" / commit
    assert f"anchor={repo / 'snapshots' / commit}" in served.command
