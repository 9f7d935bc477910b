"""``samner serve``'s server lifecycle on a stand-in process (tests/fake_vllm.py): start, wait for the models,
print the configuration, stop on SIGTERM, and every way starting can fail, explained. The real vLLM server
runs in tests/test_vllm_real.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time

import httpx
import pytest

from samner_dspy.cli import main
from samner_dspy.config import SamnerConfig
from samner_dspy.serving import vllm_server
from samner_dspy.serving.embedded import free_port
from samner_dspy.serving.hardware import fast_dtype
from samner_dspy.serving.vllm_server import VllmError, VllmServer, metric_total, parse_metrics
from samner_dspy.training import serve
from tests.test_training_serve import adapter

FAKE = [sys.executable, "-m", "tests.fake_vllm"]


@pytest.fixture
def fake_vllm(monkeypatch):
    """``samner serve`` runs the stand-in instead of vLLM's entry point, as if vLLM were installed."""
    monkeypatch.setattr(serve, "ENTRYPOINT", ("-m", "tests.fake_vllm"))
    monkeypatch.setattr(vllm_server, "require_vllm", lambda: "cpu")
    monkeypatch.setattr(serve, "vllm_build", lambda: "cpu")


def fake_server(tmp_path, models=("base",), port=None, **env) -> VllmServer:
    port = port or free_port()
    command = [*FAKE, "--served-model-name", models[0], "--host", "127.0.0.1", "--port", str(port)]
    if len(models) > 1:
        command += ["--lora-modules", *(f"{m}=/x/{m}" for m in models[1:])]
    return VllmServer(command, models, port=port, env=env, log_path=tmp_path / "vllm.log")


def test_start_waits_until_every_model_is_listed_and_stop_ends_the_process(tmp_path, monkeypatch):
    monkeypatch.setattr(vllm_server, "require_vllm", lambda: "cpu")
    server = fake_server(tmp_path, ("base", "anchor", "explorer"))
    with server:
        assert server.listed_models() == ["base", "anchor", "explorer"]
        assert server.running()
    assert not server.running()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.api_base}/models", timeout=2)


def test_a_server_that_dies_while_starting_is_explained_with_its_log(tmp_path, monkeypatch):
    monkeypatch.setattr(vllm_server, "require_vllm", lambda: "cpu")
    with pytest.raises(VllmError, match=r"exited with code 1 while starting(.|\n)*exceeds --max-lora-rank 8"):
        fake_server(tmp_path, FAKE_VLLM_DIE="1").start(timeout_s=60)


def test_a_model_the_server_does_not_list_is_an_error_and_the_server_is_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(vllm_server, "require_vllm", lambda: "cpu")
    server = fake_server(tmp_path, ("base", "explorer"), FAKE_VLLM_OMIT="explorer")
    with pytest.raises(VllmError, match=r"does not list \['explorer'\] \(it lists \['base'\]\)"):
        server.start(timeout_s=60)
    assert not server.running()


def test_a_taken_port_is_refused_before_starting(tmp_path, monkeypatch):
    monkeypatch.setattr(vllm_server, "require_vllm", lambda: "cpu")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = fake_server(tmp_path, port=taken.getsockname()[1])
        with pytest.raises(VllmError, match=f"port {taken.getsockname()[1]} on 127.0.0.1 is taken"):
            server.start()
    assert not (tmp_path / "vllm.log").exists(), "nothing was started"


def test_without_vllm_installed_the_error_says_which_extra(monkeypatch, tmp_path):
    monkeypatch.setattr(vllm_server, "vllm_build", lambda: None)
    with pytest.raises(VllmError, match=r"vLLM is not installed here: pip install 'samner-dspy\[serve-cpu\]'"):
        fake_server(tmp_path).start()


def test_samner_serve_starts_prints_the_configuration_and_stops_on_sigterm(fake_vllm, tmp_path, monkeypatch, capsys):
    record = tmp_path / "argv.json"
    monkeypatch.setenv("FAKE_VLLM_ARGV", str(record))
    explorer, archetype = adapter(tmp_path / "explorer"), adapter(tmp_path / "archetype")
    port, out = free_port(), tmp_path / "deploy"

    serving = threading.Event()
    wait = VllmServer.wait

    def wait_and_say_so(self: VllmServer) -> int:
        serving.set()
        return wait(self)

    monkeypatch.setattr(VllmServer, "wait", wait_and_say_so)

    def terminate_once_up() -> None:
        if serving.wait(timeout=60):
            time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=terminate_once_up, daemon=True)
    killer.start()
    code = main(
        ["serve", "--explorer", str(explorer), "--archetype", str(archetype), "--anchor", "base",
         "--base-model", serve.DEFAULT_BASE_MODEL, "--port", str(port), "--output-dir", str(out)]
    )  # fmt: skip
    killer.join()
    captured = capsys.readouterr()
    assert code == 0 and "vLLM stopped" in captured.err
    assert f"vLLM is serving {serve.DEFAULT_BASE_MODEL}, explorer, archetype at http://127.0.0.1:{port}/v1" in (
        captured.out
    )
    printed_config = captured.out.split("# Written by `samner serve`", 1)[1]
    assert printed_config in (out / "samner.toml").read_text()
    config = SamnerConfig.from_toml(out / "samner.toml")
    assert config.anchor.model == f"hosted_vllm/{serve.DEFAULT_BASE_MODEL}", "'base': the anchor asks the base model"
    assert (config.explorer.model, config.archetype.model) == ("hosted_vllm/explorer", "hosted_vllm/archetype")
    argv = json.loads(record.read_text())
    assert argv[argv.index("--lora-modules") + 1 :][:2] == [f"explorer={explorer}", f"archetype={archetype}"]
    assert argv[argv.index("--dtype") + 1] == fast_dtype(), "the CPU build's defaults"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2)


def test_prometheus_text_is_read_by_name_and_labels():
    text = (
        "# HELP vllm:prefix_cache_hits_total hits\n"
        'vllm:prefix_cache_hits_total{engine="0",model_name="base"} 1408.0\n'
        'vllm:request_success_total{engine="0",finished_reason="stop",model_name="base"} 4.0\n'
        'vllm:request_success_total{engine="0",finished_reason="length",model_name="base"} 1.0\n'
        "process_cpu_seconds_total 3.5e+01\n"
    )
    samples = parse_metrics(text)
    assert metric_total(samples, "vllm:prefix_cache_hits_total") == 1408.0
    assert metric_total(samples, "vllm:request_success_total") == 5.0
    assert metric_total(samples, "vllm:request_success_total", finished_reason="length") == 1.0
    assert metric_total(samples, "process_cpu_seconds_total") == 35.0
