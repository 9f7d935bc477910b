"""``samner``: annotate text from the command line and run the embedded model's server."""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

from samner_dspy.config import SamnerConfig
from samner_dspy.errors import SamnerError
from samner_dspy.formats.labelled import DATA_FORMATS
from samner_dspy.formats.records import RecordWriter, done_keys, json_lines, read_records
from samner_dspy.modes import CALIBRATION_MODES, CONSENSUS_MODES, DEFAULT_MAX_CHARS, DEFAULT_OVERLAP, PRESET_NAMES
from samner_dspy.schema import Schema
from samner_dspy.training.commands import add_adapter_arguments
from samner_dspy.types import Document


def _lines(args: argparse.Namespace) -> Iterator[str]:
    if args.file is not None and args.file != "-":
        path = Path(args.file)
        if not path.is_file():
            raise SamnerError(f"input file {args.file!r} does not exist")
        handle = path.open(encoding="utf-8")
    elif args.file == "-" or not sys.stdin.isatty():
        handle = sys.stdin
    else:
        raise SamnerError("give a text to annotate, --file FILE, or pipe text on stdin")
    with handle:
        yield from handle


def _texts(args: argparse.Namespace) -> Iterator[str]:
    """The inputs: the text argument, or one per line of a text file or stdin, or the ``text`` field of
    each line of a JSON Lines file (``*.jsonl``)."""
    if args.text is not None and args.file is None:
        yield args.text
        return
    if args.file is not None and args.file.endswith(".jsonl"):
        yield from (record["text"] for _, record in json_lines(_lines(args), args.file, need_text=True))
        return
    yield from (line.rstrip("\n") for line in _lines(args) if line.strip())


def _show(console: Console, result: Any, trace: str | None) -> None:
    """The text with its entities highlighted and their table; the stage trace as a table or one line a stage."""
    from samner_dspy.formats.render import entities_table, highlighted, stage_lines, trace_tables

    console.print(highlighted(result.text, result.entities))
    console.print(entities_table(result.entities))
    if trace == "full":
        for table in trace_tables(result.trace):
            console.print(table)
    elif trace == "summary":
        for line in stage_lines(result.trace):
            console.print(line, markup=False, highlight=False)


def _program_options(args: argparse.Namespace) -> dict[str, Any]:
    """SAMNER's options from ``samner annotate``'s flags, for every engine."""
    options = {
        "preset": args.preset,
        "ccr": args.ccr,
        "calibration": args.calibration,
        "use_anchor": not args.no_anchor,
        "use_explorer": False if args.no_explorer else (True if args.with_explorer else None),
        "threshold": args.threshold,
        "overlap": args.overlap,
        "person_role": args.person_role,
    }
    return {**options, "max_chars": args.max_chars} if args.max_chars else options


def annotate_on_ray(args: argparse.Namespace) -> int:
    """``--engine ray``: the corpus through the stages as Ray Data operations (see samner_dspy.scale)."""
    if not args.file or args.file == "-" or not args.output:
        raise SamnerError("--engine ray needs --file (JSON Lines or Parquet, local or a URI) and --output (a folder)")
    try:
        import ray

        from samner_dspy.scale import annotate_corpus
    except ImportError as exc:
        raise SamnerError(f"--engine ray needs the 'ray' extra (pip install 'samner-dspy[ray]'): {exc}") from exc
    config, llm = args.config, None
    if args.engine == "ray-vllm":
        from samner_dspy.scale import VllmEngine

        if args.api_base:
            raise SamnerError("--api-base is for --engine ray; with --engine ray-vllm the engines answer every request")

        llm = VllmEngine.for_adapters(
            args.explorer,
            args.archetype,
            anchor=args.anchor,
            base_model=args.base_model,
            max_lora_rank=args.max_lora_rank,
            download=args.download,
            replicas=args.replicas,
            tensor_parallel_size=args.tensor_parallel_size,
            accelerator_type=args.accelerator_type,
        )
        if config is None:
            from samner_dspy.training.serve import BASE_ADAPTER

            config = SamnerConfig.vllm(base_model=args.base_model)
            for stage in ("anchor", "explorer", "archetype"):
                if getattr(args, stage) == BASE_ADAPTER:
                    config = config.with_stage(stage, config.calibrator)  # the base model, as the calibrator
    connected = ray.is_initialized()
    if not connected and args.ray_address:
        ray.init(address=args.ray_address, log_to_driver=False)
    try:  # without --ray-address, annotate_corpus starts a local Ray with the CPUs the job needs
        run = annotate_corpus(
            args.file,
            args.output,
            Schema.parse_arg(args.schema),
            config,
            llm=llm,
            api_bases=args.api_base or (),
            workers=args.workers,
            threads=args.concurrency,
            id_column=args.id_column,
            output_format=args.output_format,
            log_to_driver=False,
            **_program_options(args),
        )
    finally:
        if not connected:  # a local Ray stops with its engines; a cluster is only disconnected from
            ray.shutdown()
    print(
        f"{run.written} annotated, {run.failed} failed, {run.skipped} skipped as already written, "
        f"in {run.seconds:.1f} s; records in {args.output}/part-*.{args.output_format}, "
        f"failures in {args.output}/errors/",
        file=sys.stderr,
    )
    return 1 if run.failed else 0


