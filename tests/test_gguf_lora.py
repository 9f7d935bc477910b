"""PEFT LoRAs as llama.cpp GGUF adapters, and embedded servers that apply one.

The unit tests convert LoRAs made with peft on a tiny Qwen2 and read the GGUF back; the ``model`` tests put a LoRA
on the real embedded model and compare what llama.cpp makes of it with what transformers + peft make of it.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest

from samner_dspy.config import ConfigError, Endpoint, SamnerConfig
from samner_dspy.errors import AdapterError, EmbeddedModelError
from samner_dspy.serving import embedded, gguf_lora
from tests.conftest import require

ALL_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def train_extra():
    """The train extra, and torch on one thread here (the model tests' timing is for one core each engine)."""
    for name in ("torch", "transformers", "peft", "gguf", "safetensors"):
        require(importlib.util.find_spec(name) is not None, f"{name} (the 'train' extra)")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory, train_extra) -> Path:
    from tests.tiny_model import build_tiny_qwen2

    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen2"))


def make_lora(base: Path, out: Path, *, std: float = 0.1, seed: int = 0, dtype: str = "float32", **settings):
    """A PEFT LoRA on ``base`` with random, non-zero B (peft starts B at zero), saved to ``out``; the peft model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    settings = {"r": 4, "lora_alpha": 8, "target_modules": ALL_MODULES, **settings}
    torch.manual_seed(seed)  # peft draws A from torch's own generator
    peft_model = get_peft_model(model, LoraConfig(**settings))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
    peft_model.to(getattr(torch, dtype)).save_pretrained(out)
    return peft_model


def read_gguf(path: Path) -> tuple[dict[str, object], dict[str, object]]:
    """The GGUF's metadata (key -> value) and tensors (name -> gguf's ReaderTensor)."""
    import gguf

    reader = gguf.GGUFReader(path)
    fields = {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}
    return fields, {tensor.name: tensor for tensor in reader.tensors}


def gguf_delta(tensors: dict[str, object], alpha: float, name: str) -> np.ndarray:
    """What llama.cpp adds to ``name``'s weight (out x in): ``alpha / r * B @ A``, r read from B as llama.cpp does.
    gguf's reader gives each tensor in numpy's order (ggml's shape reversed): A is r x in and B out x r."""
    a = np.asarray(tensors[f"{name}.lora_a"].data, dtype=np.float64)
    b = np.asarray(tensors[f"{name}.lora_b"].data, dtype=np.float64)
    return alpha / b.shape[1] * (b @ a)


def peft_delta(peft_model, layer: int, module: str) -> np.ndarray:
    """peft's own delta W of one module (scaling included), in float64."""
    block = peft_model.base_model.model.model.layers[layer]
    part = block.self_attn if module in ("q_proj", "k_proj", "v_proj", "o_proj") else block.mlp
    return getattr(part, module).get_delta_weight("default").detach().double().numpy()


def gguf_name(layer: int, module: str) -> str:
    return f"blk.{layer}.{gguf_lora.MODULES[('self_attn.' if module[0] in 'qkvo' else 'mlp.') + module]}.weight"


def edit_config(folder: Path, **changes) -> None:
    path = folder / "adapter_config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, **changes}))


# --- conversion ---------------------------------------------------------------------------------------------------


def test_a_peft_lora_becomes_llama_cpps_adapter_with_the_same_delta(tiny_base, tmp_path):
    import gguf

    peft_model = make_lora(tiny_base, tmp_path / "lora", layers_to_transform=[1, 2])
    path = gguf_lora.convert(tmp_path / "lora")
    assert path == tmp_path / "lora" / "adapter.gguf"
    fields, tensors = read_gguf(path)
    assert fields["general.architecture"] == "qwen2" and fields["general.type"] == "adapter"
    assert fields["adapter.type"] == "lora" and fields["adapter.lora.alpha"] == 8.0
    expected = {f"{gguf_name(layer, m)}.lora_{half}" for layer in (1, 2) for m in ALL_MODULES for half in "ab"}
    assert set(tensors) == expected, "layer 0 (not in layers_to_transform) has none"
    # The mapping agrees with gguf's own table of Hugging Face names (what llama.cpp's converters use).
    names = gguf.TensorNameMap(gguf.MODEL_ARCH.QWEN2, 3)
    for hf, ours in gguf_lora.MODULES.items():
        assert names.get_name(f"model.layers.1.{hf}.weight", try_suffixes=(".weight",)) == f"blk.1.{ours}.weight"
    sizes = {"q_proj": (64, 64), "k_proj": (64, 32), "v_proj": (64, 32), "o_proj": (64, 64)}
    sizes |= {"gate_proj": (64, 96), "up_proj": (64, 96), "down_proj": (96, 64)}
    for layer in (1, 2):
        for module, (n_in, n_out) in sizes.items():
            name = gguf_name(layer, module)
            # ggml's order, as llama.cpp checks it: A is [in, r], B is [r, out].
            assert tensors[f"{name}.lora_a"].shape.tolist() == [n_in, 4], name
            assert tensors[f"{name}.lora_b"].shape.tolist() == [4, n_out], name
            assert tensors[f"{name}.lora_a"].tensor_type == gguf.GGMLQuantizationType.F32
            np.testing.assert_allclose(
                gguf_delta(tensors, 8.0, name), peft_delta(peft_model, layer, module), rtol=1e-5, atol=1e-7
            )
    assert np.abs(peft_delta(peft_model, 2, "down_proj")).max() > 1e-3, "the delta is not trivially zero"


def test_some_modules_rslora_and_per_module_rank_and_alpha_scale_as_in_peft(tiny_base, tmp_path):
    rs = make_lora(tiny_base, tmp_path / "rs", target_modules=["q_proj", "down_proj"], r=8, use_rslora=True)
    fields, tensors = read_gguf(gguf_lora.convert(tmp_path / "rs"))
    assert math.isclose(fields["adapter.lora.alpha"], 8 * math.sqrt(8), rel_tol=1e-6), "alpha / sqrt(r) as alpha / r"
    assert {name.rsplit(".", 2)[0].split(".", 2)[2] for name in tensors} == {"attn_q", "ffn_down"}
    for layer in range(3):
        for module in ("q_proj", "down_proj"):
            ours = gguf_delta(tensors, fields["adapter.lora.alpha"], gguf_name(layer, module))
            np.testing.assert_allclose(ours, peft_delta(rs, layer, module), rtol=1e-5, atol=1e-7)

    patterned = make_lora(
        tiny_base,
        tmp_path / "patterns",
        rank_pattern={"down_proj": 2},
        alpha_pattern={r"layers\.1\.self_attn\.q_proj": 32},
    )
    fields, tensors = read_gguf(gguf_lora.convert(tmp_path / "patterns"))
    assert fields["adapter.lora.alpha"] == 8.0
    assert tensors["blk.0.ffn_down.weight.lora_b"].shape.tolist() == [2, 64]
    for layer in range(3):
        for module in ALL_MODULES:
            np.testing.assert_allclose(
                gguf_delta(tensors, 8.0, gguf_name(layer, module)),
                peft_delta(patterned, layer, module),
                rtol=1e-5,
                atol=1e-7,
                err_msg=f"layer {layer} {module}",
            )


def test_16_bit_weights_are_written_f16_when_every_value_fits_exactly_else_f32(tiny_base, tmp_path):
    import gguf
    import torch
    from safetensors.torch import load_file, save_file

    make_lora(tiny_base, tmp_path / "bf16", dtype="bfloat16", target_modules=["q_proj", "v_proj"])
    weights = load_file(tmp_path / "bf16" / "adapter_model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}
    tiny = "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"
    weights[tiny][0, 0] = 1e-7  # a bfloat16 value that F16 holds only rounded (it is below F16's normal range)
    save_file(weights, tmp_path / "bf16" / "adapter_model.safetensors", metadata={"format": "pt"})
    _, tensors = read_gguf(gguf_lora.convert(tmp_path / "bf16"))
    kinds = {name: tensor.tensor_type for name, tensor in tensors.items()}
    assert kinds.pop("blk.0.attn_v.weight.lora_b") == gguf.GGMLQuantizationType.F32
    assert set(kinds.values()) == {gguf.GGMLQuantizationType.F16}
    for key, value in weights.items():
        layer, module = int(key.split(".")[4]), key.split(".")[6]
        name = f"{gguf_name(layer, module)}.lora_{key.split('.')[7][-1].lower()}"
        assert np.array_equal(np.asarray(tensors[name].data, dtype=np.float32), value.float().numpy()), name


def test_adapters_it_cannot_convert_are_refused_saying_why(tiny_base, tmp_path):
    from safetensors.torch import load_file, save_file

    with pytest.raises(AdapterError, match=re.escape("no adapter_config.json: it is not a PEFT adapter folder")):
        gguf_lora.convert(tmp_path)
    with pytest.raises(AdapterError, match="does not exist"):
        gguf_lora.adapter_gguf(tmp_path / "missing")
    make_lora(tiny_base, tmp_path / "lora", target_modules=["q_proj"])
    lora = tmp_path / "lora"
    original = (lora / "adapter_config.json").read_text()

    def refused(match: str, architecture: str | None = None, **changes) -> None:
        (lora / "adapter_config.json").write_text(original)
        edit_config(lora, **changes)
        with pytest.raises(AdapterError, match=match):
            gguf_lora.convert(lora, architecture=architecture)

    refused("'IA3' adapter; only LoRA converts", peft_type="IA3")
    refused("uses DoRA", use_dora=True)
    refused("modules_to_save", modules_to_save=["lm_head"])
    refused("trained on a qwen2 model .* but the model serving it is llama", architecture="llama")
    llama = tmp_path / "llama-base"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    refused("is for a llama model; only qwen2 adapters convert", base_model_name_or_path=str(llama))
    refused("cannot tell which model", base_model_name_or_path="nobody/not-a-cached-model")
    (lora / "adapter_config.json").write_text(original)
    edit_config(lora, base_model_name_or_path="nobody/not-a-cached-model")
    assert gguf_lora.convert(lora, architecture="qwen2").is_file(), "the caller may say what the base is"

    (lora / "adapter_config.json").write_text(original)
    from tests.tiny_model import build_tiny_qwen2

    other = build_tiny_qwen2(tmp_path / "two-layers", num_layers=2)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "hidden_size": 32, "intermediate_size": 48}))
    refused(r"64 -> 64 in the adapter .* but 32 -> 32 in its base model", base_model_name_or_path=str(other))

    (lora / "adapter_config.json").write_text(original)
    weights = load_file(lora / "adapter_model.safetensors")
    lone = {k: v for k, v in weights.items() if "layers.2." not in k or "lora_A" in k}
    save_file(lone, lora / "adapter_model.safetensors")
    with pytest.raises(
        AdapterError, match=re.escape("has lora_A for model.layers.2.self_attn.q_proj but not its pair")
    ):
        gguf_lora.convert(lora)
    extra = weights[next(iter(weights))].clone()
    save_file({**weights, "base_model.model.lm_head.lora_A.weight": extra}, lora / "adapter_model.safetensors")
    with pytest.raises(
        AdapterError, match=re.escape("adapts lm_head, which this conversion does not map; supported: model.layers.N.")
    ):
        gguf_lora.convert(lora)
    save_file({**weights, "base_model.model.model.norm.weight": extra}, lora / "adapter_model.safetensors")
    with pytest.raises(AdapterError, match=re.escape("holds base_model.model.model.norm.weight, which is not a LoRA")):
        gguf_lora.convert(lora)


