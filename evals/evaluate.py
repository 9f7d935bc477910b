"""``samner eval``: pick the configurations, load the data, run each one resumably, and write the report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from samner_dspy.config import CachePolicy, SamnerConfig, resolve_config
from samner_dspy.errors import SamnerError
from samner_dspy.evals import report
from samner_dspy.evals.crossner import load_crossner
from samner_dspy.evals.definitions import eval_schemas, named_gold
from samner_dspy.evals.paired import Bootstrap
from samner_dspy.evals.runner import (
    ABLATIONS,
    CONFIGURATIONS,
    TITLES,
    Item,
    build_program,
    done_keys,
    read_results,
    run,
)
from samner_dspy.programs.program import ConfigLike, ConfiguredProgram
from samner_dspy.schema import Schema

GOLD = "gold"
"""``--discovery-from gold``: type the gold spans."""
CHOSEN_ON_TEST = 30
"""The first test sentences of each CrossNER domain that choices were made on (before choices moved to dev)."""


def configuration_names(configs: str, ablations: bool = False, direct: bool = False) -> list[str]:
    """The rows to run: ``configs`` (comma-separated), plus the paper's ablations and the direct baseline."""
    names = [n.strip() for n in configs.split(",") if n.strip()]
    names += list(ABLATIONS) if ablations else []
    names += ["direct"] if direct else []
    names = list(dict.fromkeys(names))
    unknown = [n for n in names if n not in CONFIGURATIONS]
    if unknown:
        raise SamnerError(f"unknown configurations {unknown}; choose from {', '.join(CONFIGURATIONS)}")
    return names


@dataclass(frozen=True)
class Data:
    """Where the labelled sentences come from: CrossNER domains (a folder, or the Hugging Face dataset), or one
    labelled file scored against ``schema``."""

    domains: str = "ai,literature,music,politics,science"
    split: str = "test"
    limit: int = 50
    crossner_dir: str | None = None
    data_file: str | None = None
    data_format: str | None = None
    schema: str | None = None
    definitions: str | None = None
    """A file of label definitions for the CrossNER domains (:func:`samner_dspy.evals.definitions.eval_schemas`)."""
    label_names: str = "readable"
    """``readable`` (this project's label names) or ``raw`` (CrossNER's tags, as the authors' prompts use)."""
    start: int = 0
    """Sentences of each domain to pass over first: ``start=20, limit=10`` is a held-out slice after the first 20
    (records keep each sentence's index, so the slice's records can join a run of the first ones)."""

    def load(self) -> tuple[list[str], dict[str, Schema], dict[str, list[Item]]]:
        if self.data_file:
            return self._labelled_file()
        domains = [d.strip() for d in self.domains.split(",") if d.strip()]
        schemas = eval_schemas(domains, self.definitions, self.label_names)
        items = {
            domain: [
                Item(domain, i, s)
                for i, s in enumerate(self.sentences(domain, self.split)[: self.start + self.limit])
                if i >= self.start
            ]
            for domain in domains
        }
        return domains, schemas, items

    def sentences(self, domain: str, split: str) -> list:
        """A CrossNER split with its gold labels named as the schemas name them."""
        return named_gold(load_crossner(domain, split, self.crossner_dir), self.label_names)

    def _labelled_file(self) -> tuple[list[str], dict[str, Schema], dict[str, list[Item]]]:
        from samner_dspy.evals.datafiles import load_labelled

        if self.definitions or self.label_names != "readable":
            raise SamnerError("--definitions and --label-names are for CrossNER; --schema defines --data-file's labels")
        if not self.schema:
            raise SamnerError("--data-file needs --schema (a JSON file of label definitions, or labels 'a,b,c')")
        schema = Schema.parse_arg(self.schema)
        try:
            sentences = load_labelled(self.data_file, schema, self.data_format)
        except (OSError, ValueError) as exc:
            raise SamnerError(str(exc)) from exc
        name = Path(self.data_file).stem
        chosen = [Item(name, i, s) for i, s in enumerate(sentences[: self.start + self.limit]) if i >= self.start]
        return [name], {name: schema}, {name: chosen}

    def heading(self, shots: str) -> str:
        which = f"first {self.limit}" if not self.start else f"{self.limit} after the first {self.start}"
        if self.data_file:
            return f"{self.data_file}, {which} sentences, {shots}"
        return f"CrossNER {self.split}, {which} sentences per domain, {shots}; {self.role()}"

    def role(self) -> str:
        """What the sample may be used for: choices on dev, reports on test sentences no choice has read."""
        if self.data_file:
            return "your labelled file"
        if self.split == "dev":
            return "decision sample: choices are made on it"
        if self.split == "test" and self.start >= CHOSEN_ON_TEST:
            return f"report sample: test sentences {self.start} onwards, which no choice has looked at"
        if self.split == "test":
            return (
                f"in-sample: the first {CHOSEN_ON_TEST} test sentences of each domain were read for choices, so these "
                "figures flatter whatever was chosen on them"
            )
        return f"{self.split} split"


