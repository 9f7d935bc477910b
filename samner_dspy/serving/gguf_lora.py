"""PEFT LoRA adapters (what ``samner train`` writes) as llama.cpp GGUF adapters, so an embedded server can serve a
stage with one: llama.cpp loads adapters in its own format only, and the embedded model is a GGUF.

llama.cpp (``src/llama-adapter.cpp``) reads a GGUF with ``general.type = "adapter"``, ``adapter.type = "lora"``,
``adapter.lora.alpha`` and the base model's ``general.architecture``, and for each adapted weight ``W`` (GGUF name
``blk.N.attn_q.weight``) the pair ``blk.N.attn_q.weight.lora_a`` and ``.lora_b``. ggml lists shapes innermost
first, so A is ``[in, r]`` and B ``[r, out]``: PEFT's row-major ``lora_A`` (r x in) and ``lora_B`` (out x r) are
written as they are, and llama.cpp adds ``alpha / r * B @ (A @ x)`` (r read from B), PEFT's own scaling. rsLoRA
(``alpha / sqrt(r)``) is written as the alpha that gives the same scale, and a module whose rank or alpha a
``rank_pattern`` / ``alpha_pattern`` sets apart has the difference folded into its B. Qwen2 (both embedded models)
keeps Hugging Face's attention layout in GGUF; Llama's q and k are permuted for rope, and other architectures are
refused rather than converted wrong.

16-bit weights (bf16, what training on a bf16-capable machine saves) are written F16 where F16 holds every value of
a tensor exactly (bf16 values from 2^-17 to 65280 in magnitude, and zero), else F32: the conversion never rounds.
A converted folder's GGUF is kept beside its weights (:data:`ADAPTER_FILE`) and reused while it is newer than them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from samner_dspy.errors import AdapterError

ADAPTER_FILE = "adapter.gguf"
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
ARCHITECTURES = ("qwen2",)
"""Base architectures (Hugging Face ``model_type``, GGUF ``general.architecture``) whose adapters convert."""
MODULES: dict[str, str] = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
"""A decoder layer's Hugging Face module (under ``model.layers.N.``) -> its GGUF tensor (``blk.N.<name>.weight``)."""
REFUSED_SETTINGS = {
    "use_dora": "DoRA (a magnitude vector per weight, which llama.cpp's LoRA adapters do not carry)",
    "alora_invocation_tokens": "activated LoRA (aLoRA)",
    "fan_in_fan_out": "fan_in_fan_out (transposed Conv1D weights)",
    "lora_bias": "a LoRA bias",
    "layer_replication": "layer replication",
    "modules_to_save": "modules_to_save (full copies of modules, not LoRA matrices)",
    "trainable_token_indices": "trainable token embeddings",
    "target_parameters": "target_parameters (LoRA on raw parameters)",
}
"""adapter_config.json settings that, when set, make an adapter more than llama.cpp's ``B @ A`` per weight."""
_LORA_TENSOR = re.compile(r"(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<half>[AB])\.weight")
_LAYER_MODULE = re.compile(r"model\.layers\.(?P<layer>\d+)\.(?P<kind>.+)")
_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}


@dataclass(frozen=True)
class LoraModule:
    """One adapted weight."""

    name: str
    """The base weight's GGUF tensor name, ``blk.N.attn_q.weight``."""
    peft_name: str
    """The Hugging Face module, ``model.layers.N.self_attn.q_proj``."""
    rank: int
    in_features: int
    out_features: int
    scaling: float
    """PEFT's factor on ``B @ A``: ``alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA."""
    a_key: str
    b_key: str


@dataclass(frozen=True)
class LoraAdapter:
    """A PEFT LoRA folder, read and checked: what the GGUF will hold."""

    folder: Path
    architecture: str
    alpha: float
    """``adapter.lora.alpha`` as written: llama.cpp scales each module by ``alpha / rank``."""
    modules: tuple[LoraModule, ...]
    base_model: str | None
    """``base_model_name_or_path`` from adapter_config.json."""
    base_gguf_sha256: str | None
    """When the base was ``samner embedded export-hf``'s folder: the SHA-256 of the GGUF it was exported from."""


