import socket

import pytest

from samner_dspy import SAMNER, ConfigError, Endpoint, EndpointUnreachableError, SamnerConfig
from samner_dspy.backends import build_lm, check_reachable, revision_key
from samner_dspy.config import CachePolicy, resolve_config


def test_default_is_one_vllm_server_with_the_three_loras_and_its_base_model():
    config = SamnerConfig()
    assert [config.endpoint(s).model for s in ("anchor", "explorer", "archetype")] == [
        "hosted_vllm/anchor",
        "hosted_vllm/explorer",
        "hosted_vllm/archetype",
    ]
    assert config.calibrator.model == "hosted_vllm/meta-llama/Meta-Llama-3-8B-Instruct"
    assert {config.endpoint(s).api_base for s in ("anchor", "calibrator")} == {"http://localhost:8000/v1"}
    assert config.cache == CachePolicy(enabled=False)


def test_swapping_the_calibrator_is_one_line():
    config = SamnerConfig().with_stage("calibrator", "openai/gpt-4o-mini", api_key_env="OPENAI_API_KEY")
    assert config.calibrator == Endpoint("openai/gpt-4o-mini", api_key_env="OPENAI_API_KEY")
    assert config.anchor == SamnerConfig().anchor


def test_toml_file_with_defaults_stage_overrides_and_cache(tmp_path):
    path = tmp_path / "samner.toml"
    path.write_text(
        """
[defaults]
api_base = "http://gpu-box:9000/v1"
max_tokens = 256

[stages.calibrator]
model = "openai/gpt-4o-mini"
api_base = ""
api_key_env = "OPENAI_API_KEY"
temperature = 0.2

[cache]
enabled = true
revision = "adapters-2026-11-25"
""",
        encoding="utf-8",
    )
    config = SamnerConfig.from_toml(path)
    assert config.anchor == Endpoint("hosted_vllm/anchor", "http://gpu-box:9000/v1", max_tokens=256)
    assert config.calibrator.model == "openai/gpt-4o-mini" and config.calibrator.api_base is None
    assert config.calibrator.temperature == 0.2 and config.calibrator.max_tokens == 256
    assert config.cache == CachePolicy(enabled=True, revision="adapters-2026-11-25")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[stages.decoder]\nmodel = 'x'", "unknown stages"),
        ("[stages.anchor]\nmodle = 'x'", "unknown keys"),
        ("[engine]\nx = 1", "unknown configuration sections"),
        ("[stages.anchor]\nmodel = ''", "non-empty model"),
        ("[stages.anchor]\nstructured_output = 'xml'", "structured_output"),
        ("[stages.anchor\nmodel = 'x'", "not valid TOML"),
    ],
)
def test_malformed_configuration_names_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.toml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        SamnerConfig.from_toml(path)


def test_missing_configuration_file():
    with pytest.raises(ConfigError, match="does not exist"):
        SamnerConfig.from_toml("/nonexistent/samner.toml")


def test_environment_overrides_and_embedded_fallback(monkeypatch):
    for name in ("SAMNER_CONFIG", "SAMNER_API_BASE", "SAMNER_CALIBRATOR_MODEL", "SAMNER_CALIBRATOR_MAX_TOKENS"):
        monkeypatch.delenv(name, raising=False)
    assert all(resolve_config().endpoint(s).is_embedded for s in ("anchor", "calibrator"))
    monkeypatch.setenv("SAMNER_API_BASE", "http://10.0.0.5:8000/v1")
    monkeypatch.setenv("SAMNER_CALIBRATOR_MODEL", "openai/gpt-4o-mini")
    monkeypatch.setenv("SAMNER_CALIBRATOR_MAX_TOKENS", "99")
    config = resolve_config(SamnerConfig())
    assert config.anchor.api_base == "http://10.0.0.5:8000/v1"
    assert config.calibrator.model == "openai/gpt-4o-mini" and config.calibrator.max_tokens == 99
    monkeypatch.setenv("SAMNER_CALIBRATOR_MAX_TOKENS", "many")
    with pytest.raises(ConfigError, match="must be a number"):
        resolve_config(SamnerConfig())


