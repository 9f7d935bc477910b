"""A corpus through the SAM-NER stages as Ray Data operations, against OpenAI-compatible endpoints.

    annotate_corpus("corpus.jsonl", "out/", "crossner:music", config="samner.toml", workers=4)

One ``map_batches`` step per group of the program's ``SAMNER.STEPS``, each an actor pool of ``workers``
actors running the program's own ``forward`` (so prompts, parsing and grounding are the one code path
:class:`SAMNER` uses; :mod:`samner_dspy.scale.replay` replays what earlier steps ran):

1. discovery: anchor and explorer (concurrently), consensus, grounding;
2. mediation: the archetype classifier;
3. calibration: the calibrator (or direct typing with ``calibration="off"``), entities, window merge.

Each actor runs ``threads`` rows at once (the requests are I/O-bound), and sends each row to the next of
``api_bases`` in turn, so one job spreads over many vLLM replicas. A long text (over ``max_chars``) is windowed
by the program itself, as in local annotation, and travels as one row.

The output is a folder: ``part-*.jsonl`` (or ``.parquet``) holds one record per input (as ``samner annotate -o``
writes them), ``errors/part-*`` one record per failed input with the reason. Each file is written under a
temporary name and renamed when complete, so a killed job leaves no torn file, and a rerun skips the inputs
whose records are already written (by ``id`` column, else by row index) and retries the failed ones.
"""

from __future__ import annotations

import contextvars
import json
import math
import os
import pickle
import posixpath
import time
import uuid
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import ray
from ray.data import Datasink
from ray.data.block import BlockAccessor

from samner_dspy.backends import _embedded_endpoint
from samner_dspy.config import STAGES, SamnerConfig, resolve_config
from samner_dspy.modes import DEFAULT_OVERLAP
from samner_dspy.programs.program import ConfigLike, SchemaLike
from samner_dspy.programs.samner import SAMNER, preset_for
from samner_dspy.scale.processors import LLMProcessor
from samner_dspy.scale.replay import Rotation, Row, Spec, advance, finished, to_rows
from samner_dspy.scale.rounds import request_rounds
from samner_dspy.schema import Schema

ERRORS = "errors"


def _served(config: SamnerConfig, api_base: str | None = None) -> SamnerConfig:
    """Embedded stages point at ``api_base`` (a server of the embedded model), else at the embedded server of
    their model that this driver starts: workers must not each start one. A stage with a LoRA (``adapter``) gets a
    server of its own, named after the stage; ``api_base`` serves whatever it serves."""
    embedded = [s for s in STAGES if config.endpoint(s).is_embedded]
    if not embedded:
        return config
    from samner_dspy.serving.embedded import shared_server

    def served_at(stage: str) -> str:
        endpoint = config.endpoint(stage)
        role = stage if endpoint.adapter else "default"
        return (
            api_base or shared_server(endpoint.embedded_model(config.embedded_model), role, endpoint.adapter).api_base
        )

    return replace(
        config,
        **{stage: _embedded_endpoint(config.endpoint(stage), served_at(stage), "llama_cpp") for stage in embedded},
    )


# --- the per-row work: SAMNER.forward itself, a step of the program's STEPS at a time (see .replay) ------------


class _Step:
    """A Ray Data callable class: one program per endpoint, ``threads`` rows at once, rows round-robin."""

    def __init__(self, spec: Spec, step: int) -> None:
        self.spec = spec
        self.live = frozenset(SAMNER.STEPS[step])
        self.final = step == len(SAMNER.STEPS) - 1
        self.programs = Rotation(spec.programs())
        self.pool = ThreadPoolExecutor(max_workers=spec.threads, thread_name_prefix="samner-ray")

    def _run(self, row: Row) -> Row:
        return advance(self.programs.next(), row, self.spec.schema, self.live)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        rows = [pickle.loads(state) for state in batch["state"]]
        contexts = [contextvars.copy_context() for _ in rows]
        rows = list(self.pool.map(lambda context, row: context.run(self._run, row), contexts, rows))
        return finished(rows) if self.final else pd.DataFrame({"state": [pickle.dumps(row) for row in rows]})


