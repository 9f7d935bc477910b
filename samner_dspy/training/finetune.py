"""LoRA fine-tuning of the explorer and the archetype classifier on any causal LM (transformers + peft).

The defaults are the paper's (appendix D, trained there with LLaMA-Factory): rank 8, alpha 16, cutoff
1024 tokens, batch 2 with 8 steps of gradient accumulation, learning rate 2e-5 (explorer) or 3e-5
(archetype), 3 epochs, cosine schedule, warmup ratio 0.05, bf16 (here only where the machine computes it natively,
float32 elsewhere: :func:`samner_dspy.serving.hardware.fast_dtype`). Every one can be overridden. Where the
paper is silent we use LLaMA-Factory's defaults: LoRA on every linear layer, no LoRA dropout.

Each example is rendered with the base model's own chat template, as vLLM renders the request at
inference, and only the answer's tokens carry loss. Checkpoints are written every ``save_steps``; a
rerun with the same output folder resumes from the last one.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from samner_dspy.errors import SamnerError
from samner_dspy.serving.hardware import fast_dtype
from samner_dspy.training.continuation import PROGRESS_FILE, continuable, data_digest, run_settings, write_checkpoint

Stage = Literal["explorer", "anchor", "archetype"]
PAPER_LEARNING_RATES: dict[str, float] = {"explorer": 2e-5, "anchor": 2e-5, "archetype": 3e-5}
"""The paper trains no anchor (it serves IEPile's published LoRA): an anchor trained here takes the explorer's."""
SUMMARY_FILE = "samner_training.json"
IGNORE_INDEX = -100


@dataclass(frozen=True)
class TrainConfig:
    """One fine-tuning run; ``learning_rate=None`` takes the paper's rate for the stage."""

    stage: Stage
    data: str
    base_model: str
    output_dir: str
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: str = "all-linear"
    """``all-linear`` or a comma-separated list of module names, e.g. ``q_proj,v_proj``."""
    cutoff_len: int = 1024
    batch_size: int = 2
    grad_accum: int = 8
    learning_rate: float | None = None
    epochs: float = 3.0
    scheduler: str = "cosine"
    warmup_ratio: float = 0.05
    bf16: bool | None = None
    """None: bf16 where it is native (a GPU that has it, an AVX-512 or Arm BF16 CPU), float32 elsewhere."""
    max_steps: int = -1
    """Stop after this many optimizer steps (-1: run the epochs)."""
    save_steps: int = 500
    save_total_limit: int | None = 3
    logging_steps: int = 10
    seed: int = 42
    resume: bool = True
    gradient_checkpointing: bool = False
    top_layers: int | None = None
    export_dir: str | None = None
    """At every checkpoint the adapter (and the losses so far) is also saved here: a small folder to commit, so a
    run on a machine that is lost can start again from what it had learnt (see ``init_adapter``)."""
    init_adapter: str | None = None
    """Start from this adapter's weights instead of fresh ones, when ``output_dir`` holds no checkpoint to resume.
    When its progress file shows an unfinished run of the same settings on the same data, that run continues at
    its step (:mod:`samner_dspy.training.continuation`); otherwise a new run starts from the weights."""
    """LoRA on the last N transformer layers only (None: every layer). Backpropagation then stops below them, so a
    step costs less: the forward pass is unchanged, the backward pass shrinks with N."""

    def __post_init__(self) -> None:
        if self.stage not in PAPER_LEARNING_RATES:
            raise SamnerError(f"stage must be one of {', '.join(PAPER_LEARNING_RATES)}, got {self.stage!r}")
        if self.top_layers is not None and self.top_layers <= 0:
            raise SamnerError(f"top_layers must be positive, got {self.top_layers}")
        for name in ("rank", "alpha", "cutoff_len", "batch_size", "grad_accum", "save_steps", "logging_steps"):
            if getattr(self, name) <= 0:
                raise SamnerError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else PAPER_LEARNING_RATES[self.stage]

    @property
    def uses_bf16(self) -> bool:
        if self.bf16 is not None:
            return self.bf16
        import torch

        if torch.cuda.is_available():
            return torch.cuda.is_bf16_supported()
        return fast_dtype() == "bfloat16"


@dataclass
class TrainResult:
    output_dir: str
    examples: int
    skipped: dict[str, int]
    global_step: int
    resumed_from: str | None
    losses: list[tuple[int, float]] = field(default_factory=list)
    """(step, training loss) as logged every ``logging_steps``."""
    seconds: float = 0.0


def encode(tokenizer: Any, messages: list[dict[str, str]], cutoff_len: int) -> dict[str, list[int]] | str:
    """Token ids and labels of one chat example, or the reason it cannot be used.

    The prompt is what the chat template renders with a generation prompt, tokenized on its own as the
    server does; the answer is the rest of the rendered conversation (content plus end-of-turn tokens).
    """
    if not messages or messages[-1].get("role") != "assistant":
        return "the last message is not the assistant's answer"
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        return "the chat template does not render the prompt as the start of the conversation"
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
    if not answer_ids:
        return "empty answer"
    if len(prompt_ids) + len(answer_ids) > cutoff_len:
        return f"longer than cutoff_len ({cutoff_len} tokens)"
    return {"input_ids": prompt_ids + answer_ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + answer_ids}


class PadCollator:
    """Right-pads ids with the pad token and labels with -100, and masks the padding."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        ids, labels, mask = [], [], []
        for f in features:
            padding = width - len(f["input_ids"])
            ids.append(list(f["input_ids"]) + [self.pad_token_id] * padding)
            labels.append(list(f["labels"]) + [IGNORE_INDEX] * padding)
            mask.append([1] * len(f["input_ids"]) + [0] * padding)
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}


def load_tokenizer(base_model: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if not getattr(tokenizer, "chat_template", None):
        raise SamnerError(
            f"{base_model} has no chat template: SAM-NER's stages send chat requests, so train an instruct model "
            "(or set tokenizer.chat_template in the model folder)"
        )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tokenized_dataset(config: TrainConfig, tokenizer: Any) -> tuple[Any, Counter[str]]:
    """The training file tokenized (cached by ``datasets``), with the count of examples left out and why."""
    from datasets import load_dataset

    if not Path(config.data).is_file():
        raise SamnerError(f"training file {config.data!r} does not exist (build one with `samner build`)")
    raw = load_dataset("json", data_files=config.data, split="train")
    if "messages" not in raw.column_names:
        raise SamnerError(f"{config.data} has no 'messages' field: expected chat-format JSON Lines")

    def one(example: dict[str, Any]) -> dict[str, Any]:
        encoded = encode(tokenizer, example["messages"], config.cutoff_len)
        if isinstance(encoded, str):
            return {"input_ids": [], "labels": [], "skip": encoded}
        return {**encoded, "skip": ""}

    mapped = raw.map(one, remove_columns=raw.column_names, desc="tokenizing")
    skipped = Counter(reason for reason in mapped["skip"] if reason)
    kept = mapped.filter(lambda example: not example["skip"]).remove_columns("skip")
    if len(kept) == 0:
        raise SamnerError(f"no usable example in {config.data}: {dict(skipped)}")
    return kept, skipped


def last_checkpoint(output_dir: str | Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(output_dir)) if Path(output_dir).is_dir() else None


def _training_arguments(config: TrainConfig) -> Any:
    import inspect

    import torch
    from transformers import TrainingArguments

    accepted = inspect.signature(TrainingArguments.__init__).parameters
    # transformers 5 folds warmup_ratio into a fractional warmup_steps; 4.x has both.
    warmup = (
        {"warmup_ratio": config.warmup_ratio} if "warmup_ratio" in accepted else {"warmup_steps": config.warmup_ratio}
    )
    return TrainingArguments(
        output_dir=config.output_dir,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.lr,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        lr_scheduler_type=config.scheduler,
        bf16=config.uses_bf16,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        report_to="none",
        remove_unused_columns=False,
        dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=True,
        # Tokens the model read (padding left out), for the throughput the progress file reports.
        **({"include_num_input_tokens_seen": "non_padding"} if "include_num_input_tokens_seen" in accepted else {}),
        **warmup,
        **({"gradient_checkpointing": True} if config.gradient_checkpointing else {}),
        # Without a GPU, transformers refuses bf16 unless told the CPU is meant.
        **({"use_cpu": True} if "use_cpu" in accepted and not _has_accelerator(torch) else {}),
    )


def _has_accelerator(torch: Any) -> bool:
    mps = getattr(torch.backends, "mps", None)
    return torch.cuda.is_available() or bool(mps and mps.is_available())


def load_lora_model(config: TrainConfig, warm_start: bool = True) -> Any:
    """The base model with fresh LoRA weights, or ``config.init_adapter``'s when ``warm_start`` (adapter weights
    are kept in float32 by peft)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from torch.nn import Linear
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if config.uses_bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(config.base_model, dtype=dtype)
    if config.gradient_checkpointing:
        model.enable_input_require_grads()
    targets: str | list[str] = config.target_modules
    if targets != "all-linear":
        targets = [name.strip() for name in targets.split(",") if name.strip()]
    layers: dict[str, Any] = {}
    if config.top_layers is not None:
        count = model.config.num_hidden_layers
        layers = {"layers_to_transform": list(range(max(count - config.top_layers, 0), count))}
        if targets == "all-linear":  # peft takes a layer subset only with module names: every linear one in a layer
            linear = (name for name, module in model.named_modules() if isinstance(module, Linear))
            targets = sorted({name.rsplit(".", 1)[-1] for name in linear if ".layers." in name})
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
        **layers,
    )
    if warm_start and config.init_adapter:
        from peft import PeftModel

        return PeftModel.from_pretrained(model, config.init_adapter, is_trainable=True)
    return get_peft_model(model, lora)