def read_adapter(folder: str | os.PathLike[str], architecture: str | None = None) -> LoraAdapter:
    """Read and check a PEFT LoRA folder without loading its weights (the safetensors header only).

    ``architecture`` is the base's when the adapter's own ``base_model_name_or_path`` cannot be read here (a hub id
    not in the local cache, a moved folder); where both are known they must agree."""
    folder = Path(folder)
    config = _adapter_config(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        other = (
            " (adapter_model.bin, pickled: save it again with safetensors)"
            if (folder / "adapter_model.bin").is_file()
            else ""
        )
        raise AdapterError(f"the adapter at {folder} has no {WEIGHTS_FILE}{other}")
    base = config.get("base_model_name_or_path") or None
    base_config = _base_config(base)
    arch = _architecture(folder, base, base_config, architecture)
    rank, alpha = config.get("r"), config.get("lora_alpha")
    if not isinstance(rank, int) or rank <= 0:
        raise AdapterError(f"{folder / CONFIG_FILE}: r must be a positive integer, got {rank!r}")
    if not isinstance(alpha, int | float) or alpha <= 0:
        raise AdapterError(f"{folder / CONFIG_FILE}: lora_alpha must be positive, got {alpha!r}")
    header, _ = _safetensors_header(weights)
    modules = _modules(folder, config, header, base_config)
    # llama.cpp's scale is alpha / rank; for the configured rank that must be PEFT's scaling.
    gguf_alpha = float(alpha) * (math.sqrt(rank) if config.get("use_rslora") else 1.0)
    return LoraAdapter(folder, arch, gguf_alpha, modules, base, _export_sha256(base))


def convert(
    folder: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, architecture: str | None = None
) -> Path:
    """Write the GGUF adapter of a PEFT LoRA folder (default ``<folder>/adapter.gguf``) and return its path."""
    adapter = read_adapter(folder, architecture)
    return write_gguf(adapter, Path(out) if out is not None else adapter.folder / ADAPTER_FILE)


def adapter_gguf(source: str | os.PathLike[str], architecture: str | None = None) -> Path:
    """The llama.cpp adapter file for ``source``: a ``.gguf`` as it is, or a PEFT folder's conversion, made on first
    use and reused while it is newer than the folder's weights and config (beside them, or under the cache when the
    folder is read-only)."""
    path = Path(source).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path
    if not path.is_dir():
        what = "is not a PEFT adapter folder or a .gguf file" if path.exists() else "does not exist"
        raise AdapterError(
            f"the adapter {source} {what}: give the folder `samner train` wrote (adapter_config.json and "
            f"{WEIGHTS_FILE}) or a llama.cpp GGUF adapter"
        )
    adapter = read_adapter(path, architecture)  # checked every time: a header read, no weights
    target = _cached_path(path)
    newest = max((path / name).stat().st_mtime_ns for name in (CONFIG_FILE, WEIGHTS_FILE))
    if target.is_file() and target.stat().st_mtime_ns > newest:
        return target
    return write_gguf(adapter, target)


def write_gguf(adapter: LoraAdapter, out: Path) -> Path:
    """Write ``adapter`` as llama.cpp's GGUF LoRA at ``out`` (atomically: a reader sees a whole file or none)."""
    try:
        import gguf
    except ImportError:
        raise AdapterError(
            "converting a PEFT adapter to llama.cpp's format needs the gguf package: pip install 'samner-dspy[train]' "
            "(or give an adapter already converted to .gguf)"
        ) from None
    weights = adapter.folder / WEIGHTS_FILE
    header, start = _safetensors_header(weights)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}-", suffix=".part")
    os.close(handle)
    try:
        writer = gguf.GGUFWriter(temp, adapter.architecture)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, adapter.alpha)
        for module in adapter.modules:
            a, a_16 = _tensor(weights, header[module.a_key], start)
            b, b_16 = _tensor(weights, header[module.b_key], start)
            # llama.cpp scales by alpha / rank; a module whose own scaling differs carries the rest in B.
            factor = module.scaling * module.rank / adapter.alpha
            if not math.isclose(factor, 1.0, rel_tol=1e-9):
                b = (b * np.float32(factor)).astype(np.float32)
            writer.add_tensor(f"{module.name}.lora_a", _stored(a, a_16))
            writer.add_tensor(f"{module.name}.lora_b", _stored(b, b_16))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(temp, out)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return out


