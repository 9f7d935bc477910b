"""LoRA fine-tuning on the CPU: a tiny Llama built offline learns from builder output, saves, reloads, resumes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from samner_dspy.errors import SamnerError
from samner_dspy.training.builders import build, read_examples
from samner_dspy.training.finetune import IGNORE_INDEX, TrainConfig, encode
from samner_dspy.training.serve import plan
from samner_dspy.training.sources import iter_records
from tests.conftest import require

IEPILE = Path(__file__).parent / "fixtures" / "training" / "iepile-ner.json"


@pytest.fixture(scope="module")
def train_extra():
    for name in ("torch", "transformers", "peft", "datasets"):
        require(importlib.util.find_spec(name) is not None, f"{name} (the 'train' extra)")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, train_extra):
    """Archetype training data from the IEPile fixture, and a tiny chat model whose tokenizer knows its text."""
    from tests.tiny_model import build_tiny_model

    folder = tmp_path_factory.mktemp("tiny")
    data = folder / "archetype.jsonl"
    build("archetype", iter_records(IEPILE), data)
    texts = [message["content"] for messages in read_examples(data) for message in messages]
    return data, build_tiny_model(folder / "base", texts)


def test_only_the_answer_tokens_carry_loss(tiny):
    from samner_dspy.training.finetune import load_tokenizer

    data, base = tiny
    tokenizer = load_tokenizer(str(base))
    messages = next(read_examples(data))
    encoded = encode(tokenizer, messages, cutoff_len=4096)
    assert isinstance(encoded, dict)
    answer = [token for token, label in zip(encoded["input_ids"], encoded["labels"], strict=True) if label != -100]
    prompt_length = encoded["labels"].index(next(label for label in encoded["labels"] if label != IGNORE_INDEX))
    assert all(label == IGNORE_INDEX for label in encoded["labels"][:prompt_length])
    assert tokenizer.decode(answer) == messages[-1]["content"] + "<|end|>\n", "the answer and its end-of-turn"
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    assert tokenizer.decode(encoded["input_ids"][:prompt_length]) == prompt
    assert encode(tokenizer, messages, cutoff_len=prompt_length) == f"longer than cutoff_len ({prompt_length} tokens)"


def test_paper_hyperparameters_are_the_defaults():
    explorer = TrainConfig("explorer", "d.jsonl", "m", "out")
    archetype = TrainConfig("archetype", "d.jsonl", "m", "out")
    assert (explorer.rank, explorer.alpha, explorer.cutoff_len) == (8, 16, 1024)
    assert (explorer.batch_size, explorer.grad_accum, explorer.epochs) == (2, 8, 3.0)
    assert (explorer.scheduler, explorer.warmup_ratio, explorer.bf16) == ("cosine", 0.05, None)  # bf16 where native
    assert (explorer.lr, archetype.lr) == (2e-5, 3e-5)
    assert TrainConfig("archetype", "d", "m", "o", learning_rate=1e-3).lr == 1e-3


def test_lora_training_lowers_the_loss_saves_reloads_and_resumes(tiny, tmp_path, capsys):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from samner_dspy.training.finetune import PadCollator, answer_loss, load_tokenizer, train

    data, base = tiny
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two cores, possibly shared with a llama.cpp server: oversubscription is 20x slower
    try:
        tokenizer = load_tokenizer(str(base))
        fixed = PadCollator(tokenizer.pad_token_id)([encode(tokenizer, m, 4096) for m in list(read_examples(data))[:2]])
        before = answer_loss(AutoModelForCausalLM.from_pretrained(base), fixed)

        output = tmp_path / "adapter"
        options = dict(learning_rate=1e-2, grad_accum=1, save_steps=10, logging_steps=2, bf16=False, warmup_ratio=0.0)
        config = TrainConfig("archetype", str(data), str(base), str(output), max_steps=20, cutoff_len=4096, **options)
        first = train(config)
        assert first.global_step == 20 and first.resumed_from is None and first.examples == 5
        adapter_config = json.loads((output / "adapter_config.json").read_text())
        assert adapter_config["base_model_name_or_path"] == str(base) and adapter_config["r"] == 8
        assert (output / "adapter_model.safetensors").is_file()

        reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), output)
        after = answer_loss(reloaded, fixed)
        with capsys.disabled():
            curve = " ".join(f"{step}:{loss:.3f}" for step, loss in first.losses)
            print(f"\nloss on a fixed batch: {before:.3f} -> {after:.3f}; training loss by step: {curve}")
        assert after < before - 0.2

        served = plan(str(output), str(output), anchor=str(output), base_model=str(base))
        assert (
            f"explorer={output}" in served.command
            and served.command[served.command.index("--max-lora-rank") + 1] == "8"
        )

        resumed = train(
            TrainConfig("archetype", str(data), str(base), str(output), max_steps=24, cutoff_len=4096, **options)
        )
        assert resumed.resumed_from is not None and resumed.resumed_from.endswith("checkpoint-20")
        assert resumed.global_step == 24
        assert [step for step, _ in resumed.losses if step > 20] == [22, 24], "resumed at step 21, not step 1"
    finally:
        torch.set_num_threads(threads)


def test_a_file_with_no_usable_example_is_an_error(tiny, tmp_path):
    from samner_dspy.errors import SamnerError
    from samner_dspy.training.finetune import train

    data, base = tiny
    with pytest.raises(SamnerError, match=r"no usable example.*cutoff_len"):
        train(TrainConfig("archetype", str(data), str(base), str(tmp_path / "a"), cutoff_len=16, bf16=False))


def test_samner_train_command_passes_every_option_through(tiny, tmp_path, capsys):
    import torch

    from samner_dspy.cli import main

    data, base = tiny
    output = tmp_path / "cli-adapter"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(
            f"train archetype --data {data} --base-model {base} -o {output} --rank 4 --alpha 8 --max-steps 2 "
            "--no-bf16 --grad-accum 1 --cutoff-len 4096 --logging-steps 1 --save-steps 1 --learning-rate 1e-3 "
            "--target-modules q_proj,v_proj".split()
        )
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    printed = capsys.readouterr().out
    assert "trained archetype adapter: 2 steps on 5 examples" in printed and "loss: 1:" in printed
    adapter_config = json.loads((output / "adapter_config.json").read_text())
    assert (adapter_config["r"], adapter_config["lora_alpha"]) == (4, 8)
    assert sorted(adapter_config["target_modules"]) == ["q_proj", "v_proj"]
    summary = json.loads((output / "samner_training.json").read_text())
    assert summary["config"]["learning_rate"] == 1e-3 and summary["config"]["bf16"] is False


def test_top_layers_puts_lora_on_the_last_layers_only(tiny, tmp_path):
    from samner_dspy.training.finetune import load_lora_model

    data, base = tiny
    every = load_lora_model(TrainConfig("archetype", str(data), str(base), str(tmp_path / "a")))
    top = load_lora_model(TrainConfig("archetype", str(data), str(base), str(tmp_path / "b"), top_layers=1))
    count = top.base_model.model.config.num_hidden_layers

    def layers(model):
        return {int(name.split(".layers.")[1].split(".")[0]) for name, _ in model.named_parameters() if "lora_" in name}

    assert layers(every) == set(range(count)) and count > 1
    assert layers(top) == {count - 1}
    with pytest.raises(SamnerError, match="top_layers must be positive"):
        TrainConfig("archetype", "d", "m", "o", top_layers=0)


def test_every_checkpoint_is_exported_and_a_new_run_can_start_from_the_export(tiny, tmp_path):
    """A run whose machine is lost: its exported adapter (committed) starts the next run, on a new output folder."""
    import torch
    from safetensors.torch import load_file

    from samner_dspy.cli import main

    data, base = tiny
    export = tmp_path / "adapters" / "archetype"
    common = f"train archetype --data {data} --base-model {base} --no-bf16 --grad-accum 1 --logging-steps 1 "
    common += "--save-steps 2 --target-modules q_proj,v_proj --rank 4"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        first = [*common.split(), "-o", str(tmp_path / "first"), "--max-steps", "4", "--learning-rate", "1e-2"]
        export.mkdir(parents=True)
        (export / "README.md").write_text("# the model card\n", encoding="utf-8")
        assert main([*first, "--export-dir", str(export)]) == 0
        assert (export / "README.md").read_text(encoding="utf-8") == "# the model card\n", "the card survives"
        progress = json.loads((export / "samner_training_progress.json").read_text())
        assert (progress["global_step"], [step for step, _ in progress["losses"]]) == (4, [1, 2, 3, 4])
        throughput = progress["throughput"]
        assert throughput["steps"] == 4 and throughput["seconds"] > 0 and throughput["threads"] == 1
        assert throughput["tokens"] > 4, "tokens read are counted"
        assert throughput["tokens_per_second"] == pytest.approx(throughput["tokens"] / throughput["seconds"], rel=0.25)
        exported = load_file(export / "adapter_model.safetensors")
        assert exported.keys() == load_file(tmp_path / "first" / "adapter_model.safetensors").keys()
        second = tmp_path / "second"  # a step too small to move the weights: they are where the run started
        again = [*common.split(), "-o", str(second), "--max-steps", "1", "--learning-rate", "1e-12"]
        assert main([*again, "--init-adapter", str(export)]) == 0
    finally:
        torch.set_num_threads(threads)
    started = load_file(second / "adapter_model.safetensors")
    assert any(v.abs().sum() > 0 for k, v in exported.items() if "lora_B" in k), "trained: B is no longer zero"
    assert all(torch.allclose(started[k], exported[k], atol=1e-6) for k in exported)


def test_the_lm_head_runs_on_answer_positions_only_and_the_loss_is_the_same(tiny, tmp_path):
    import torch
    from transformers import Trainer, TrainingArguments

    from samner_dspy.training.builders import read_examples
    from samner_dspy.training.finetune import (
        PadCollator,
        answer_only_trainer,
        encode,
        load_lora_model,
        load_tokenizer,
    )

    data, base = tiny
    model = load_lora_model(TrainConfig("archetype", str(data), str(base), str(tmp_path / "a"), bf16=False))
    tokenizer = load_tokenizer(str(base))
    batch = PadCollator(tokenizer.pad_token_id)([encode(tokenizer, m, 4096) for m in list(read_examples(data))[:2]])
    args = TrainingArguments(output_dir=str(tmp_path / "t"), use_cpu=True, report_to="none")
    trainer = answer_only_trainer(Trainer)(model=model, args=args)
    assert trainer.answer_only
    head = model.get_base_model().lm_head
    seen: list[int] = []
    handle = head.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[1]))
    try:
        answer_only = trainer.compute_loss(model, batch)
        answer_only.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad()
        full = model(**batch).loss
        full.backward()
    finally:
        handle.remove()
    width = batch["input_ids"].shape[1]
    assert seen[0] < width / 2 and seen[1] == width, "the head saw the answer positions, then every position"
    assert torch.allclose(answer_only, full, atol=1e-5), (answer_only, full)
    assert grads and all(torch.allclose(grads[n], p.grad, atol=1e-5) for n, p in model.named_parameters() if n in grads)


def test_samner_train_has_an_option_for_every_training_setting():
    """``samner train`` fills TrainConfig by field name: a setting without an option of its name would silently
    keep its default."""
    from dataclasses import fields

    from samner_dspy.cli import build_parser
    from samner_dspy.training.finetune import TrainConfig

    args = build_parser().parse_args(["train", "archetype", "--data", "x.jsonl", "--base-model", "m"])
    missing = [f.name for f in fields(TrainConfig) if not hasattr(args, f.name)]
    assert missing == ["resume"], "only resume is spelt otherwise (--no-resume)"
    assert hasattr(args, "no_resume")


def test_an_unfinished_run_continues_from_its_export_at_its_step_schedule_and_data_position(
    tiny, tmp_path, monkeypatch
):
    """A machine lost at step 2 of 4: a new machine with only the export finishes the same run, not a new one."""
    import torch

    from samner_dspy.training import finetune

    data, base = tiny
    options = dict(learning_rate=1e-2, grad_accum=1, save_steps=2, logging_steps=1, bf16=False, warmup_ratio=0.0)

    def run(output: str, **changes: object) -> finetune.TrainResult:
        settings = {**options, "export_dir": str(tmp_path / "export"), "init_adapter": str(tmp_path / "export")}
        settings.update(changes)
        return finetune.train(
            TrainConfig(
                "archetype", str(data), str(base), str(tmp_path / output), max_steps=4, cutoff_len=4096, **settings
            )
        )

    def history(output: str) -> dict[int, dict]:
        state = json.loads((tmp_path / output / "checkpoint-4" / "trainer_state.json").read_text())
        return {entry["step"]: entry for entry in state["log_history"] if "loss" in entry}

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        whole = run("whole", export_dir=None, init_adapter=None)
        assert whole.global_step == 4
        exporting = finetune.export_adapter

        def lost_after_first_save(config, digest):  # the machine is lost right after step 2's checkpoint
            callback = exporting(config, digest)
            save = callback.on_save

            def on_save(args, state, control, **kwargs):
                save(args, state, control, **kwargs)
                control.should_training_stop = True

            callback.on_save = on_save
            return callback

        monkeypatch.setattr(finetune, "export_adapter", lost_after_first_save)
        assert run("lost", init_adapter=None).global_step == 2
        monkeypatch.undo()
        progress = json.loads((tmp_path / "export" / "samner_training_progress.json").read_text())
        assert progress["global_step"] == 2 and progress["data_sha256"] == finetune.data_digest(data)

        continued = run("new-machine")
    finally:
        torch.set_num_threads(threads)
    assert continued.resumed_from.endswith("checkpoint-2") and continued.global_step == 4
    assert [step for step, _ in continued.losses] == [1, 2, 3, 4], "the export's losses are kept"
    ours, theirs = history("new-machine"), history("whole")
    # Step 3 starts from step 2's weights: the same batch and the same learning rate give the same loss.
    assert ours[3]["loss"] == pytest.approx(theirs[3]["loss"], rel=1e-4)
    assert ours[3]["learning_rate"] == pytest.approx(theirs[3]["learning_rate"])
    assert theirs[3]["learning_rate"] < theirs[1]["learning_rate"], "a restarted schedule would be told apart"


def test_an_export_of_other_settings_or_data_only_warm_starts_a_new_run(tiny, tmp_path):
    import torch

    from samner_dspy.training.finetune import train

    data, base = tiny
    export = tmp_path / "export"
    options = dict(grad_accum=1, save_steps=2, logging_steps=1, bf16=False, cutoff_len=4096, max_steps=4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        first = TrainConfig("archetype", str(data), str(base), str(tmp_path / "a"), export_dir=str(export), **options)
        train(TrainConfig(**{**first.__dict__, "max_steps": 2}))  # finished: 2 of 2
        unfinished = json.loads((export / "samner_training_progress.json").read_text())
        unfinished["max_steps"] = 4  # as if stopped halfway through a 4-step run
        other_data = tmp_path / "other.jsonl"
        other_data.write_text(Path(data).read_text() + Path(data).read_text().splitlines(True)[0])
        for name, changes in {"b": {"learning_rate": 5e-3}, "c": {"data": str(other_data)}}.items():
            (export / "samner_training_progress.json").write_text(json.dumps(unfinished))
            config = TrainConfig(
                **{
                    **first.__dict__,
                    "output_dir": str(tmp_path / name),
                    "init_adapter": str(export),
                    "export_dir": None,
                    **changes,
                }
            )
            result = train(config)
            assert result.resumed_from is None and result.global_step == 4, name
    finally:
        torch.set_num_threads(threads)