def train(config: TrainConfig) -> TrainResult:
    """Fine-tune, save the adapter in ``output_dir`` (what ``samner serve`` and vLLM load), and summarise."""
    try:
        import torch  # noqa: F401
        from transformers import Trainer, set_seed
    except ImportError:
        raise SamnerError("training needs the 'train' extra: pip install 'samner-dspy[train]'") from None

    started = time.perf_counter()
    set_seed(config.seed)
    tokenizer = load_tokenizer(config.base_model)
    dataset, skipped = tokenized_dataset(config, tokenizer)
    digest = data_digest(config.data)
    resume_from = last_checkpoint(config.output_dir) if config.resume else None
    continued = continuable(config, digest) if config.resume and resume_from is None else None
    model = load_lora_model(config, warm_start=resume_from is None and continued is None)
    trainer = answer_only_trainer(Trainer)(
        model=model,
        args=_training_arguments(config),
        train_dataset=dataset,
        data_collator=PadCollator(tokenizer.pad_token_id),
        callbacks=[export_adapter(config, digest)] if config.export_dir else None,
    )
    if continued is not None:
        resume_from = write_checkpoint(trainer, config, continued)
    trainer.train(resume_from_checkpoint=resume_from)
    model.save_pretrained(config.output_dir)
    losses = [(int(entry["step"]), float(entry["loss"])) for entry in trainer.state.log_history if "loss" in entry]
    result = TrainResult(
        output_dir=config.output_dir,
        examples=len(dataset),
        skipped=dict(skipped),
        global_step=trainer.state.global_step,
        resumed_from=resume_from,
        losses=losses,
        seconds=time.perf_counter() - started,
    )
    summary = {"config": run_settings(config), "data_sha256": digest, "result": asdict(result)}
    (Path(config.output_dir) / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return result


def answer_only_trainer(trainer: type) -> type:
    """``trainer`` whose loss runs the LM head on the answer positions only.

    Only the answer's tokens carry loss, yet a causal LM's forward pass projects every position onto the
    vocabulary (151k entries for Qwen2.5, about a quarter of the 0.5B model's compute) and back-propagates
    through all of it. ``logits_to_keep`` asks the model for the positions that predict an answer token, so
    the prompt's positions never reach the head. The loss is each micro-batch's mean over its answer tokens
    (the trainer divides it over gradient accumulation); a model without ``logits_to_keep`` keeps the
    trainer's own loss.
    """
    import inspect

    import torch

    class AnswerOnlyTrainer(trainer):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            forward = inspect.signature(self.model.get_base_model().forward).parameters
            self.answer_only = "logits_to_keep" in forward
            if self.answer_only:
                self.model_accepts_loss_kwargs = False  # a per-batch mean: the trainer scales it for accumulation
                self.loss_is_scaled_for_ga = False

        def compute_loss(
            self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            if not self.answer_only:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            targets = inputs["labels"][:, 1:]  # the logits at position t predict token t + 1
            keep = (targets != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)
            outputs = model(
                input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"), logits_to_keep=keep
            )
            logits = outputs.logits.float()
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets[:, keep].reshape(-1), ignore_index=IGNORE_INDEX
            )
            return (loss, outputs) if return_outputs else loss

    return AnswerOnlyTrainer


def export_adapter(config: TrainConfig, digest: str) -> Any:
    """A Trainer callback: at every checkpoint, the adapter and the losses so far go to ``config.export_dir``, with
    what a continuation on another machine checks (the settings and the data file's ``digest``)."""
    from transformers import TrainerCallback

    class ExportAdapter(TrainerCallback):
        """Also measures this process's throughput: wall seconds and tokens read since its first step."""

        started: tuple[float, int, int] | None = None  # (time, global step, tokens seen) when this run began

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.started is None:
                self.started = (time.perf_counter(), state.global_step, state.num_input_tokens_seen or 0)

        def on_save(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            folder = Path(config.export_dir or "")
            folder.mkdir(parents=True, exist_ok=True)
            card = folder / "README.md"
            kept = card.read_text(encoding="utf-8") if card.is_file() else None
            model.save_pretrained(folder)  # peft writes its blank card template over README.md: keep the real card
            if kept is None:
                card.unlink(missing_ok=True)
            else:
                card.write_text(kept, encoding="utf-8")
            progress = {
                "config": run_settings(config),
                "data_sha256": digest,
                "global_step": state.global_step,
                "max_steps": state.max_steps,
                "losses": [(int(e["step"]), float(e["loss"])) for e in state.log_history if "loss" in e],
                "throughput": self.throughput(state),
            }
            (folder / PROGRESS_FILE).write_text(json.dumps(progress, indent=2) + "\n", encoding="utf-8")

        def throughput(self, state: Any) -> dict[str, Any] | None:
            if self.started is None:
                return None
            began, first_step, first_tokens = self.started
            seconds = time.perf_counter() - began
            steps, tokens = state.global_step - first_step, (state.num_input_tokens_seen or 0) - first_tokens
            return {
                "steps": steps,
                "seconds": round(seconds, 3),  # a tiny run takes well under a second: its rate must be checkable
                "seconds_per_step": round(seconds / steps, 1) if steps else None,
                "tokens": tokens,
                "tokens_per_second": round(tokens / seconds, 1) if seconds and tokens else None,
                "threads": _torch_threads(),
            }

    return ExportAdapter()


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def answer_loss(model: Any, batch: dict[str, Any]) -> float:
    """Mean loss over the answer tokens of a collated batch, for before/after comparisons."""
    import torch

    model.eval()
    with torch.no_grad():
        loss = model(**batch).loss.item()
    if not math.isfinite(loss):
        raise SamnerError(f"the loss is not finite ({loss})")
    return loss