def test_api_keys_come_from_the_named_variable_only(monkeypatch):
    endpoint = Endpoint("openai/gpt-4o-mini", api_key_env="SAMNER_TEST_KEY")
    monkeypatch.delenv("SAMNER_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="SAMNER_TEST_KEY"):
        endpoint.api_key()
    monkeypatch.setenv("SAMNER_TEST_KEY", "sk-secret")
    assert endpoint.api_key() == "sk-secret"
    assert "sk-secret" not in repr(SamnerConfig().with_stage("calibrator", endpoint))


def test_cache_policy_is_explicit_and_keyed_by_revision():
    endpoint = Endpoint("hosted_vllm/anchor", "http://localhost:8000/v1")
    assert build_lm(endpoint, CachePolicy()).cache is False
    first = build_lm(endpoint, CachePolicy(enabled=True, revision="v1"))
    second = build_lm(endpoint, CachePolicy(enabled=True, revision="v2"))
    assert first.cache is True
    assert first.kwargs["rollout_id"] == revision_key("v1") != second.kwargs["rollout_id"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_endpoint_error_names_its_url():
    url = f"http://127.0.0.1:{closed_port()}/v1"
    program = SAMNER(SamnerConfig.vllm(api_base=url))
    with pytest.raises(EndpointUnreachableError, match=f"anchor endpoint at {url}") as caught:
        program("Ada Lovelace wrote notes.", ["person"])
    assert caught.value.url == url


def test_a_busy_server_is_reachable_and_a_closed_port_is_not():
    """llama.cpp's single slot holds GET /models while it decodes: connected but slow is busy, not unreachable."""
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        check_reachable(f"http://127.0.0.1:{silent.getsockname()[1]}/v1", "anchor", timeout_s=0.3)
    url = f"http://127.0.0.1:{closed_port()}/v1"
    with pytest.raises(EndpointUnreachableError, match=url):
        check_reachable(url, "anchor", timeout_s=0.3)


def test_embedded_stages_send_each_prompt_family_to_a_server_of_its_own(monkeypatch):
    """llama.cpp's one-slot server keeps only its last prompt: a stage's signatures (CCR's verification on the
    anchor, per-entity calibration, direct prompting) must not share a server with the stage's main one."""
    from types import SimpleNamespace

    from samner_dspy import backends as backends_module
    from samner_dspy.serving import embedded

    started: list[str] = []

    def fake_server(model=None, role="default", lora=None):
        if role not in started:
            started.append(role)
        return SimpleNamespace(api_base=f"http://127.0.0.1:{9000 + started.index(role)}/v1", lora_id=None)

    paired: list[list[str]] = []

    def fake_servers(roles, model=None, side_by_side=(), loras=None):
        paired.append(list(side_by_side))
        return {r: fake_server(model, r) for r in roles}

    monkeypatch.setattr(embedded, "shared_servers", fake_servers)
    monkeypatch.setattr(embedded, "shared_server", fake_server)
    monkeypatch.setattr(backends_module, "check_reachable", lambda api_base, stage: None)
    per_entity = backends_module.build_backends(SamnerConfig.embedded(), signatures={"calibrator": "CalibrateEntity"})
    assert started == ["anchor", "explorer", "archetype", "calibrator-CalibrateEntity"], "a program's own families"
    assert paired == [["anchor", "explorer"]], "the discovery pair decodes side by side"
    assert per_entity["calibrator"].lm_for("CalibrateEntity") is per_entity["calibrator"].lm
    assert per_entity["anchor"].lm.model == "samner-hosted/embedded", "dspy's own client, not LiteLLM"
    assert per_entity["anchor"].structured_output == "json_schema" and not per_entity["anchor"].logprobs
    started.clear()
    built = backends_module.build_backends(SamnerConfig.embedded())
    assert started == ["anchor", "explorer", "archetype", "calibrator"]  # the paper's modes' four, at once

    def url(stage: str, signature: str) -> str:
        return built[stage].lm_for(signature).kwargs["api_base"]

    assert url("anchor", "ExtractSpans") == built["anchor"].api_base
    assert url("calibrator", "CalibrateType") == built["calibrator"].api_base
    families = {
        url("anchor", "ExtractSpans"),
        url("explorer", "ExtractSpans"),
        url("archetype", "ClassifyArchetype"),
        url("calibrator", "CalibrateType"),
        url("anchor", "VerifySpan"),
        url("calibrator", "CalibrateEntity"),
        url("calibrator", "ExtractTypedEntities"),
    }
    assert len(families) == 7
    assert url("calibrator", "CalibrateEntity") == url("calibrator", "CalibrateEntity")  # built once
    assert "calibrator-CalibrateEntity" in started


def test_a_stage_can_run_on_another_embedded_model(monkeypatch, tmp_path):
    """``embedded:<model>`` puts one stage on a named embedded model (the calibrator on the 1.5B, the rest on the
    0.5B): its servers are that model's, for each of its prompt families, and the trace names the model."""
    from types import SimpleNamespace

    from samner_dspy import backends as backends_module
    from samner_dspy.serving import embedded

    started: list[tuple[str | None, str]] = []

    def fake_server(model=None, role="default", lora=None):
        if (model, role) not in started:
            started.append((model, role))
        return SimpleNamespace(api_base=f"http://127.0.0.1:{9000 + started.index((model, role))}/v1", lora_id=None)

    monkeypatch.setattr(
        embedded,
        "shared_servers",
        lambda roles, model=None, side_by_side=(), loras=None: {r: fake_server(model, r) for r in roles},
    )
    monkeypatch.setattr(embedded, "shared_server", fake_server)
    monkeypatch.setattr(backends_module, "check_reachable", lambda api_base, stage: None)
    toml = tmp_path / "samner.toml"
    toml.write_text('[defaults]\nmodel = "embedded"\n\n[stages.calibrator]\nmodel = "embedded:qwen2.5-coder-1.5b"\n')
    config = SamnerConfig.from_toml(toml)
    assert config.calibrator.is_embedded and config.calibrator.embedded_model() == "qwen2.5-coder-1.5b"
    assert config.anchor.embedded_model("qwen2.5-coder-0.5b") == "qwen2.5-coder-0.5b", "the default otherwise"
    built = backends_module.build_backends(config)
    assert started[:4] == [
        (None, "anchor"),
        (None, "explorer"),
        (None, "archetype"),
        ("qwen2.5-coder-1.5b", "calibrator"),
    ]
    built["calibrator"].lm_for("CalibrateEntity")
    assert started[-1] == ("qwen2.5-coder-1.5b", "calibrator-CalibrateEntity"), "its other families too"
    assert built["calibrator"].model == "embedded:qwen2.5-coder-1.5b" and built["anchor"].model == "openai/embedded"
    env = SamnerConfig.embedded().with_env({"SAMNER_CALIBRATOR_MODEL": "embedded:qwen2.5-coder-1.5b"})
    assert env.calibrator.embedded_model() == "qwen2.5-coder-1.5b" and env.archetype.model == "embedded"


def test_the_settings_from_the_environment_are_named_in_an_evaluations_command(monkeypatch):
    """An adapter set by SAMNER_ANCHOR_ADAPTER changes what a row runs: the report's command must say so."""
    from samner_dspy.cli import command_line
    from samner_dspy.config import environment_settings

    environ = {"SAMNER_ANCHOR_ADAPTER": "work/my adapter", "SAMNER_CONFIG": "a.toml", "SAMNER_PER_DOMAIN": "9"}
    assert environment_settings(environ) == {"SAMNER_CONFIG": "a.toml", "SAMNER_ANCHOR_ADAPTER": "work/my adapter"}
    for name in environment_settings():
        monkeypatch.delenv(name)
    monkeypatch.setenv("SAMNER_ANCHOR_ADAPTER", "work/my adapter")
    monkeypatch.setattr("sys.argv", ["samner", "eval", "--limit", "5"])
    assert command_line() == "SAMNER_ANCHOR_ADAPTER='work/my adapter' samner eval --limit 5"
