"""``samner``: annotate text from the command line and run the embedded model's server."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console

from samner_dspy.errors import SamnerError
from samner_dspy.schema import Schema


def _texts(args: argparse.Namespace) -> Iterator[str]:
    """The inputs, one per line of a file or stdin, or the single text given as an argument."""
    if args.text is not None and args.file is None:
        yield args.text
        return
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
        for line in handle:
            if line.strip():
                yield line.rstrip("\n")


def _done_indices(output: Path | None) -> set[int]:
    """Indices already written to the output, so an interrupted run resumes where it stopped."""
    if output is None or not output.is_file():
        return set()
    done = set()
    for line in output.read_text(encoding="utf-8").splitlines():
        try:
            done.add(int(json.loads(line)["index"]))
        except (ValueError, KeyError, TypeError):
            continue
    return done


def annotate(args: argparse.Namespace) -> int:
    from samner_dspy.programs import SAMNER
    from samner_dspy.render import entities_table, highlighted, trace_table

    console = Console(stderr=args.json)
    schema = Schema.parse_arg(args.schema)
    program = SAMNER(
        args.config,
        ccr=args.ccr,
        calibration=args.calibration,
        use_anchor=not args.no_anchor,
        use_explorer=not args.no_explorer,
    )
    output = Path(args.output) if args.output else None
    done = _done_indices(output)
    sink = output.open("a", encoding="utf-8") if output else None
    try:
        for index, text in enumerate(_texts(args)):
            if index in done:
                continue
            result = program(text, schema)
            record = {
                "index": index,
                "text": text,
                "entities": [e.to_dict() for e in result.entities],
                "trace": result.trace.to_dict(),
            }
            if sink:
                sink.write(json.dumps(record, ensure_ascii=False) + "\n")
                sink.flush()
            if args.json:
                print(json.dumps(record, ensure_ascii=False), flush=True)
            else:
                console.print(highlighted(text, result.entities))
                console.print(entities_table(result.entities))
                if not args.no_trace:
                    console.print(trace_table(result.trace))
    finally:
        if sink:
            sink.close()
    return 0


def embedded(args: argparse.Namespace) -> int:
    from samner_dspy.embedded import EmbeddedServer, model_path

    if args.action == "path":
        print(model_path(args.model))
        return 0
    server = EmbeddedServer(args.model, port=args.port)
    with server:
        print(f"serving {server.spec.description} at {server.api_base} (model name 'embedded'); Ctrl-C stops it")
        print("configuration for SAMNER (save as samner.toml and pass --config samner.toml):\n")
        print(f'[defaults]\napi_base = "{server.api_base}"\nmodel = "openai/embedded"\nstructured_output = "llama_cpp"')
        sys.stdout.flush()
        try:
            server.wait()
        except KeyboardInterrupt:
            pass
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="samner", description="Zero-shot NER by semantic archetype mediation.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("annotate", help="annotate text and show entities and the stage trace")
    run.add_argument("text", nargs="?", help="the text to annotate (or use --file, or stdin)")
    run.add_argument("-f", "--file", help="a text file, one input per line ('-' for stdin)")
    run.add_argument(
        "-s", "--schema", required=True, help="crossner:<domain>, inline JSON, a JSON file, or labels 'a,b,c'"
    )
    run.add_argument("-c", "--config", help="a TOML configuration (default: $SAMNER_CONFIG, else the embedded model)")
    run.add_argument("-o", "--output", help="append JSON Lines here; a rerun skips inputs already written")
    run.add_argument("--ccr", choices=("rule", "verify", "off"), default="rule")
    run.add_argument("--calibration", choices=("sentence", "entity", "off"), default="sentence")
    run.add_argument("--no-anchor", action="store_true", help="ablation: explorer only")
    run.add_argument("--no-explorer", action="store_true", help="ablation: anchor only")
    run.add_argument("--json", action="store_true", help="print JSON Lines instead of tables")
    run.add_argument("--no-trace", action="store_true", help="do not print the stage trace table")
    run.set_defaults(handler=annotate)

    local = commands.add_parser("embedded", help="the embedded model: its file, or an OpenAI-compatible server")
    local.add_argument("action", choices=("serve", "path"))
    local.add_argument("--model", help="qwen2.5-coder-0.5b (default) or qwen2.5-coder-1.5b")
    local.add_argument("--port", type=int, default=8080)
    local.set_defaults(handler=embedded)
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
