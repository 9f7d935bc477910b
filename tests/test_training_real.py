"""LoRA training on the real base model (the embedded Qwen2.5-Coder-0.5B-Instruct as a Hugging Face folder):
a few steps on the builders' output lower the loss on the answer tokens, for both adapters ``samner train``
makes. (tests/test_vllm_real.py serves adapters trained the same way on vLLM.)"""

from __future__ import annotations

import pytest

from samner_dspy.serving.hardware import fast_dtype
from samner_dspy.training.builders import build, read_examples
from samner_dspy.training.finetune import PadCollator, TrainConfig, answer_loss, encode, load_tokenizer, train
from samner_dspy.training.sources import iter_records
from tests.vllm_stack import FIXTURES

pytestmark = pytest.mark.model


@pytest.mark.parametrize(("stage", "source"), [("explorer", "pile-ner.json"), ("archetype", "iepile-ner.json")])
def test_a_few_steps_on_the_real_model_lower_the_answer_loss(hf_base_model, tmp_path, stage, source, capsys):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    data = tmp_path / f"{stage}.jsonl"
    build(stage, iter_records(FIXTURES / source), data)
    tokenizer = load_tokenizer(str(hf_base_model))
    examples = list(read_examples(data))
    batch = PadCollator(tokenizer.pad_token_id)([encode(tokenizer, m, 1024) for m in examples[:2]])
    base = AutoModelForCausalLM.from_pretrained(hf_base_model, dtype=getattr(torch, fast_dtype()))
    before = answer_loss(base, batch)
    del base

    output = tmp_path / "adapter"
    options = dict(batch_size=1, grad_accum=1, learning_rate=2e-4, warmup_ratio=0.0, logging_steps=1, save_steps=100)
    result = train(TrainConfig(stage, str(data), str(hf_base_model), str(output), max_steps=6, **options))
    assert result.global_step == 6 and result.examples == len(examples)

    trained = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(hf_base_model, dtype=getattr(torch, fast_dtype())), output
    )
    after = answer_loss(trained, batch)
    with capsys.disabled():
        print(f"\n{stage} on the real 0.5B: answer loss {before:.3f} -> {after:.3f} in 6 steps, {result.seconds:.0f} s")
    assert after < before * 0.9, (before, after)