def evaluate(
    names: list[str],
    data: Data,
    output: Path,
    config: ConfigLike = None,
    *,
    threads: int = 2,
    cache: bool = True,
    cache_revision: str = "",
    fewshot: int = 0,
    fewshot_pool: int = 20,
    bootstrap: Bootstrap | None = None,
    command: str = "samner eval",
    console: Console | None = None,
    discovery_from: Path | str | None = None,
    against: Sequence[str] = ("direct", "anchor-only"),
    score_only: bool = False,
) -> tuple[Path, Path]:
    """Run every configuration on every domain (resuming what ``output`` holds), then score the sentences every
    configuration finished; returns the paths of ``report.md`` and ``report.json``.

    ``discovery_from`` (an earlier evaluation's ``<configuration>.jsonl``, or ``"gold"``): every SAM-NER
    configuration types the spans that run found (or the gold spans) instead of discovering its own
    (:mod:`samner_dspy.evals.retype`), so a change to mediation or calibration is measured on the same mentions,
    and the report adds each row's archetype accuracy on the spans the gold holds; the direct baselines run as
    always. Every row is
    paired against each configuration of ``against`` that ran (the strongest baseline on dev, and the anchor).
    ``score_only`` runs nothing: it scores what the rows hold, so a sample stopped part-way can be reported."""
    if fewshot and data.data_file:
        raise SamnerError("--fewshot bootstraps demos from CrossNER's train split; it does not apply to --data-file")
    # Each row names the adapters it runs (Configuration.adapters): by default the untrained model is what they
    # start from, so an untrained row stays untrained now that the embedded model's default has adapters.
    resolved = resolve_config(config, trained=False)
    if cache:
        # Ablations repeat many identical stage requests; the cache answers them once the first run made them.
        resolved = replace(resolved, cache=CachePolicy(True, str(output / "cache"), cache_revision))
    domains, schemas, items_by_domain = data.load()
    items = [item for domain in domains for item in items_by_domain[domain]]
    console = console or Console()
    if not score_only:  # scoring what the rows hold builds no program and asks no model
        programs = _programs(names, domains, resolved, data, schemas, items, discovery_from, fewshot, fewshot_pool)
        _run_missing(names, programs, items_by_domain, schemas, output, threads, console)
    finished = [{r["key"]: r for r in read_results(output / f"{name}.jsonl")} for name in names]
    # Rows compare like with like: only sentences every configuration has finished are scored.
    common = {item.key for item in items}.intersection(*finished)
    results = {
        name: [r for key, r in done.items() if key in common] for name, done in zip(names, finished, strict=True)
    }
    summary = report.summarize(results, bootstrap or Bootstrap(), against)
    shots = f"{fewshot}-shot (BootstrapFewShot demos from train)" if fewshot else "zero-shot"
    if discovery_from is not None:
        where = "the gold spans" if str(discovery_from) == GOLD else f"the spans recorded in {discovery_from}"
        shots += f", SAM-NER typing {where}"
    heading = data.heading(shots)
    if len(common) < len(items):
        heading += f"; scored on the {len(common)} of its {len(items)} sentences that every row has finished"
    paths = report.write(summary, output, heading, command, results)
    console.print(report.rich_table(summary))
    console.print(f"report: {paths[0]} and {paths[1]}; predictions with traces: {output}/<configuration>.jsonl")
    return paths


def _programs(
    names: list[str],
    domains: list[str],
    resolved: SamnerConfig,
    data: Data,
    schemas: dict[str, Schema],
    items: list[Item],
    discovery_from: Path | str | None,
    fewshot: int,
    fewshot_pool: int,
) -> dict[tuple[str, str], ConfiguredProgram]:
    """Each row's program for each domain: typing recorded or gold spans with ``discovery_from``, with ``fewshot``
    demos bootstrapped from the domain's train split."""
    programs = {(name, domain): build_program(name, resolved) for name in names for domain in domains}
    if discovery_from is not None:
        from samner_dspy.evals.retype import RecordedDiscovery, gold_spans, recorded_spans

        spans = gold_spans(items) if str(discovery_from) == GOLD else recorded_spans(Path(discovery_from))
        for name, domain in programs:
            row = CONFIGURATIONS[name]
            if not row.direct:
                programs[name, domain] = RecordedDiscovery(
                    spans, str(discovery_from), row.resolve(resolved), **row.options
                )
    if fewshot:
        from samner_dspy.evals.fewshot import bootstrap

        for (name, domain), program in programs.items():
            train = data.sentences(domain, "train")[:fewshot_pool]
            programs[name, domain] = bootstrap(program, train, schemas[domain], fewshot)
    return programs


def _run_missing(
    names: list[str],
    programs: dict[tuple[str, str], ConfiguredProgram],
    items_by_domain: dict[str, list[Item]],
    schemas: dict[str, Schema],
    output: Path,
    threads: int,
    console: Console,
) -> None:
    """Every row on the sentences its records do not hold yet, with a progress bar per row."""
    keys = {item.key for domain_items in items_by_domain.values() for item in domain_items}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        tasks = {}
        for name in names:
            already = len(keys & done_keys(output / f"{name}.jsonl"))
            tasks[name] = progress.add_task(TITLES[name], total=len(keys), completed=already)
        # Domain by domain, every configuration: an early stop leaves whole domains comparable across rows.
        for domain, domain_items in items_by_domain.items():
            for name in names:
                run(
                    programs[name, domain],
                    domain_items,
                    schemas,
                    output / f"{name}.jsonl",
                    threads,
                    lambda t=tasks[name]: progress.advance(t),
                )