def _adapter_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise AdapterError(
            f"{folder} has no {CONFIG_FILE}: it is not a PEFT adapter folder (give the folder `samner train` wrote)"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterError(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise AdapterError(f"{path} is not a PEFT adapter configuration")
    kind = str(config.get("peft_type", "")).upper()
    if kind != "LORA":
        raise AdapterError(f"the adapter at {folder} is a {config.get('peft_type')!r} adapter; only LoRA converts")
    refused = [what for key, what in REFUSED_SETTINGS.items() if config.get(key)]
    if refused:
        raise AdapterError(
            f"the adapter at {folder} uses {', '.join(refused)}, which llama.cpp's LoRA adapters cannot express; "
            "a plain LoRA on the attention and MLP projections converts"
        )
    return config


def _base_config(base: str | None) -> dict[str, Any] | None:
    """The base model's config.json: a local folder, or a hub id in the local Hugging Face cache; None if neither."""
    if not base:
        return None
    path = Path(base).expanduser() / "config.json"
    if not path.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        try:
            cached = try_to_load_from_cache(base, "config.json")
        except Exception:  # not a repository id at all
            return None
        if not isinstance(cached, str):
            return None
        path = Path(cached)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def _export_sha256(base: str | None) -> str | None:
    from samner_dspy.serving.hf_export import PROVENANCE_FILE

    if not base:
        return None
    try:
        record = json.loads((Path(base).expanduser() / PROVENANCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    sha = record.get("gguf_sha256") if isinstance(record, dict) else None
    return sha if isinstance(sha, str) else None


def _architecture(folder: Path, base: str | None, base_config: dict[str, Any] | None, given: str | None) -> str:
    found = base_config.get("model_type") if base_config else None
    if found and given and found != given:
        raise AdapterError(
            f"the adapter at {folder} was trained on a {found} model ({base}), but the model serving it is {given}"
        )
    arch = found or given
    if not arch:
        raise AdapterError(
            f"cannot tell which model the adapter at {folder} was trained on: its base_model_name_or_path "
            f"{base!r} is not a folder with a config.json here nor in the Hugging Face cache"
        )
    if arch not in ARCHITECTURES:
        raise AdapterError(
            f"the adapter at {folder} is for a {arch} model; only {', '.join(ARCHITECTURES)} adapters convert to "
            "llama.cpp's format here (the embedded models are Qwen2.5)"
        )
    return arch


def _safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """The tensors' table of a safetensors file and where their data starts (the format is a length, JSON, data)."""
    try:
        with path.open("rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if not 0 < size < 1 << 28:
                raise ValueError(f"a header of {size} bytes")
            header = json.loads(handle.read(size))
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{path} is not a safetensors file ({exc})") from exc
    header.pop("__metadata__", None)
    return header, 8 + size


def _tensor(path: Path, info: dict[str, Any], start: int) -> tuple[np.ndarray, bool]:
    """A tensor as float32, and whether it was stored in 16 bits."""
    begin, end = info["data_offsets"]
    kind = _SAFETENSORS_DTYPES[info["dtype"]]
    raw = np.fromfile(path, dtype=np.uint8, count=end - begin, offset=start + begin).view(kind)
    if kind is np.uint16:  # bfloat16: the high half of a float32
        values = (raw.astype(np.uint32) << 16).view(np.float32)
    else:
        values = raw.astype(np.float32)
    return values.reshape(info["shape"]), kind is not np.float32


def _stored(values: np.ndarray, sixteen_bit: bool) -> np.ndarray:
    """F16 when the source was 16-bit and F16 holds every value exactly, else F32."""
    if sixteen_bit:
        with np.errstate(over="ignore"):
            half = values.astype(np.float16)
        if np.array_equal(half.astype(np.float32), values):
            return half
    return np.ascontiguousarray(values, dtype=np.float32)


def _pattern_value(patterns: dict[str, Any], key: str, default: Any) -> Any:
    """PEFT's ``rank_pattern`` / ``alpha_pattern`` lookup: the first pattern matching the end of the module name."""
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", key):
            return value
    return default


def _expected_shapes(base_config: dict[str, Any] | None) -> tuple[int | None, dict[str, tuple[int, int]]]:
    """The base's layer count and each module's (in, out) from its config.json, to catch an adapter of another
    model before llama.cpp does (its message lands in a server log)."""
    if not base_config:
        return None, {}
    try:
        hidden, inner = int(base_config["hidden_size"]), int(base_config["intermediate_size"])
        heads, kv_heads = int(base_config["num_attention_heads"]), int(base_config["num_key_value_heads"])
        head_dim = int(base_config.get("head_dim") or hidden // heads)
        layers = int(base_config["num_hidden_layers"])
    except (KeyError, TypeError, ValueError):
        return None, {}
    shapes = {
        "self_attn.q_proj": (hidden, heads * head_dim),
        "self_attn.k_proj": (hidden, kv_heads * head_dim),
        "self_attn.v_proj": (hidden, kv_heads * head_dim),
        "self_attn.o_proj": (heads * head_dim, hidden),
        "mlp.gate_proj": (hidden, inner),
        "mlp.up_proj": (hidden, inner),
        "mlp.down_proj": (inner, hidden),
    }
    return layers, shapes


def _modules(
    folder: Path, config: dict[str, Any], header: dict[str, Any], base_config: dict[str, Any] | None
) -> tuple[LoraModule, ...]:
    halves: dict[str, dict[str, str]] = {}
    for key, info in header.items():
        match = _LORA_TENSOR.fullmatch(key)
        if ".lora_embedding_" in key:
            raise AdapterError(
                f"the adapter at {folder} adapts the token embeddings ({key}), which this conversion does not cover; "
                f"supported: model.layers.N.{{{', '.join(MODULES)}}}"
            )
        if match is None:
            raise AdapterError(
                f"the adapter at {folder} holds {key}, which is not a LoRA A or B matrix (a bias, a saved module or "
                "trainable tokens): llama.cpp's adapters carry LoRA matrices only"
            )
        if info.get("dtype") not in _SAFETENSORS_DTYPES or len(info.get("shape", ())) != 2:
            raise AdapterError(f"{key} in {folder / WEIGHTS_FILE} is {info.get('dtype')} {info.get('shape')}")
        halves.setdefault(match["module"], {})[match["half"]] = key
    if not halves:
        raise AdapterError(f"the adapter at {folder} holds no LoRA matrices")
    layers, expected = _expected_shapes(base_config)
    rank, alpha = config["r"], config["lora_alpha"]
    rslora = bool(config.get("use_rslora"))
    modules = []
    for peft_name, pair in halves.items():
        where = _LAYER_MODULE.fullmatch(peft_name)
        if where is None or where["kind"] not in MODULES:
            raise AdapterError(
                f"the adapter at {folder} adapts {peft_name}, which this conversion does not map; supported: "
                f"model.layers.N.{{{', '.join(MODULES)}}}"
            )
        if set(pair) != {"A", "B"}:
            raise AdapterError(f"the adapter at {folder} has lora_{''.join(pair)} for {peft_name} but not its pair")
        a_shape, b_shape = header[pair["A"]]["shape"], header[pair["B"]]["shape"]
        r, in_features = a_shape
        out_features = b_shape[0]
        if b_shape[1] != r:
            raise AdapterError(f"{peft_name}: lora_A is {a_shape} and lora_B {b_shape}; their ranks differ")
        layer, kind = int(where["layer"]), where["kind"]
        if layers is not None and layer >= layers:
            raise AdapterError(f"the adapter adapts layer {layer}, but its base model has {layers} layers")
        if kind in expected and expected[kind] != (in_features, out_features):
            raise AdapterError(
                f"{peft_name} is {in_features} -> {out_features} in the adapter at {folder} but "
                f"{expected[kind][0]} -> {expected[kind][1]} in its base model: it was trained on another model"
            )
        configured = _pattern_value(config.get("rank_pattern") or {}, peft_name, rank)
        if configured != r:
            raise AdapterError(f"{peft_name} has rank {r} in {WEIGHTS_FILE} but {configured} in {CONFIG_FILE}")
        module_alpha = float(_pattern_value(config.get("alpha_pattern") or {}, peft_name, alpha))
        modules.append(
            LoraModule(
                name=f"blk.{layer}.{MODULES[kind]}.weight",
                peft_name=peft_name,
                rank=r,
                in_features=in_features,
                out_features=out_features,
                scaling=module_alpha / (math.sqrt(r) if rslora else r),
                a_key=pair["A"],
                b_key=pair["B"],
            )
        )
    order = list(MODULES.values())
    modules.sort(key=lambda m: (int(m.name.split(".")[1]), order.index(m.name.split(".")[2])))
    return tuple(modules)


def _cached_path(folder: Path) -> Path:
    """Beside the adapter's weights; under the cache when the folder is not writable (a hub snapshot, say)."""
    if os.access(folder, os.W_OK):
        return folder / ADAPTER_FILE
    from samner_dspy.serving.embedded import cache_dir

    digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:12]
    return cache_dir().parent / "adapters" / f"{folder.name}-{digest}.gguf"
