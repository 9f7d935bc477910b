"""Continue an unfinished training run on a new machine from its exported adapter.

Sessions here stop at 180 minutes and a machine can be lost with its checkpoints; what survives is the small
export folder (adapter and progress file) committed to the repository. Restarting from that adapter alone would
train the first steps' examples again under a fresh warmup. When the export's progress says it is the same run
(same settings, same data file) and unfinished, we write a checkpoint in the trainer's own layout from it, so the
trainer resumes where the export stopped: the step count, the learning-rate schedule and the data position are
restored. Adam's moment estimates are not exported (they would triple the committed size), so they start again
from zero at the continued step: its first updates are sign-like and full-size, as at the start of any run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from samner_dspy.serving.gguf_lora import CONFIG_FILE, WEIGHTS_FILE

if TYPE_CHECKING:
    from samner_dspy.training.finetune import TrainConfig

PROGRESS_FILE = "samner_training_progress.json"
BOOKKEEPING = {
    "output_dir",
    "export_dir",
    "init_adapter",
    "resume",
    "save_steps",
    "save_total_limit",
    "logging_steps",
    "bf16",
}
"""Settings that say where a run writes, how often, and how the base model computes (bf16 where the new machine
has it natively; the LoRA weights stay float32), not what it learns: a continued run may change them."""


def data_digest(path: str | Path) -> str:
    """The training file's SHA-256: a run continues only on the very examples it started on."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_settings(config: TrainConfig) -> dict[str, Any]:
    """What the progress file records of a run, and what a continuation must share (less ``BOOKKEEPING``)."""
    return {**asdict(config), "learning_rate": config.lr, "bf16": config.uses_bf16}


def continuable(config: TrainConfig, digest: str) -> dict[str, Any] | None:
    """The progress of ``config.init_adapter`` when it is an unfinished run of these settings on this data."""
    if not config.init_adapter:
        return None
    path = Path(config.init_adapter) / PROGRESS_FILE
    if not path.is_file():
        return None
    progress = json.loads(path.read_text(encoding="utf-8"))
    theirs, ours = progress.get("config", {}), run_settings(config)
    same = all(theirs.get(key) == value for key, value in ours.items() if key not in BOOKKEEPING)
    unfinished = 0 < progress.get("global_step", 0) < progress.get("max_steps", 0)
    return progress if same and unfinished and progress.get("data_sha256") == digest else None


def write_checkpoint(trainer: Any, config: TrainConfig, progress: dict[str, Any]) -> str:
    """A checkpoint folder in ``config.output_dir`` at the export's step, in the layout ``Trainer`` resumes from."""
    import torch
    from transformers.trainer_callback import ExportableState, TrainerState

    step, max_steps = int(progress["global_step"]), int(progress["max_steps"])
    folder = Path(config.output_dir) / f"checkpoint-{step}"
    folder.mkdir(parents=True, exist_ok=True)
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        shutil.copy2(Path(config.init_adapter or "") / name, folder / name)
    trainer.create_optimizer_and_scheduler(num_training_steps=max_steps)
    with warnings.catch_warnings():  # stepping a schedule with no optimizer step is what we mean here
        warnings.simplefilter("ignore")
        for _ in range(step):
            trainer.lr_scheduler.step()
    torch.save(trainer.optimizer.state_dict(), folder / "optimizer.pt")  # no moments: they were not exported
    torch.save(trainer.lr_scheduler.state_dict(), folder / "scheduler.pt")
    trainer.optimizer, trainer.lr_scheduler = None, None  # the trainer builds its own and loads the files above
    state = TrainerState(
        global_step=step,
        max_steps=max_steps,
        logging_steps=config.logging_steps,
        save_steps=config.save_steps,
        train_batch_size=config.batch_size,
        log_history=[{"step": s, "loss": loss} for s, loss in progress.get("losses", [])],
        stateful_callbacks=[  # as the trainer lists them in its own checkpoints, which it checks on resuming
            callback
            for callback in [*trainer.callback_handler.callbacks, trainer.control]
            if isinstance(callback, ExportableState)
        ],
    )
    state.save_to_json(str(folder / "trainer_state.json"))
    return str(folder)