def annotate(args: argparse.Namespace) -> int:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    if args.engine in ("ray", "ray-vllm"):
        return annotate_on_ray(args)

    from samner_dspy.programs import SAMNER

    streaming = args.json or bool(args.output)
    console = Console(stderr=streaming)
    schema = Schema.parse_arg(args.schema)
    program = SAMNER(args.config, **_program_options(args))
    program.backends()  # an unreachable endpoint stops the run here, not once per input
    errors_path = args.output + ".errors.jsonl" if args.output else None
    done = done_keys(args.output) if args.output else set()
    failures = 0
    started = time.perf_counter()
    columns = (
        SpinnerColumn(),
        TextColumn("{task.completed} annotated, {task.fields[rate]:.2f}/s"),
        TimeElapsedColumn(),
    )
    with (
        Progress(*columns, console=console, disable=not streaming) as progress,
        RecordWriter(args.output) as sink,
        RecordWriter(errors_path) as errors,
    ):
        task = progress.add_task("annotate", total=None, rate=0.0)
        for item in program.annotate_batch(_texts(args), schema, args.concurrency, done.__contains__):
            if not item.ok:
                failures += 1
                console.print(f"input {item.index} failed: {item.error}", style="red", markup=False)
                errors.write({"index": item.index, "text": item.text, "error": item.error})
                continue
            record = Document.of(item.prediction, {"index": item.index}).to_dict()
            sink.write(record)
            if args.json:
                print(json.dumps(record, ensure_ascii=False), flush=True)
            elif not args.output:
                _show(console, item.prediction, args.trace)
            progress.advance(task)
            progress.update(task, rate=progress.tasks[0].completed / (time.perf_counter() - started))
    if failures:
        where = f"; see {errors_path} and rerun to retry them" if errors_path else ""
        console.print(f"{failures} input(s) failed{where}", markup=False)
    return 1 if failures else 0


def evaluate(args: argparse.Namespace) -> int:
    from samner_dspy.evals.evaluate import Data, configuration_names, evaluate
    from samner_dspy.evals.paired import Bootstrap

    data = Data(
        args.domains,
        args.split,
        args.limit,
        args.data,
        args.data_file,
        args.format,
        args.schema,
        args.definitions,
        args.label_names,
        args.start,
    )
    evaluate(
        configuration_names(args.configs, args.ablations, args.direct),
        data,
        Path(args.output_dir),
        args.config,
        threads=args.threads,
        cache=not args.no_cache,
        cache_revision=args.cache_revision,
        fewshot=args.fewshot,
        fewshot_pool=args.fewshot_pool,
        bootstrap=Bootstrap(args.bootstrap_resamples, args.bootstrap_seed),
        command=command_line(),
        discovery_from=args.discovery_from,
        against=[name.strip() for name in args.against.split(",") if name.strip()],
        score_only=args.score_only,
    )
    return 0


