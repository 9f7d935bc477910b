"""The embedded GGUF model as a Hugging Face folder, which vLLM serves and ``samner train`` fine-tunes.

vLLM and peft want a Hugging Face model folder (config, tokenizer, chat template, safetensors), not
GGUF. transformers reads the GGUF (with the ``gguf`` package) and dequantises it; the model it returns is
still flagged as GGUF-quantised and ``save_pretrained`` refuses it, so the weights are moved into a fresh
model built from the same config without ``quantization_config`` and saved from there.

The folder records where it came from (:data:`PROVENANCE_FILE`: the GGUF's name and SHA-256, the dtype,
each written file's SHA-256), and a second export of the same GGUF into a folder that still matches its
record (every file it lists there, at its recorded size) is skipped: exporting takes a minute or more,
checking the record no time. A folder holding anything else is never overwritten.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from samner_dspy.errors import EmbeddedModelError
from samner_dspy.serving.embedded import cache_dir, model_path, model_spec

PROVENANCE_FILE = "samner_export.json"
FORMAT = 1
"""Bumped when the folder's layout changes, so an older export is redone rather than reused."""


@dataclass(frozen=True)
class Export:
    folder: Path
    model: str
    gguf_sha256: str
    dtype: str
    files: dict[str, str]
    """Written file name -> its SHA-256."""
    seconds: float
    reused: bool


def default_folder(model: str | None = None) -> Path:
    """``~/.cache/samner-dspy/hf/<model>`` (``$SAMNER_HOME`` moves it with the GGUF cache)."""
    return cache_dir().parent / "hf" / model_spec(model).name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def recorded_export(folder: str | os.PathLike[str]) -> dict | None:
    """The folder's provenance record, or None when it has none or a file it lists is missing or changed size."""
    folder = Path(folder)
    try:
        record = json.loads((folder / PROVENANCE_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    sizes = record.get("sizes", {})
    if record.get("format") != FORMAT or not sizes:
        return None
    if any(not (folder / name).is_file() or (folder / name).stat().st_size != size for name, size in sizes.items()):
        return None
    return record


def _require_libraries() -> None:
    missing = [
        name for name in ("torch", "transformers", "gguf", "accelerate") if importlib.util.find_spec(name) is None
    ]
    if missing:
        raise EmbeddedModelError(
            f"exporting the embedded model needs {', '.join(missing)}: pip install 'samner-dspy[train]'"
        )


def export_hf(
    folder: str | os.PathLike[str] | None = None, model: str | None = None, dtype: str = "bfloat16"
) -> Export:
    """Write the embedded model's Hugging Face folder (or reuse the one already there) and describe it."""
    spec = model_spec(model)
    target = Path(folder) if folder is not None else default_folder(spec.name)
    record = recorded_export(target)
    if record and record.get("gguf_sha256") == spec.sha256 and record.get("dtype") == dtype:
        return Export(target, spec.name, spec.sha256, dtype, record["files"], 0.0, reused=True)
    if target.is_dir() and any(target.iterdir()) and not (target / PROVENANCE_FILE).is_file():
        raise EmbeddedModelError(
            f"{target} holds files that are not an export of the embedded model: give a new folder"
        )
    _require_libraries()
    started = time.perf_counter()
    gguf = model_path(spec.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    staging.chmod(0o755)
    try:
        _write_folder(gguf, staging, dtype)
        files = {p.name: _sha256(p) for p in sorted(staging.iterdir()) if p.is_file()}
        provenance = {
            "format": FORMAT,
            "model": spec.name,
            "description": spec.description,
            "gguf_file": gguf.name,
            "gguf_sha256": spec.sha256,
            "dtype": dtype,
            "files": files,
            "sizes": {name: (staging / name).stat().st_size for name in files},
            "transformers": _version("transformers"),
        }
        (staging / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Export(target, spec.name, spec.sha256, dtype, files, time.perf_counter() - started, reused=False)


def _write_folder(gguf: Path, folder: Path, dtype: str) -> None:
    """Dequantise the GGUF with transformers and save config, tokenizer (with its chat template) and weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise EmbeddedModelError(f"unknown dtype {dtype!r}; use bfloat16, float16 or float32")
    source, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=name)
    if not getattr(tokenizer, "chat_template", None):
        raise EmbeddedModelError(f"{gguf} carries no chat template; the stages send chat requests")
    loaded = AutoModelForCausalLM.from_pretrained(source, gguf_file=name, dtype=torch_dtype)
    config = AutoConfig.from_pretrained(source, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.torch_dtype = torch_dtype
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    fresh.load_state_dict(loaded.state_dict(), assign=True, strict=True)
    fresh.tie_weights()
    fresh.generation_config = loaded.generation_config
    fresh.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def describe(export: Export) -> str:
    """One line for the CLI."""
    how = "reused (matches its record)" if export.reused else f"written in {export.seconds:.0f} s"
    size = sum((export.folder / name).stat().st_size for name in export.files) / 1e9
    return f"{export.folder}: {export.model} as {export.dtype} safetensors, {size:.2f} GB, {how}"