# --- input and output ---------------------------------------------------------------------------------------


def _filesystem(path: str, filesystem: pafs.FileSystem | None) -> tuple[pafs.FileSystem, str]:
    if filesystem is not None:
        return filesystem, path
    if "://" not in path:
        return pafs.LocalFileSystem(), os.path.abspath(path)
    return pafs.FileSystem.from_uri(path)


def _is_parquet(path: str) -> bool:
    return path.rstrip("/").endswith((".parquet", ".pq")) or "." not in posixpath.basename(path.rstrip("/"))


def read_corpus(
    path: str,
    text_column: str = "text",
    id_column: str | None = None,
    filesystem: pafs.FileSystem | None = None,
) -> ray.data.Dataset:
    """JSON Lines or Parquet (a file, or for Parquet a folder), local or on any filesystem pyarrow reads.

    With ``id_column`` the files are read in parallel by Ray Data and that column keys resume. Without it
    each row's key is its row number, which only a read in order can give: the driver reads the text column
    with pyarrow (fine for millions of sentences; give an id column beyond that).
    """
    parquet = _is_parquet(path)
    if id_column is not None:
        columns = [id_column, text_column]
        if parquet:
            return ray.data.read_parquet(path, filesystem=filesystem).select_columns(columns)
        return ray.data.read_json(path, lines=True, filesystem=filesystem).select_columns(columns)
    fs, where = _filesystem(path, filesystem)
    if parquet:
        import pyarrow.parquet as pq

        table = pq.read_table(where, columns=[text_column], filesystem=fs)
    else:
        import pyarrow.json as pajson

        with fs.open_input_stream(where) as stream:
            table = pajson.read_json(stream).select([text_column])
    table = table.append_column("index", pa.array(range(table.num_rows), pa.int64()))
    return ray.data.from_arrow(table)


OUTPUT_FORMATS = ("jsonl", "parquet")


def _records(fs: pafs.FileSystem, folder: str) -> Iterable[dict[str, Any]]:
    try:
        infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    except FileNotFoundError:
        return
    for info in sorted(infos, key=lambda i: i.path):
        name = posixpath.basename(info.path)
        if info.type != pafs.FileType.File or not name.startswith("part-"):
            continue
        if name.endswith(".jsonl"):
            with fs.open_input_stream(info.path) as stream:
                yield from (json.loads(line) for line in stream.read().decode("utf-8").splitlines() if line.strip())
        elif name.endswith(".parquet"):
            import pyarrow.parquet as pq

            table = pq.read_table(info.path, columns=["record"], filesystem=fs)
            yield from (json.loads(record) for record in table["record"].to_pylist())


def read_output(output: str, errors: bool = False, filesystem: pafs.FileSystem | None = None) -> list[dict]:
    """Every record a job (and its reruns) wrote to ``output``, or with ``errors`` every failure."""
    fs, root = _filesystem(output, filesystem)
    return list(_records(fs, posixpath.join(root, ERRORS) if errors else root))


ENTITY_LIST = pa.list_(
    pa.struct(
        [
            ("text", pa.string()),
            ("label", pa.string()),
            ("start", pa.int64()),
            ("end", pa.int64()),
            ("archetype", pa.string()),
            ("sources", pa.list_(pa.string())),
            ("score", pa.float64()),
            ("alignment_status", pa.string()),
            ("typed_by", pa.string()),
        ]
    )
)
"""An entity as :meth:`Entity.to_dict` gives it, as a Parquet column type."""


def _parquet_table(records: list[str]) -> pa.Table:
    """The record's key, text and entities as columns for Parquet readers, and the whole record as JSON."""
    parsed = [json.loads(record) for record in records]
    key = "id" if "id" in parsed[0] else "index"
    columns = {
        key: [r[key] for r in parsed],
        "text": [r["text"] for r in parsed],
        "entities": pa.array([r.get("entities", []) for r in parsed], type=ENTITY_LIST),
        "error": [r.get("error") for r in parsed],
        "record": records,
    }
    return pa.table(columns)