def command_line() -> str:
    """This run's command as a shell would take it, the ``SAMNER_*`` settings it ran with in front."""
    from samner_dspy.config import environment_settings

    settings = [f"{name}={shlex.quote(value)}" for name, value in environment_settings().items()]
    return " ".join([*settings, "samner", *(shlex.quote(arg) for arg in sys.argv[1:])])


def noise(args: argparse.Namespace) -> int:
    """Two runs of one configuration on the same sentences: how many sentences differ, and the F1 difference."""
    from samner_dspy.evals.paired import Bootstrap, rerun_agreement
    from samner_dspy.evals.runner import read_results

    try:
        found = rerun_agreement(read_results(Path(args.first)), read_results(Path(args.second)), Bootstrap())
    except ValueError as exc:
        raise SamnerError(f"{args.first} and {args.second}: {exc}") from exc
    interval = f"[{100 * found['low']:+.1f}, {100 * found['high']:+.1f}]"
    text = (
        f"{args.second} against {args.first}: predictions differ on {len(found['differing'])} of "
        f"{found['sentences']} sentences; macro strict F1 {100 * found['difference']:+.1f} {interval} "
        f"({found['verdict']})\n"
    )
    if found["differing"]:
        text += "differing: " + ", ".join(found["differing"]) + "\n"
    print(text, end="")
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    return 0


def export(args: argparse.Namespace) -> int:
    """Convert ``samner annotate -o`` output (or an eval's <configuration>.jsonl) for other tools."""
    from samner_dspy.formats import exports

    items = list(exports.read_results(args.results))
    if args.format == "spacy":
        if not args.output:
            raise SamnerError("--format spacy writes a binary DocBin: give --output FILE.spacy")
        from samner_dspy.formats.spacy_docs import write_docbin

        count = write_docbin(items, args.output, alignment=args.alignment)
        print(f"{count} docs written to {args.output}", file=sys.stderr)
        return 0
    if args.format == "gliner":
        lines = (
            json.dumps({"index": i.index, "text": i.text, "entities": exports.to_gliner(i)}, ensure_ascii=False) + "\n"
            for i in items
        )
    elif args.format == "conll":
        lines = exports.to_conll(items)
    else:
        tasks = [exports.to_label_studio(item) for item in items]
        lines = iter([json.dumps(tasks, ensure_ascii=False, indent=1) + "\n"])
    with Path(args.output).open("w", encoding="utf-8") if args.output else contextlib.nullcontext(sys.stdout) as sink:
        sink.writelines(lines)
    return 0


def view(args: argparse.Namespace) -> int:
    """One offline HTML page of annotate output; an eval's records also get gold, mistakes and the report."""
    from samner_dspy.formats.view import write_html

    records = list(read_records(args.results))
    tables: list[dict[str, Any]] = []
    if any("gold" in record for record in records):
        from samner_dspy.evals.review import judge, report_tables

        records = [judge(record) if "gold" in record else record for record in records]
        report = Path(args.results).with_name("report.json")
        if report.is_file():
            try:
                tables = report_tables(report)
            except (ValueError, KeyError, TypeError) as exc:
                raise SamnerError(f"{report} is not an evaluation report: {exc}") from exc
    output = Path(args.output or Path(args.results).with_suffix(".html"))
    write_html(records, output, tables, title=f"samner view: {Path(args.results).name}")
    print(f"{len(records)} texts written to {output}", file=sys.stderr)
    return 0


def embedded(args: argparse.Namespace) -> int:
    from samner_dspy.serving.embedded import EmbeddedServer, model_path

    if args.adapter and args.action != "serve":
        raise SamnerError("--adapter is only for serve")
    if args.action == "path":
        print(model_path(args.model))
        return 0
    if args.action == "check":
        return _check_embedded(args.model)
    if args.action == "export-hf":
        from samner_dspy.serving.hf_export import describe, export_hf

        exported = export_hf(args.folder, args.model)
        print(describe(exported), file=sys.stderr)
        print(exported.folder)
        return 0
    if args.folder:
        raise SamnerError("a folder is only for export-hf")
    server = EmbeddedServer(args.model, port=args.port, lora=args.adapter)
    with server:
        lora = f" with the LoRA {server.lora}" if server.lora else ""
        print(f"serving {server.spec.description}{lora} at {server.api_base} (model name 'embedded'); Ctrl-C stops it")
        print("configuration for SAMNER (save as samner.toml and pass --config samner.toml):\n")
        print(f'[defaults]\napi_base = "{server.api_base}"\nmodel = "openai/embedded"\nstructured_output = "llama_cpp"')
        sys.stdout.flush()
        try:
            server.wait()
        except KeyboardInterrupt:
            pass
    return 0


