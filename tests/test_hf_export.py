"""``samner embedded export-hf``: the embedded GGUF as a Hugging Face folder, its provenance record, and reuse."""

from __future__ import annotations

import hashlib
import json

import pytest

from samner_dspy.cli import main
from samner_dspy.errors import EmbeddedModelError
from samner_dspy.serving.embedded import model_spec
from samner_dspy.serving.hf_export import FORMAT, PROVENANCE_FILE, export_hf, recorded_export


def fake_export(folder, sha256=None, dtype="bfloat16"):
    """A folder laid out as an export, with a record that matches it (the weights' bytes are never read)."""
    folder.mkdir(parents=True)
    files = {"config.json": b"{}", "model.safetensors": b"weights"}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    record = {
        "format": FORMAT,
        "gguf_sha256": sha256 or model_spec().sha256,
        "dtype": dtype,
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
        "sizes": {name: len(data) for name, data in files.items()},
    }
    (folder / PROVENANCE_FILE).write_text(json.dumps(record))
    return folder


def test_a_folder_matching_its_record_is_reused_without_loading_anything(tmp_path, monkeypatch):
    monkeypatch.setattr("samner_dspy.serving.hf_export._write_folder", lambda *a: pytest.fail("exported again"))
    folder = fake_export(tmp_path / "hf")
    exported = export_hf(folder)
    assert exported.reused and exported.folder == folder and set(exported.files) == {"config.json", "model.safetensors"}


@pytest.mark.parametrize(
    "damage",
    [
        lambda f: (f / "model.safetensors").write_bytes(b"cut"),
        lambda f: (f / "config.json").unlink(),
        lambda f: (f / PROVENANCE_FILE).write_text("{not json"),
    ],
)
def test_a_changed_or_missing_file_invalidates_the_record(tmp_path, damage):
    folder = fake_export(tmp_path / "hf")
    assert recorded_export(folder) is not None
    damage(folder)
    assert recorded_export(folder) is None


def test_a_record_of_another_gguf_or_dtype_is_exported_again(tmp_path, monkeypatch):
    written = []
    monkeypatch.setattr("samner_dspy.serving.hf_export._require_libraries", lambda: None)
    monkeypatch.setattr("samner_dspy.serving.hf_export.model_path", lambda name: tmp_path / "model.gguf")
    monkeypatch.setattr(
        "samner_dspy.serving.hf_export._write_folder", lambda gguf, staging, dtype: written.append(dtype) or (
            staging / "config.json").write_text("{}")
    )  # fmt: skip
    folder = fake_export(tmp_path / "hf", sha256="0" * 64)
    exported = export_hf(folder)
    assert not exported.reused and written == ["bfloat16"]
    record = json.loads((folder / PROVENANCE_FILE).read_text())
    assert record["gguf_sha256"] == model_spec().sha256 and list(record["files"]) == ["config.json"]
    assert not (folder / "model.safetensors").exists(), "the old export was replaced, not mixed in"
    assert export_hf(folder, dtype="float32").reused is False and written == ["bfloat16", "float32"]


def test_a_folder_of_other_files_is_refused_not_overwritten(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(EmbeddedModelError, match="holds files that are not an export of the embedded model"):
        export_hf(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


@pytest.mark.model
def test_the_exported_folder_is_a_chat_model_transformers_loads_and_its_record_holds(hf_base_model, capsys):
    from transformers import AutoConfig, AutoTokenizer

    record = json.loads((hf_base_model / PROVENANCE_FILE).read_text())
    assert record["gguf_sha256"] == model_spec().sha256 and record["dtype"] == "bfloat16"
    for name, digest in record["files"].items():
        assert hashlib.sha256((hf_base_model / name).read_bytes()).hexdigest() == digest, name
    config = AutoConfig.from_pretrained(hf_base_model)
    assert config.model_type == "qwen2" and "quantization_config" not in config.to_dict()
    tokenizer = AutoTokenizer.from_pretrained(hf_base_model)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith("<|im_start|>assistant\n")
    assert main(["embedded", "export-hf", str(hf_base_model)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(hf_base_model) and "reused (matches its record)" in captured.err