class RecordSink(Datasink):
    """One ``part-<uuid>.jsonl`` (or ``.parquet``) per write task, renamed into place when complete; failures to
    ``errors/``."""

    def __init__(self, output: str, filesystem: pafs.FileSystem | None = None, output_format: str = "jsonl") -> None:
        if output_format not in OUTPUT_FORMATS:
            raise ValueError(f"unknown output format {output_format!r}; choose {' or '.join(OUTPUT_FORMATS)}")
        self.fs, self.root = _filesystem(output, filesystem)
        self.output_format = output_format
        self.written = 0
        self.failed = 0

    def on_write_start(self, schema: Any = None) -> None:
        self.fs.create_dir(posixpath.join(self.root, ERRORS), recursive=True)

    def _put(self, folder: str, name: str, records: list[str]) -> None:
        if not records:
            return
        temporary = posixpath.join(folder, f".tmp-{name}")
        if self.output_format == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(_parquet_table(records), temporary, filesystem=self.fs)
        else:
            with self.fs.open_output_stream(temporary) as stream:
                stream.write("".join(record + "\n" for record in records).encode("utf-8"))
        self.fs.move(temporary, posixpath.join(folder, name))

    def write(self, blocks: Iterable[Any], ctx: Any) -> tuple[int, int]:
        ok: list[str] = []
        failed: list[str] = []
        for block in blocks:
            table = BlockAccessor.for_block(block).to_arrow()
            if table.num_rows == 0:  # an empty block (every input of it written before) skips the steps
                continue
            for record, bad in zip(table["record"].to_pylist(), table["failed"].to_pylist(), strict=True):
                (failed if bad else ok).append(record)
        name = f"part-{uuid.uuid4().hex}.{self.output_format}"
        # Records first: a kill between the two leaves the failures unwritten, and a rerun retries them.
        self._put(self.root, name, ok)
        self._put(posixpath.join(self.root, ERRORS), name, failed)
        return len(ok), len(failed)

    def on_write_complete(self, write_result: Any) -> None:
        for ok, failed in write_result.write_returns:
            self.written += ok
            self.failed += failed


def reserved_cpus(workers: int, num_cpus_per_worker: float, llm: LLMProcessor | None = None) -> float:
    """About how many logical CPUs a job holds at once; a cluster with fewer waits forever instead of failing.

    The actors wait on HTTP or on the engines, so these CPUs are scheduling tokens: without ``llm``, three pools of
    ``workers`` actors and the row-making tasks; with it, one pool, the row-making tasks and the processor's
    actors. Plus one CPU for the tasks between them (re-blocking, regrouping), which run one at a time if need be.
    """
    if llm is None:
        return (3 * workers + 1) * num_cpus_per_worker + 1
    return (workers + 1) * num_cpus_per_worker + llm.reserved_cpus() + 1


@dataclass
class CorpusRun:
    """What a job did: inputs skipped as already written, records written, inputs failed, seconds."""

    skipped: int
    written: int
    failed: int
    seconds: float