CHECK_TEXT = "Marie Curie worked at the University of Paris in France."
CHECK_SCHEMA = {
    "person": "a named person",
    "organisation": "a named organisation, company or institution",
    "location": "a named place",
}


def _check_embedded(model: str | None) -> int:
    """One sentence end to end on the embedded model, as ``SAMNER()`` runs it by default (the trained preset on the
    committed adapters, converted to llama.cpp's format here, once): set-up's proof that every stage of the default
    answers. It also leaves their fixed instructions in the prefix store, so the first annotation after set-up does
    not evaluate them.

    The anchor's one-label types are not trusted here, so the typing stage answers (and its instructions are
    stored) even when the anchor types every mention of the sentence, as it does for this one."""
    from samner_dspy.config import SamnerConfig
    from samner_dspy.programs import SAMNER

    started = time.perf_counter()
    program = SAMNER(SamnerConfig.embedded(model), trust_anchor_types=False)
    result = program(CHECK_TEXT, CHECK_SCHEMA)
    errors = result.trace.errors
    found = ", ".join(f"{e.text} ({e.label})" for e in result.entities) or "no entities"
    print(
        f"embedded model check ({program.preset} preset): {found}; {result.trace.requests} requests, "
        f"{time.perf_counter() - started:.1f} s"
    )
    if errors:
        raise SamnerError(f"the embedded model check failed: {'; '.join(errors)}")
    return 0


