"""Shared fixtures: an isolated dspy cache, CrossNER data from ../shared, and the embedded model's server."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# dspy's disk cache ignores api_base: tests never share one with the user or with each other's runs.
os.environ["DSPY_CACHEDIR"] = tempfile.mkdtemp(prefix="samner-test-dspy-cache-")

import pytest

atexit.register(shutil.rmtree, os.environ["DSPY_CACHEDIR"], ignore_errors=True)

REPO = Path(__file__).resolve().parents[1]
CROSSNER = REPO.parent / "shared" / "data" / "crossner"
IN_CI = os.environ.get("CI", "").lower() == "true"


def require(condition: bool, what: str) -> None:
    """Locally a missing model or tool skips its tests; in CI it fails them, so green means it ran."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI but missing")
    pytest.skip(f"{what} is missing")


@pytest.fixture(scope="session")
def crossner_dir() -> Path:
    require(CROSSNER.is_dir(), f"CrossNER data at {CROSSNER}")
    return CROSSNER


def _embedded_server(log_name: str, **options):
    """The embedded model behind a real OpenAI-compatible HTTP server on 127.0.0.1, stopped after its tests."""
    import importlib.util

    from samner_dspy.serving.embedded import EmbeddedServer, model_spec

    require(importlib.util.find_spec("llama_cpp") is not None, "llama-cpp-python (the 'local' extra)")
    require(
        all(importlib.util.find_spec(p) is not None for p in model_spec().chunk_packages),
        "the embedded model's chunk packages (the 'local' extra)",
    )
    server = EmbeddedServer(log_path=Path(tempfile.gettempdir()) / log_name, **options)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def embedded_server():
    yield from _embedded_server("samner-test-embedded-server.log")


@pytest.fixture(scope="session")
def whole_prompt_server():
    """An embedded server that evaluates every prompt whole, so two runs in another order answer alike."""
    yield from _embedded_server("samner-test-whole-prompt-server.log", reuse_prompts=False)


def pytest_terminal_summary(terminalreporter) -> None:
    from tests.figures import summary

    if line := summary():
        terminalreporter.write_line(f"reliability: {line}")


@pytest.fixture(scope="module")
def ray_session():
    """One small local Ray cluster per test module: 2 CPUs, a 200 MB object store, no dashboard."""
    import importlib.util

    require(importlib.util.find_spec("ray") is not None, "ray (the 'ray' extra)")
    import ray

    ray.init(
        num_cpus=2,
        object_store_memory=200 * 1024**2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def hf_base_model() -> Path:
    """The embedded model as a Hugging Face folder (``samner embedded export-hf``; reused once exported)."""
    import importlib.util

    from samner_dspy.serving.embedded import model_spec

    for name in ("torch", "transformers", "peft", "datasets", "gguf", "accelerate"):
        require(importlib.util.find_spec(name) is not None, f"{name} (the 'train' extra)")
    require(
        all(importlib.util.find_spec(p) is not None for p in model_spec().chunk_packages),
        "the embedded model's chunk packages (the 'local' extra)",
    )
    from samner_dspy.serving.hf_export import export_hf

    return export_hf().folder


@pytest.fixture(scope="session")
def served_adapters(hf_base_model, tmp_path_factory) -> dict[str, Path]:
    from tests.vllm_stack import train_served_adapters

    return train_served_adapters(hf_base_model, tmp_path_factory.mktemp("adapters"))