def annotate_corpus(
    input_path: str,
    output: str,
    schema: SchemaLike,
    config: ConfigLike = None,
    *,
    api_bases: Iterable[str] = (),
    workers: int = 2,
    threads: int = 8,
    batch_size: int = 16,
    max_chars: int | None = None,
    overlap: int = DEFAULT_OVERLAP,
    text_column: str = "text",
    id_column: str | None = None,
    num_cpus_per_worker: float = 0.25,
    filesystem: pafs.FileSystem | None = None,
    llm: LLMProcessor | None = None,
    output_format: str = "jsonl",
    log_to_driver: bool = True,
    **options: Any,
) -> CorpusRun:
    """Annotate a corpus on the Ray cluster this process is connected to (``ray.init()`` first, or one is
    started locally, with enough logical CPUs for the job, printing the workers' output if ``log_to_driver``;
    it stays up for the next job). ``options`` are :class:`SAMNER`'s (``ccr``, ``calibration``, ``use_anchor``, ...);
    ``workers`` actors per step each keep ``threads`` rows in flight. ``output_format`` is ``jsonl`` or
    ``parquet`` (columns: the key, ``text``, ``entities``, ``error``, and ``record``, the JSON line).

    With ``llm`` (a :class:`~samner_dspy.scale.processors.VllmEngine` or
    :class:`~samner_dspy.scale.processors.HttpEndpoint`) the stages' requests become rows answered by that Ray
    Data LLM processor, in rounds (:mod:`samner_dspy.scale.rounds`); ``api_bases`` and ``threads`` then do not
    apply, and the configuration's endpoints are only read for model names and sampling settings."""
    started = time.perf_counter()
    schema = Schema.coerce(schema)
    api_bases = tuple(api_bases)
    if llm is not None and api_bases:
        raise ValueError("api_bases round-robins HTTP endpoints; with llm= the processor answers every request")
    RecordSink(output, filesystem, output_format)  # an unknown format fails before anything runs
    resolved = resolve_config(config)
    if options.get("preset") is None:  # from the stages as configured, before they are pointed at servers
        options = {**options, "preset": preset_for(resolved)}
    served = resolved if llm is not None else _served(resolved, api_bases[0] if api_bases else None)
    if max_chars:
        options = {**options, "max_chars": max_chars, "overlap": overlap}
    spec = Spec(served, schema, dict(options), api_bases, threads)
    SAMNER(spec.config, **spec.options)  # invalid options fail here, not in every worker
    if llm is not None:
        llm.check(spec.config)
    else:
        for program in spec.programs():
            program.backends()  # an unreachable endpoint stops the job here, not once per input
    key = "id" if id_column else "index"
    done = frozenset(record[key] for record in read_output(output, filesystem=filesystem) if key in record)
    fs, root = _filesystem(output, filesystem)
    for folder in (root, posixpath.join(root, ERRORS)):  # leftovers of a killed job's unfinished writes
        for info in fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True)):
            if posixpath.basename(info.path).startswith(".tmp-"):
                fs.delete_file(info.path)
    needed = reserved_cpus(workers, num_cpus_per_worker, llm)
    if not ray.is_initialized():
        ray.init(num_cpus=max(os.cpu_count() or 1, math.ceil(needed)), log_to_driver=log_to_driver)
    available = ray.cluster_resources().get("CPU", 0.0)
    if available < needed:
        warnings.warn(
            f"the Ray cluster has {available:g} CPUs; {workers} workers per step at {num_cpus_per_worker:g} CPU each"
            f"{' and ' + llm.name if llm is not None else ''} need about {needed:g}: the job may wait for resources "
            "(fewer workers, a smaller num_cpus_per_worker, or ray.init(num_cpus=...) with more logical CPUs)",
            stacklevel=2,
        )
    dataset = read_corpus(input_path, text_column, id_column, filesystem)
    # Blocks of one batch each: an actor works on one block at a time, so a large block would hold every row in
    # one step until all of it is done instead of streaming rows on to the next step.
    steps = dataset.map_batches(
        to_rows,
        batch_format="pandas",
        batch_size=batch_size,
        fn_args=(text_column, id_column, done, llm is not None),
        num_cpus=num_cpus_per_worker,
    ).repartition(target_num_rows_per_block=batch_size)
    if llm is not None:
        steps = request_rounds(steps, spec, llm, workers, batch_size, num_cpus_per_worker)
    else:
        for step in range(len(SAMNER.STEPS)):
            steps = steps.map_batches(
                _Step,
                fn_constructor_args=(spec, step),
                batch_format="pandas",
                batch_size=batch_size,
                compute=ray.data.ActorPoolStrategy(size=workers),
                num_cpus=num_cpus_per_worker,
            )
    sink = RecordSink(output, filesystem, output_format)
    steps.write_datasink(sink)
    return CorpusRun(len(done), sink.written, sink.failed, time.perf_counter() - started)
