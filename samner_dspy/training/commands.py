"""``samner build``, ``samner train`` and ``samner serve``; heavy libraries load only inside a handler."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from typing import Any

from samner_dspy.errors import SamnerError
from samner_dspy.formats.labelled import DATA_FORMATS


def require_train_extra() -> None:
    """Raise a clear error when the 'train' extra is missing."""
    import importlib.util

    missing = [name for name in ("torch", "transformers", "peft", "datasets") if importlib.util.find_spec(name) is None]
    if missing:
        raise SamnerError(f"missing {', '.join(missing)}: pip install 'samner-dspy[train]'")


def build_data(args: argparse.Namespace) -> int:
    from samner_dspy.training.builders import (
        build,
        default_source,
        labelled_input,
        labelled_mix,
        read_type_definitions,
        report_path,
    )
    from samner_dspy.training.sources import iter_records

    def progress(report: Any) -> None:
        print(f"{report.written} examples from {report.read} records", file=sys.stderr, flush=True)

    inputs = args.input or []
    formats = [args.format or labelled_input(path) for path in inputs]
    if inputs and all(formats):
        try:
            counts = [int(n) for n in args.per_input.split(",")] if args.per_input else None
        except ValueError:
            raise SamnerError(f"--per-input takes a count or one per input (800,250), got {args.per_input!r}") from None
        per_input = counts[0] if counts and len(counts) == 1 else counts
        records, pool = labelled_mix(list(zip(inputs, formats, strict=True)), per_input, args.seed)
        source, extra = ", ".join(inputs), {"type_pool": pool, "negatives": args.negatives}
        if args.type_definitions:
            extra["type_definitions"] = read_type_definitions(args.type_definitions)
    elif any(formats) or len(inputs) > 1:
        raise SamnerError("several --input files must all be labelled data (BIO, or --format jsonl/gliner/docbin)")
    elif args.kind == "anchor":
        raise SamnerError("anchor examples are built from labelled data: give -i FILE (BIO, or --format ...)")
    else:
        hub_id, hub_files = default_source(args.kind)
        source = inputs[0] if inputs else hub_id
        data_files = args.data_files or (hub_files if source == hub_id else None)
        records, extra = iter_records(source, data_files, args.split), {}
    report = build(
        args.kind,
        records,
        args.output,
        source=source,
        licence=args.licence or "",
        limit=args.limit,
        conditioning=args.conditioning,
        numeric=args.numeric,
        occurrences=args.occurrences,
        shuffle=not args.no_shuffle,
        seed=args.seed,
        progress=progress,
        **extra,
    )
    print(report.summary())
    print(f"{report.examples_per_second:.0f} examples/s; report: {report_path(args.output)}")
    return 0 if report.written else 1


def train_adapter(args: argparse.Namespace) -> int:
    require_train_extra()
    from samner_dspy.training.finetune import TrainConfig, train

    # The options are named as TrainConfig's fields; only the output folder's default and --no-resume differ.
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    config = TrainConfig(
        **{**given, "output_dir": args.output_dir or f"adapters/{args.stage}", "resume": not args.no_resume}
    )
    result = train(config)
    resumed = f" (resumed from {result.resumed_from})" if result.resumed_from else ""
    print(f"trained {config.stage} adapter: {result.global_step} steps on {result.examples} examples{resumed}")
    if result.skipped:
        print(f"left out: {json.dumps(result.skipped)}")
    print("loss: " + ", ".join(f"{step}:{loss:.4f}" for step, loss in result.losses))
    print(f"adapter: {config.output_dir}")
    return 0


def serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from samner_dspy.serving.vllm_server import interrupt_on_sigterm
    from samner_dspy.training import serve as serving

    extra = args.vllm_args[1:] if args.vllm_args[:1] == ["--"] else args.vllm_args
    serve_plan = serving.plan(
        args.explorer,
        args.archetype,
        anchor=args.anchor,
        base_model=args.base_model,
        host=args.host,
        port=args.port,
        max_lora_rank=args.max_lora_rank,
        tensor_parallel_size=args.tensor_parallel_size,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_model_len=args.max_model_len,
        kv_cache_gib=args.kv_cache_gib,
        extra_args=extra,
        check_base=not args.skip_base_check,
        download=args.download,
        dry_run=args.dry_run,
    )
    for warning in serve_plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.dry_run:
        print(f"# vLLM command ({serve_plan.build} build)")
        print(serve_plan.script(), end="")
        print("\n# samner.toml (pass it as --config, or set SAMNER_CONFIG)")
        print(serve_plan.config_toml, end="")
        return 0
    script, config = serving.write(serve_plan, args.output_dir)
    server = serving.server(serve_plan, Path(args.output_dir) / "vllm.log")
    print(f"wrote {script} and {config}; starting vLLM ({server.log_path})", flush=True)
    with interrupt_on_sigterm():
        try:
            server.start(args.start_timeout)
        except KeyboardInterrupt:
            print("stopped before vLLM was up", file=sys.stderr)
            return 130
        print(f"vLLM is serving {', '.join(serve_plan.models)} at {server.api_base}; Ctrl-C stops it")
        print(f"annotate with: samner annotate ... --config {config}\n")
        print(serve_plan.config_toml, end="", flush=True)
        code = server.wait()
    print("vLLM stopped", file=sys.stderr)
    return code


def add_adapter_arguments(parser: Any) -> None:
    """The base model and the three LoRAs, as ``samner serve`` and ``samner annotate --engine ray-vllm`` take them."""
    from samner_dspy.config import DEFAULT_BASE_MODEL
    from samner_dspy.training.serve import ANCHOR_ADAPTER

    no_lora = "'base' for none: the stage asks the base model itself"
    parser.add_argument("--explorer", default="adapters/explorer", help=f"the explorer adapter folder, or {no_lora}")
    parser.add_argument("--archetype", default="adapters/archetype", help=f"the archetype adapter folder, or {no_lora}")
    parser.add_argument("--anchor", default=ANCHOR_ADAPTER, help=f"a folder or hub id, or {no_lora}")
    parser.add_argument("--base-model", default=DEFAULT_BASE_MODEL)
    parser.add_argument("--max-lora-rank", type=int, help="default: the smallest vLLM rank that fits every adapter")
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--download", action="store_true", help="download hub adapters missing from the local cache")


def add_commands(commands: Any) -> None:
    """Register the three subcommands on ``samner``'s subparsers."""
    from samner_dspy.config import DEFAULT_BASE_MODEL

    data = commands.add_parser(
        "build", help="build chat-format training files for the anchor, explorer or archetype LoRA"
    )
    data.add_argument("kind", choices=("explorer", "anchor", "archetype"))  # builders.KINDS, without importing dspy
    data.add_argument(
        "-i",
        "--input",
        action="append",
        help="labelled data (BIO/CoNLL files; JSON Lines spans, GLiNER's JSON or a DocBin with --format; "
        "repeat for several), or one source of the public formats: a local JSON or JSON Lines file (.gz too), "
        "a dataset folder, or a hub id; default: Universal-NER/Pile-NER-type (explorer, anchor) or zjunlp/iepile "
        "(archetype)",
    )
    data.add_argument("--format", choices=DATA_FORMATS, help="read --input as labelled data of this format")
    data.add_argument(
        "--negatives",
        type=int,
        default=3,
        help="labelled data: absent types each example asks about too (answered with empty lists)",
    )
    data.add_argument(
        "--per-input",
        help="labelled data: a seeded sample of this many sentences with entities from each input (one count, "
        "or one per input: 800,250,100), shuffled together (default: every sentence, in file order)",
    )
    data.add_argument("--licence", help="the data's licence, recorded in the build report")
    data.add_argument("--data-files", help="files of a hub dataset to read (default for zjunlp/iepile: train.json)")
    data.add_argument("--split", default="train")
    data.add_argument("-o", "--output", required=True, help="the JSON Lines file to write (a report lands beside it)")
    data.add_argument("--limit", type=int, help="stop after writing this many examples")
    data.add_argument(
        "--conditioning",
        choices=("instance", "full", "types"),
        default="instance",
        help="archetype: show each example its projected schema (the paper) or all 14 archetypes; or, from "
        "labelled data, its own types with their definitions in the archetypes' place, answered with each "
        "mention's type (what calibration='matched' asks)",
    )
    data.add_argument(
        "--type-definitions",
        help="--conditioning types: a JSON file of type -> definition (or SLIMER's definitions.json); a type "
        "it lacks is defined by its name",
    )
    data.add_argument(
        "--numeric",
        choices=("drop", "misc"),
        default="drop",
        help="archetype: leave out dates, amounts and other numeric types (the authors' builder) or project them "
        "onto Misc",
    )
    data.add_argument(
        "--occurrences",
        choices=("each", "first", "every"),
        default="each",
        help="archetype: tag every occurrence under its own name ('Paris (2)' for a repeat), as the program asks "
        "at inference; the first occurrence only (the authors' builder); or every one under one name",
    )
    data.add_argument(
        "--no-shuffle", action="store_true", help="explorer: keep Pile-NER's order of types instead of shuffling"
    )
    data.add_argument("--seed", type=int, default=0, help="the seed of the types' shuffle and negative sampling")
    data.set_defaults(handler=build_data)

    fit = commands.add_parser("train", help="fine-tune a LoRA adapter (transformers + peft; paper defaults)")
    fit.add_argument("stage", choices=("explorer", "anchor", "archetype"))
    fit.add_argument("--data", required=True, help="a file written by `samner build`")
    fit.add_argument("--base-model", default=DEFAULT_BASE_MODEL, help=f"any causal LM (default {DEFAULT_BASE_MODEL})")
    fit.add_argument("-o", "--output-dir", help="adapter and checkpoints (default adapters/<stage>)")
    fit.add_argument("--rank", type=int, default=8)
    fit.add_argument("--alpha", type=int, default=16)
    fit.add_argument("--dropout", type=float, default=0.0)
    fit.add_argument("--target-modules", default="all-linear", help="all-linear, or names such as q_proj,v_proj")
    fit.add_argument("--cutoff-len", type=int, default=1024, help="longer examples are left out and counted")
    fit.add_argument("--batch-size", type=int, default=2)
    fit.add_argument("--grad-accum", type=int, default=8)
    fit.add_argument("--learning-rate", type=float, help="default 2e-5 (explorer, anchor) or 3e-5 (archetype)")
    fit.add_argument("--epochs", type=float, default=3.0)
    fit.add_argument("--scheduler", default="cosine")
    fit.add_argument("--warmup-ratio", type=float, default=0.05)
    fit.add_argument(
        "--bf16", action=argparse.BooleanOptionalAction, help="default: bf16 where the machine computes it natively"
    )
    fit.add_argument("--max-steps", type=int, default=-1)
    fit.add_argument("--save-steps", type=int, default=500)
    fit.add_argument("--logging-steps", type=int, default=10)
    fit.add_argument("--seed", type=int, default=42)
    fit.add_argument("--no-resume", action="store_true", help="start over even if checkpoints exist")
    fit.add_argument("--gradient-checkpointing", action="store_true")
    fit.add_argument("--top-layers", type=int, help="LoRA on the last N layers only: cheaper steps (default: all)")
    fit.add_argument("--save-total-limit", type=int, default=3, help="checkpoints kept in the output folder")
    fit.add_argument("--export-dir", help="also save the adapter here at every checkpoint (a small folder to commit)")
    fit.add_argument("--init-adapter", help="start from this adapter's weights when there is no checkpoint to resume")
    fit.set_defaults(handler=train_adapter)

    srv = commands.add_parser(
        "serve", help="check the adapters, start vLLM (CPU or CUDA build) and print the matching config"
    )
    add_adapter_arguments(srv)
    srv.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve other machines (add --api-key after --)")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--gpu-memory-utilization", type=float)
    srv.add_argument("--max-model-len", type=int, help="default on vLLM's CPU build: 4096")
    srv.add_argument("--kv-cache-gib", type=float, default=2.0, help="vLLM's CPU build: GiB of KV cache")
    srv.add_argument("--start-timeout", type=float, default=900.0, help="seconds to wait for vLLM to list its models")
    srv.add_argument("--output-dir", default="serve", help="where vllm-serve.sh and samner.toml are written")
    srv.add_argument("--dry-run", action="store_true", help="print the command and the configuration; start nothing")
    srv.add_argument("--skip-base-check", action="store_true", help="warn instead of failing on a base-model mismatch")
    srv.add_argument("vllm_args", nargs=argparse.REMAINDER, help="after --: more vLLM options, passed through")
    srv.set_defaults(handler=serve)
