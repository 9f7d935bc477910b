"""Training throughput of a stage's LoRA on the real embedded model, on this machine's CPU, side by side.

    python benchmarks/training_throughput.py --data work/sets/archetype.jsonl --examples 8 \
        --output benchmarks/results/training_throughput.jsonl

The first ``--examples`` examples of a built set (``samner build``; those over the 1,024-token cutoff are left
out, as in training), one optimizer step per example (an accumulated step costs the same per example), under
each configuration in turn, on the same examples in the same order: LoRA on every layer, and LoRA on the top 12
and top 6 layers only (``--top-layers``: backpropagation stops below them). Every configuration computes the
loss on answer tokens only and runs the LM head on answer positions only (the library's one training path), in
the float type this CPU computes fastest (``samner_dspy.serving.hardware``). Per configuration: seconds per
example and tokens read per second, from the training run's own progress record (model loading left out). One
JSON line per configuration goes to ``--output``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from samner_dspy.serving.hf_export import export_hf
from samner_dspy.training.finetune import PROGRESS_FILE, TrainConfig, train

CONFIGURATIONS = {"all layers": None, "top 12 layers": 12, "top 6 layers": 6}


def measure(name: str, top_layers: int | None, data: Path, args: argparse.Namespace, folder: Path) -> dict:
    config = TrainConfig(
        stage=args.stage,
        data=str(data),
        base_model=args.base_model or str(export_hf().folder),
        output_dir=str(folder / name.replace(" ", "-")),
        batch_size=1,
        grad_accum=1,
        epochs=1,
        save_steps=1,  # the progress record, and its throughput, is written at every save
        logging_steps=1,
        resume=False,
        top_layers=top_layers,
        export_dir=str(folder / name.replace(" ", "-") / "export"),
    )
    result = train(config)
    throughput = json.loads((Path(config.export_dir) / PROGRESS_FILE).read_text(encoding="utf-8"))["throughput"]
    return {
        "configuration": name,
        "top_layers": top_layers,
        "examples": result.examples,  # those of the first --examples that fit the cutoff
        "steps": result.global_step,
        "seconds_per_step": throughput["seconds_per_step"],
        "seconds_per_example": throughput["seconds_per_step"],  # one example a step
        "tokens_per_second": throughput["tokens_per_second"],
        "threads": throughput["threads"],
        "final_loss": result.losses[-1][1] if result.losses else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("work/sets/archetype.jsonl"), help="a built set")
    parser.add_argument("--stage", default="archetype", choices=("anchor", "explorer", "archetype"))
    parser.add_argument("--examples", type=int, default=8, help="examples each configuration trains on")
    parser.add_argument("--configs", default=",".join(CONFIGURATIONS), help="comma-separated, of: %(default)s")
    parser.add_argument("--base-model", help="the Hugging Face folder (default: the embedded model's export)")
    parser.add_argument("--output", type=Path, help="append one JSON line per configuration")
    args = parser.parse_args()
    lines = [line for line in args.data.read_text(encoding="utf-8").splitlines() if line.strip()][: args.examples]
    if len(lines) < args.examples:
        parser.error(f"{args.data} has {len(lines)} examples, fewer than --examples {args.examples}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "examples.jsonl"
        data.write_text("\n".join(lines) + "\n", encoding="utf-8")
        for name in args.configs.split(","):
            if name not in CONFIGURATIONS:
                parser.error(f"unknown configuration {name!r}; choose from {', '.join(CONFIGURATIONS)}")
            rows.append(measure(name, CONFIGURATIONS[name], data, args, Path(tmp)))
    print(f"{'configuration':<16} {'examples':>8} {'s/example':>10} {'tokens/s':>9} {'vs all layers':>14}")
    baseline = next((r["seconds_per_example"] for r in rows if r["top_layers"] is None), None)
    for row in rows:
        ratio = f"{baseline / row['seconds_per_example']:.2f}x" if baseline else "-"
        print(
            f"{row['configuration']:<16} {row['examples']:>8} {row['seconds_per_example']:>10} "
            f"{row['tokens_per_second']:>9} {ratio:>14}"
        )
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        with args.output.open("a", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps({**row, "data": str(args.data)}) + "\n")


if __name__ == "__main__":
    main()