def _unit_interval(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return number


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="samner", description="Zero-shot NER by semantic archetype mediation.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("annotate", help="annotate text and show entities and the stage trace")
    run.add_argument("text", nargs="?", help="the text to annotate (or use --file, or stdin)")
    run.add_argument("-f", "--file", help="one input per line ('-' for stdin), or JSON Lines with a 'text' field")
    run.add_argument(
        "-s", "--schema", required=True, help="crossner:<domain>, inline JSON, a JSON file, or labels 'a,b,c'"
    )
    run.add_argument("-c", "--config", help="a TOML configuration (default: $SAMNER_CONFIG, else the embedded model)")
    run.add_argument("-o", "--output", help="append JSON Lines here; a rerun skips inputs already written")
    run.add_argument(
        "--preset",
        choices=PRESET_NAMES,
        help="paper (the default on vLLM and other servers), trained (the default on the embedded model, with its "
        "trained adapters) or small (the embedded model without them): the defaults of --ccr, --calibration, "
        "--with-explorer and --person-role, and whether the anchor's one-label types are trusted",
    )
    run.add_argument("--ccr", choices=CONSENSUS_MODES, help="consensus: rule (paper), verify (small) or off")
    run.add_argument(
        "--calibration",
        choices=CALIBRATION_MODES,
        help="sentence (paper), entity (small), matched (trained), off, or anchor (the anchor's labels)",
    )
    run.add_argument("--no-anchor", action="store_true", help="ablation: explorer only")
    explorer = run.add_mutually_exclusive_group()
    explorer.add_argument("--no-explorer", action="store_true", help="ablation: anchor only")
    explorer.add_argument(
        "--with-explorer", action="store_true", help="run the explorer beside the anchor (off under the trained preset)"
    )
    run.add_argument("--threshold", type=_unit_interval, default=0.0, help="drop entities scoring below this (0-1)")
    run.add_argument(
        "--person-role",
        action=argparse.BooleanOptionalAction,
        help="file mentions typed person under the role the schema's person definition sets apart (writer, ...); "
        "default: the preset's (on under trained)",
    )
    run.add_argument("--json", action="store_true", help="print JSON Lines instead of tables")
    run.add_argument(
        "--trace",
        nargs="?",
        const="full",
        choices=("full", "summary"),
        help="also print the stage trace: the full table (--trace), or one line per stage (--trace summary)",
    )
    run.add_argument("--no-trace", action="store_true", help=argparse.SUPPRESS)  # the default now; still accepted
    run.add_argument("--concurrency", type=int, default=4, help="inputs annotated at once (default 4)")
    run.add_argument(
        "--max-chars",
        type=int,
        default=0,
        help=f"split inputs longer than this into overlapping windows (default {DEFAULT_MAX_CHARS})",
    )
    run.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP, help="characters shared by neighbouring windows")
    run.add_argument(
        "--engine",
        choices=("local", "ray", "ray-vllm"),
        default="local",
        help="ray: a Ray Data pipeline over OpenAI-compatible endpoints; ray-vllm: over vLLM engines in the Ray "
        "workers, on their GPUs or, with vLLM's CPU build, their CPUs (the 'ray' extra, and vLLM on the workers)",
    )
    run.add_argument("--ray-address", help="with --engine ray: the cluster to join (default: start one locally)")
    run.add_argument("--workers", type=int, default=2, help="with --engine ray: actors per stage (default 2)")
    run.add_argument(
        "--api-base", action="append", help="with --engine ray: an endpoint replica; repeat to round-robin over many"
    )
    run.add_argument("--id-column", help="with --engine ray: the input column that keys resume (default: row number)")
    run.add_argument(
        "--output-format", choices=("jsonl", "parquet"), default="jsonl", help="with --engine ray: the part files"
    )
    engine = run.add_argument_group("with --engine ray-vllm (the LoRAs as for samner serve)")
    add_adapter_arguments(engine)
    engine.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="vLLM engines (each --tensor-parallel-size GPUs; CPUs with vLLM's CPU build)",
    )
    engine.add_argument("--accelerator-type", help="the GPU type the engines need, e.g. H100")
    run.set_defaults(handler=annotate)

    ev = commands.add_parser("eval", help="evaluate on CrossNER; resumable; writes a Table 1 style report")
    ev.add_argument("--data", help="a CrossNER folder (<domain>/<split>.txt); default: the Hugging Face dataset")
    ev.add_argument("--domains", default="ai,literature,music,politics,science")
    ev.add_argument("--data-file", help="your own labelled data instead of CrossNER (needs --schema)")
    ev.add_argument("--format", choices=DATA_FORMATS, help="of --data-file (default: by extension)")
    ev.add_argument("--schema", help="label definitions for --data-file: a JSON file, inline JSON, or 'a,b,c'")
    ev.add_argument(
        "--definitions",
        help="label definitions for the CrossNER domains: a JSON file of {label: definition} (one domain) or "
        "{domain: {label: definition}} (the shape of the SAM-NER authors' schema_define_crossNER.json)",
    )
    ev.add_argument(
        "--label-names",
        choices=("readable", "raw"),
        default="readable",
        help="labels sent to the model: readable names (programming language) or CrossNER's tags (programlang)",
    )
    ev.add_argument("--split", default="test", choices=("train", "dev", "test"))
    ev.add_argument("--limit", type=int, default=50, help="first N sentences of each domain")
    ev.add_argument(
        "--start", type=int, default=0, help="pass over the first N sentences of each domain (a held-out slice)"
    )
    ev.add_argument("-c", "--config", help="a TOML configuration (default: $SAMNER_CONFIG, else the embedded model)")
    ev.add_argument(
        "--configs",
        default="samner",
        help="comma-separated: samner, small, trained (SAMNER()'s default on the embedded model), the baselines "
        "direct, direct-short, plain, anchor-only, the small preset's ablations small-no-explorer, ... "
        "(samner_dspy.evals.runner.CONFIGURATIONS)",
    )
    ev.add_argument("--ablations", action="store_true", help="also run the four ablations")
    ev.add_argument("--direct", action="store_true", help="also run the direct prompting baseline")
    ev.add_argument("--output-dir", default="evals/results/latest")
    ev.add_argument("--fewshot", type=int, default=0, help="demos per stage bootstrapped from train (0: zero-shot)")
    ev.add_argument("--fewshot-pool", type=int, default=20, help="train sentences to bootstrap demos from")
    ev.add_argument("--threads", type=int, default=2)
    ev.add_argument(
        "--bootstrap-resamples", type=_positive, default=2000, help="for the intervals against direct prompting"
    )
    ev.add_argument("--bootstrap-seed", type=int, default=0, help="fixes the resamples, so a report is reproducible")
    ev.add_argument("--no-cache", action="store_true", help="do not reuse identical stage requests across runs")
    ev.add_argument("--cache-revision", default="", help="bump after retraining an adapter under the same name")
    ev.add_argument(
        "--discovery-from",
        help="an earlier eval's <configuration>.jsonl, or 'gold': SAM-NER types the spans it found (or the gold "
        "spans) instead of discovering, so a typing change is measured on the same mentions; the report adds "
        "archetype accuracy",
    )
    ev.add_argument(
        "--against",
        default="direct,anchor-only",
        help="comma-separated configurations every row is paired against, where they ran: the strongest "
        "single-request baseline on dev first, then anchor-only",
    )
    ev.add_argument(
        "--score-only",
        action="store_true",
        help="run nothing: score the sentences every row has finished (a sample stopped part-way)",
    )
    ev.set_defaults(handler=evaluate)

    rerun = commands.add_parser(
        "noise", help="two runs of one eval configuration: sentences whose predictions differ, F1 difference"
    )
    rerun.add_argument("first", help="an eval's <configuration>.jsonl")
    rerun.add_argument("second", help="the same configuration rerun on the same sentences (another --output-dir)")
    rerun.add_argument("-o", "--output", help="also write the figures to this file")
    rerun.set_defaults(handler=noise)

    out = commands.add_parser("export", help="convert annotate output to GLiNER, CoNLL, Label Studio or spaCy")
    out.add_argument("results", help="JSON Lines written by samner annotate -o (or an eval's <configuration>.jsonl)")
    out.add_argument("--format", required=True, choices=("gliner", "conll", "label-studio", "spacy"))
    out.add_argument("-o", "--output", help="where to write (default: stdout; required for spacy)")
    out.add_argument(
        "--alignment", choices=("expand", "contract", "strict"), default="expand", help="spaCy span alignment"
    )
    out.set_defaults(handler=export)

    look = commands.add_parser("view", help="one offline HTML page of annotate (or eval) results")
    look.add_argument("results", help="JSON Lines written by samner annotate -o (or an eval's <configuration>.jsonl)")
    look.add_argument("-o", "--output", help="the HTML file to write (default: the results file with .html)")
    look.set_defaults(handler=view)

    local = commands.add_parser(
        "embedded", help="the embedded model: its file, an OpenAI-compatible server, or a Hugging Face folder"
    )
    local.add_argument(
        "action",
        choices=("serve", "path", "check", "export-hf"),
        help="serve: llama.cpp's server; path: the GGUF file; check: annotate one sentence with every stage of the "
        "default program (set-up runs it); export-hf: a Hugging Face folder (for vLLM and samner train), reused "
        "when it already matches",
    )
    local.add_argument("folder", nargs="?", help="export-hf: where (default ~/.cache/samner-dspy/hf/<model>)")
    local.add_argument("--model", help="qwen2.5-coder-0.5b (default) or qwen2.5-coder-1.5b")
    local.add_argument("--port", type=int, default=8080)
    local.add_argument(
        "--adapter",
        help="serve: a LoRA to apply, the folder `samner train` wrote (converted to llama.cpp's format on first use, "
        "kept as <folder>/adapter.gguf) or a llama.cpp GGUF adapter",
    )
    local.set_defaults(handler=embedded)

    from samner_dspy.training.commands import add_commands  # build, train, serve: their libraries load on use

    add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except SamnerError as exc:
        print(f"samner: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