def test_the_conversion_is_kept_beside_the_adapter_and_redone_when_the_adapter_changes(
    tiny_base, tmp_path, monkeypatch
):
    make_lora(tiny_base, tmp_path / "lora", target_modules=["v_proj"])
    weights = tmp_path / "lora" / "adapter_model.safetensors"
    first = gguf_lora.adapter_gguf(tmp_path / "lora")
    assert first == tmp_path / "lora" / "adapter.gguf"
    written = first.stat().st_mtime_ns
    assert gguf_lora.adapter_gguf(tmp_path / "lora") == first and first.stat().st_mtime_ns == written, "reused"
    trained = weights.stat().st_mtime_ns
    os.utime(first, ns=(trained - 10**9, trained - 10**9))  # the weights are newer: retrained since
    assert gguf_lora.adapter_gguf(tmp_path / "lora") == first and first.stat().st_mtime_ns > trained, "redone"
    assert gguf_lora.adapter_gguf(first) == first, "a .gguf is served as it is"
    monkeypatch.setenv("SAMNER_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(gguf_lora.os, "access", lambda path, mode: False)  # a read-only folder (a hub snapshot)
    cached = gguf_lora.adapter_gguf(tmp_path / "lora")
    assert cached.parent == tmp_path / "home" / "adapters" and cached.name.startswith("lora-") and cached.is_file()


# --- serving: the server's command, its prefix store, the configuration ---------------------------------------------


@pytest.fixture
def fake_model(monkeypatch, tmp_path) -> Path:
    """A model file in place of the embedded GGUF, for building servers' commands without the model."""
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    monkeypatch.setattr(embedded, "model_path", lambda name=None: model)
    monkeypatch.setenv("SAMNER_HOME", str(tmp_path / "home"))
    return model


def test_a_server_with_a_lora_loads_it_and_keeps_its_prompt_states_apart(tiny_base, tmp_path, fake_model):
    import hashlib
    from importlib.metadata import version

    make_lora(tiny_base, tmp_path / "one", target_modules=["q_proj"])
    make_lora(tiny_base, tmp_path / "two", target_modules=["q_proj"], seed=1)
    plain = embedded.EmbeddedServer(port=1234, prefix_store=False)
    lora = embedded.EmbeddedServer(port=1234, prefix_store=False, lora=tmp_path / "one")
    assert "--lora_path" not in plain.command() and plain.lora is None
    assert lora.command() == [*plain.command(), "--lora_path", str((tmp_path / "one" / "adapter.gguf").resolve())]

    # The default store: the base model's folder is what it always was, each adapter's is its own.
    spec = embedded.model_spec()
    build = version("llama_cpp_python") if importlib.util.find_spec("llama_cpp") else "missing"
    settings = f"{spec.sha256} n_ctx=4096 flash_attn=1 llama_cpp={build}"
    base_dir = tmp_path / "home" / "prefixes" / f"{spec.name}-{hashlib.sha256(settings.encode()).hexdigest()[:12]}"
    assert embedded.EmbeddedServer(prefix_store=True).prefix_store == base_dir
    one = embedded.EmbeddedServer(prefix_store=True, lora=tmp_path / "one").prefix_store
    two = embedded.EmbeddedServer(prefix_store=True, lora=tmp_path / "two").prefix_store
    assert len({base_dir, one, two}) == 3 and one.parent == base_dir.parent
    again = embedded.EmbeddedServer(prefix_store=True, lora=tmp_path / "one" / "adapter.gguf").prefix_store
    assert again == one, "keyed by the adapter's content: the same adapter finds its states in a new process"
    # A folder given: the base model's states in it, each adapter's in a folder of its own under it.
    store = tmp_path / "store"
    assert embedded.EmbeddedServer(prefix_store=store).prefix_store == store
    keyed = embedded.EmbeddedServer(prefix_store=store, lora=tmp_path / "one").prefix_store
    assert keyed.parent == store and keyed.name.startswith("lora-")
    command = embedded.EmbeddedServer(prefix_store=store, lora=tmp_path / "one").command()
    assert command[command.index("--samner_prefix_dir") + 1] == str(keyed)


def test_a_lora_trained_on_another_embedded_models_export_is_refused(tiny_base, tmp_path, fake_model):
    make_lora(tiny_base, tmp_path / "lora", target_modules=["q_proj"])
    (tiny_base / "samner_export.json").write_text(
        json.dumps({"gguf_sha256": embedded.MODELS["qwen2.5-coder-1.5b"].sha256})
    )
    try:
        with pytest.raises(
            AdapterError, match=re.escape("trained on the Hugging Face export of qwen2.5-coder-1.5b, but this")
        ):
            embedded.EmbeddedServer(prefix_store=False, lora=tmp_path / "lora")
        assert embedded.EmbeddedServer("qwen2.5-coder-1.5b", prefix_store=False, lora=tmp_path / "lora").lora
    finally:
        (tiny_base / "samner_export.json").unlink()


def test_a_stage_names_its_lora_in_the_configuration_and_every_server_of_the_stage_applies_it(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from samner_dspy import backends as backends_module

    toml = tmp_path / "samner.toml"
    toml.write_text(
        '[defaults]\nmodel = "embedded"\n\n[stages.anchor]\nadapter = "adapters/anchor"\n\n'
        '[cache]\nenabled = true\nrevision = "r1"\n'
    )
    config = SamnerConfig.from_toml(toml)
    assert config.anchor.adapter == "adapters/anchor" and config.explorer.adapter is None
    assert config.with_env({"SAMNER_EXPLORER_ADAPTER": "x.gguf"}).explorer.adapter == "x.gguf"
    assert config.with_env({"SAMNER_ANCHOR_ADAPTER": ""}).anchor.adapter is None
    with pytest.raises(ConfigError, match="on vLLM the model name picks the LoRA"):
        Endpoint("hosted_vllm/explorer", adapter="adapters/explorer")
    with pytest.raises(ConfigError, match="adapter"):
        SamnerConfig.from_mapping({"stages": {"explorer": {"adapter": "adapters/explorer"}}})

    servers: dict[tuple[str, str | None], SimpleNamespace] = {}

    def fake_server(model=None, role="default", lora=None):
        key = (role, lora)
        lora_id = "abc123" if lora else None
        servers.setdefault(key, SimpleNamespace(api_base=f"http://127.0.0.1:{9000 + len(servers)}/v1", lora_id=lora_id))
        return servers[key]

    def fake_servers(roles, model=None, side_by_side=(), loras=None):
        return {role: fake_server(model, role, (loras or {}).get(role)) for role in roles}

    monkeypatch.setattr(embedded, "shared_servers", fake_servers)
    monkeypatch.setattr(embedded, "shared_server", fake_server)
    monkeypatch.setattr(backends_module, "check_reachable", lambda api_base, stage: None)
    built = backends_module.build_backends(config)
    built["anchor"].lm_for("VerifySpan")  # CCR's verification: another prompt family of the anchor's
    assert set(servers) == {
        ("anchor", "adapters/anchor"),
        ("explorer", None),
        ("archetype", None),
        ("calibrator", None),
        ("anchor-VerifySpan", "adapters/anchor"),
    }
    assert built["anchor"].model == "openai/embedded+lora:adapters/anchor", "the trace names the adapter"
    assert built["explorer"].model == "openai/embedded"
    # dspy's cache keys replies by model name ("embedded" for every server), not URL: the adapter joins the key.
    assert built["anchor"].lm.kwargs["rollout_id"] == backends_module.revision_key("r1+lora:abc123")
    assert built["anchor"].lm_for("VerifySpan").kwargs["rollout_id"] == built["anchor"].lm.kwargs["rollout_id"]
    assert built["explorer"].lm.kwargs["rollout_id"] == backends_module.revision_key("r1")


# --- the real model: llama.cpp against transformers + peft ----------------------------------------------------------

PROMPT = "Bob Dylan is a"
"""Plain text: its next token is " famous" on the base model and " well" with the LoRA below, by a margin of about
1 and 1.7 logits in both engines, so the greedy change is not a coin toss."""
LAYERS = [20, 21, 22, 23]


@pytest.fixture(scope="module")
def real_lora(hf_base_model, tmp_path_factory, train_extra):
    """A rank-8 LoRA on every projection of the embedded model's last four layers, with random B (std 0.08: the
    next-token logits move by about 2, enough to change the greedy token), saved by peft; and the fp32 model."""
    from transformers import AutoTokenizer

    require(importlib.util.find_spec("llama_cpp") is not None, "llama-cpp-python (the 'local' extra)")
    folder = tmp_path_factory.mktemp("real-lora")
    peft_model = make_lora(
        hf_base_model, folder / "lora", r=8, lora_alpha=16, layers_to_transform=LAYERS, std=0.08, seed=0
    )
    peft_model.eval()
    tokenizer = AutoTokenizer.from_pretrained(hf_base_model)
    ids = list(tokenizer(PROMPT)["input_ids"])
    return peft_model, folder, ids, tokenizer


def hf_logits(peft_model, ids: list[int], adapter: bool = True) -> np.ndarray:
    import contextlib

    import torch

    with torch.no_grad(), contextlib.nullcontext() if adapter else peft_model.disable_adapter():
        return peft_model(torch.tensor([ids])).logits[0, -1].double().numpy()


def llama_logits(ids: list[int], lora: Path | None = None) -> np.ndarray:
    import llama_cpp

    model = llama_cpp.Llama(
        str(embedded.model_path()),
        n_ctx=128,
        n_threads=1,
        n_threads_batch=1,
        logits_all=True,
        verbose=False,
        lora_path=str(lora) if lora else None,
    )
    try:
        model.eval(ids)
        return np.array(model.scores[len(ids) - 1], dtype=np.float64)
    finally:
        model.close()


def set_lora_b(peft_model, keep: str | None, scale: float = 1.0) -> dict[str, object]:
    """Zero every lora_B but those whose name contains ``keep`` (none for None), which are multiplied by ``scale``;
    the B values before."""
    import torch

    saved = {}
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                saved[name] = parameter.detach().clone()
                parameter.mul_(scale if keep is not None and keep in name else 0.0)
    return saved


def restore(peft_model, saved: dict[str, object]) -> None:
    import torch

    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if name in saved:
                parameter.copy_(saved[name])


@pytest.mark.model
def test_llama_cpp_applies_the_converted_lora_as_transformers_and_peft_do(real_lora, tmp_path):
    """The change the LoRA makes to the next-token logits, in each engine (llama.cpp on the Q4_K_M GGUF,
    transformers in fp32 on its dequantised export): the same direction over the vocabulary, the same new greedy
    token; a LoRA of zeros changes nothing; and each projection on its own lands on its own weight."""
    peft_model, folder, ids, tokenizer = real_lora
    hf_base, hf_lora = hf_logits(peft_model, ids, adapter=False), hf_logits(peft_model, ids)
    cpp_base, cpp_lora = llama_logits(ids), llama_logits(ids, gguf_lora.adapter_gguf(folder / "lora"))
    hf_change, cpp_change = hf_lora - hf_base, cpp_lora - cpp_base
    correlation = np.corrcoef(hf_change, cpp_change)[0, 1]
    print(
        f"\nlogit change: std hf {hf_change.std():.3f} llama.cpp {cpp_change.std():.3f}, correlation {correlation:.4f}"
    )
    assert hf_change.std() > 0.5, "the LoRA changes the logits noticeably"
    assert correlation > 0.95
    assert hf_base.argmax() == cpp_base.argmax() and hf_lora.argmax() != hf_base.argmax(), "the seed's premise"
    print(f"greedy token: {tokenizer.decode([hf_base.argmax()])!r} -> {tokenizer.decode([hf_lora.argmax()])!r}")
    assert cpp_lora.argmax() == hf_lora.argmax(), (
        tokenizer.decode([hf_lora.argmax()]),
        tokenizer.decode([cpp_lora.argmax()]),
    )

    saved = set_lora_b(peft_model, None)
    try:
        peft_model.save_pretrained(tmp_path / "zeros")
        zeros = llama_logits(ids, gguf_lora.adapter_gguf(tmp_path / "zeros"))
        print(f"a LoRA of zeros: largest logit change {np.abs(zeros - cpp_base).max():.2e}")
        assert np.abs(zeros - cpp_base).max() <= 1e-4, "a LoRA of zeros leaves llama.cpp's logits as they were"
        for module in ALL_MODULES:  # a module mapped onto another weight would move the logits another way
            restore(peft_model, saved)
            set_lora_b(peft_model, f".{module}.", scale=3.0)  # one projection moves the logits less than seven
            peft_model.save_pretrained(tmp_path / module)
            hf_change = hf_logits(peft_model, ids) - hf_base
            cpp_change = llama_logits(ids, gguf_lora.adapter_gguf(tmp_path / module)) - cpp_base
            correlation = np.corrcoef(hf_change, cpp_change)[0, 1]
            print(f"{module}: std hf {hf_change.std():.3f} cpp {cpp_change.std():.3f}, correlation {correlation:.4f}")
            assert correlation > 0.95, module
    finally:
        restore(peft_model, saved)


@pytest.mark.model
def test_an_embedded_server_serves_with_the_lora_and_never_loads_the_base_models_prompt_states(real_lora, tmp_path):
    import httpx

    from samner_dspy.archetypes import archetype_definitions

    _, folder, _, _ = real_lora
    system = "Give the archetype of the entity, one of these: " + json.dumps(archetype_definitions())
    request = {
        "model": "embedded",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": "Bob Dylan recorded Blue."}],
        "max_tokens": 8,
        "temperature": 0,
    }

    def ask(server: embedded.EmbeddedServer) -> tuple[str, int, int]:
        reply = httpx.post(f"{server.api_base}/chat/completions", json=request, timeout=300).json()
        return (
            reply["choices"][0]["message"]["content"],
            reply["usage"]["prompt_tokens"],
            server.evaluated_prompt_tokens(),
        )

    store = tmp_path / "prefixes"
    with embedded.EmbeddedServer(prefix_store=store, log_path=tmp_path / "base.log") as base:
        base_answer, sent, _ = ask(base)
    assert len(list(store.glob("*.kv"))) == 1, "the base model's state of the prompt"
    with embedded.EmbeddedServer(prefix_store=store, log_path=tmp_path / "lora.log", lora=folder / "lora") as served:
        answer, _, evaluated = ask(served)
    log = (tmp_path / "lora.log").read_text(errors="replace")
    n_tensors = 2 * len(LAYERS) * len(ALL_MODULES)
    assert f"loading lora adapter from '{served.lora}'" in log and f"loaded {n_tensors} tensors from lora file" in log
    print(f"\nbase: {base_answer!r}; with the LoRA: {answer!r}; {evaluated} of {sent} prompt tokens evaluated")
    assert answer and answer != base_answer, (answer, base_answer)
    assert evaluated == sent, "the whole prompt evaluated: the base model's stored state is not the LoRA's"
    assert len(list(served.prefix_store.glob("*.kv"))) == 1 and len(list(store.glob("*.kv"))) == 1
    with embedded.EmbeddedServer(prefix_store=store, log_path=tmp_path / "again.log", lora=folder / "lora") as again:
        repeated, _, evaluated = ask(again)
    assert evaluated < 0.2 * sent, "a new LoRA server starts from the LoRA's own stored state"
    assert repeated == answer


def test_the_cli_serves_an_adapter_and_says_what_is_wrong_with_one(tmp_path, capsys):
    from samner_dspy.cli import main

    assert main(["embedded", "path", "--adapter", str(tmp_path)]) == 2
    assert "--adapter is only for serve" in capsys.readouterr().err
    assert main(["embedded", "serve", "--adapter", str(tmp_path / "missing")]) == 2
    assert "does not exist: give the folder `samner train` wrote" in capsys.readouterr().err


@pytest.mark.model
def test_a_lora_llama_cpp_refuses_stops_the_server_with_llama_cpps_reason(tiny_base, tmp_path):
    """llama-cpp-python would start anyway and answer on the base model; a .gguf skips this library's own checks."""
    require(importlib.util.find_spec("llama_cpp") is not None, "llama-cpp-python (the 'local' extra)")
    packages = embedded.model_spec().chunk_packages
    require(all(importlib.util.find_spec(p) is not None for p in packages), "the embedded model's chunk packages")
    make_lora(tiny_base, tmp_path / "tiny", target_modules=["k_proj"])
    wrong = gguf_lora.convert(tmp_path / "tiny")
    server = embedded.EmbeddedServer(prefix_store=False, log_path=tmp_path / "server.log", lora=wrong)
    with pytest.raises(EmbeddedModelError, match=r"tensor 'blk\.0\.attn_k\.weight' has incorrect shape"):
        server.start(timeout_s=120)


def test_on_ray_a_stage_with_a_lora_gets_a_server_of_its_own(monkeypatch):
    require(importlib.util.find_spec("ray") is not None, "ray (the 'ray' extra)")
    from types import SimpleNamespace

    from samner_dspy.scale import ray_data

    asked: list[tuple[str, str | None]] = []

    def fake_server(model=None, role="default", lora=None):
        asked.append((role, lora))
        return SimpleNamespace(api_base=f"http://127.0.0.1:{9000 + len(asked)}/v1")

    monkeypatch.setattr(embedded, "shared_server", fake_server)
    untrained = SamnerConfig.embedded(trained=False)
    config = untrained.with_stage("explorer", Endpoint("embedded", adapter="adapters/explorer"))
    served = ray_data._served(config)
    assert sorted(set(asked)) == [("default", None), ("explorer", "adapters/explorer")]
    assert served.explorer.api_base != served.anchor.api_base and served.explorer.adapter is None


def test_the_committed_archetype_adapter_converts_for_the_embedded_model(tmp_path):
    """The adapter this repository ships: a PEFT LoRA on the last 12 of the 0.5B's 24 layers that converts to
    llama.cpp's format (the embedded engine loads the converted file)."""
    import gguf

    from samner_dspy.serving.gguf_lora import convert, read_adapter

    folder = Path(__file__).resolve().parents[1] / "adapters" / "qwen2.5-coder-0.5b" / "archetype"
    adapter = read_adapter(folder, "qwen2")
    layers = {int(m.name.split(".")[1]) for m in adapter.modules}
    assert layers == set(range(12, 24)) and len(adapter.modules) == 12 * 7
    assert {m.rank for m in adapter.modules} == {8} and adapter.alpha == 16
    reader = gguf.GGUFReader(convert(folder, tmp_path / "archetype.gguf", "qwen2"))
    assert len(reader.tensors) == 2 * len(adapter.modules)
