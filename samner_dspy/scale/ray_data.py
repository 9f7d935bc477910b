"""A corpus through the SAM-NER stages as Ray Data operations, against OpenAI-compatible endpoints.

    annotate_corpus("corpus.jsonl", "out/", "crossner:music", config="samner.toml", workers=4)

Three ``map_batches`` steps, each an actor pool of ``workers`` actors that hold the program's own stage
modules (so prompts, parsing and grounding are the one code path :class:`SAMNER` uses):

1. discovery: anchor and explorer (concurrently), consensus, grounding;
2. mediation: the archetype classifier;
3. calibration: the calibrator (or direct typing with ``calibration="off"``), entities, window merge.

Each actor runs ``threads`` rows at once (the requests are I/O-bound), and sends each row to the next of
``api_bases`` in turn, so one job spreads over many vLLM replicas. Long texts (``max_chars``) are split into
the windows :func:`samner_dspy.programs.document.windows` makes, go through the steps as one row, and are
merged as local batch annotation merges them.

The output is a folder: ``part-*.jsonl`` (or ``.parquet``) holds one record per input (as ``samner annotate -o``
writes them), ``errors/part-*`` one record per failed input with the reason. Each file is written under a
temporary name and renamed when complete, so a killed job leaves no torn file, and a rerun skips the inputs
whose records are already written (by ``id`` column, else by row index) and retries the failed ones.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import math
import os
import pickle
import posixpath
import time
import uuid
import warnings
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import dspy
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import ray
from ray.data import Datasink
from ray.data.block import BlockAccessor

from samner_dspy.config import STAGES, Endpoint, SamnerConfig, resolve_config
from samner_dspy.programs.document import annotate_document, windows
from samner_dspy.programs.program import ConfigLike, SchemaLike, check_text
from samner_dspy.programs.samner import SAMNER
from samner_dspy.records import result_record
from samner_dspy.scale.processors import LLMProcessor
from samner_dspy.scale.rounds import RoundRow, request_rounds
from samner_dspy.schema import Schema

ERRORS = "errors"


@dataclass(frozen=True)
class Spec:
    """What every actor rebuilds its program from (pickled to the workers; holds no API key)."""

    config: SamnerConfig
    schema: Schema
    options: Mapping[str, Any] = field(default_factory=dict)
    api_bases: tuple[str, ...] = ()
    max_chars: int | None = None
    overlap: int = 200
    threads: int = 8

    def programs(self) -> list[SAMNER]:
        configs = [self.config] if not self.api_bases else [_on(self.config, base) for base in self.api_bases]
        return [SAMNER(config, **self.options) for config in configs]


def _on(config: SamnerConfig, api_base: str) -> SamnerConfig:
    """The configuration with every self-hosted stage (one that has an ``api_base``) moved to ``api_base``."""
    moved = {s: replace(config.endpoint(s), api_base=api_base) for s in STAGES if config.endpoint(s).api_base}
    return replace(config, **moved)


def _served(config: SamnerConfig, api_base: str | None = None) -> SamnerConfig:
    """Embedded stages point at ``api_base`` (a server of the embedded model), else at the one embedded server
    this driver starts: workers must not each start one."""
    embedded = [s for s in STAGES if config.endpoint(s).is_embedded]
    if not embedded:
        return config
    from samner_dspy.embedded import SERVED_NAME, shared_server

    api_base = api_base or shared_server(config.embedded_model).api_base
    served = {}
    for stage in embedded:
        endpoint = config.endpoint(stage)
        dialect = "none" if endpoint.structured_output == "none" else "llama_cpp"
        served[stage] = Endpoint(
            f"openai/{SERVED_NAME}",
            api_base=api_base,
            temperature=endpoint.temperature,
            max_tokens=endpoint.max_tokens,
            timeout_s=endpoint.timeout_s,
            num_retries=endpoint.num_retries,
            structured_output=dialect,
        )
    return replace(config, **served)


# --- the per-row work: SAMNER.forward itself, its stages replayed or paused ------------------------------
#
# Each step runs the program's own ``forward`` on the row, with its stage modules wrapped: a stage an earlier
# step ran is answered from that step's recorded prediction (no request), a stage of this step runs live and
# is recorded, and a stage of a later step pauses the row there. So the glue between the stages (consensus
# arguments, grounding, entity assembly, scores, thresholds) is the program's own code, not a copy.

STEP_STAGES: dict[str, frozenset[str]] = {
    "discovery": frozenset({"anchor", "explorer", "consensus"}),
    "mediation": frozenset({"archetype"}),
    "calibration": frozenset({"calibrator", "direct"}),
}
_TAPE: contextvars.ContextVar[_Tape] = contextvars.ContextVar("samner_ray_tape")


class _Pause(BaseException):
    """Raised by a stage that belongs to a later step; a BaseException so no stage or batch catches it."""


@dataclass(frozen=True)
class _Failure:
    """A live stage's exception, kept by type name and message (exceptions do not all survive pickling)."""

    kind: str
    message: str

    def exception(self) -> Exception:
        return type(self.kind, (Exception,), {})(self.message)


@dataclass
class _Tape:
    live: frozenset[str]
    results: dict[tuple[str, str], Any] = field(default_factory=dict)


class _Replayed:
    """Stands in for one stage module of the program: replays, runs live, or pauses."""

    def __init__(self, name: str, module: Any) -> None:
        self.name = name
        self.module = module

    def __call__(self, **inputs: Any) -> Any:
        tape = _TAPE.get()
        key = (self.name, inputs["text"])
        if key in tape.results:
            result = tape.results[key]
            if isinstance(result, _Failure):
                raise result.exception()
            return result
        if self.name not in tape.live:
            raise _Pause(self.name)
        try:
            result = self.module(**inputs)
        except Exception as exc:
            tape.results[key] = _Failure(type(exc).__name__, str(exc))
            raise
        tape.results[key] = result
        return result


def _staged(program: SAMNER) -> SAMNER:
    for name in set().union(*STEP_STAGES.values()):
        setattr(program, name, _Replayed(name, getattr(program, name)))
    return program


@dataclass
class _Row:
    key: dict[str, Any]
    text: str
    results: dict[tuple[str, str], Any] = field(default_factory=dict)
    parts: list[str] = field(default_factory=list)
    """The texts the program runs on: the text, or its windows."""
    failed: dict[str, str] = field(default_factory=dict)
    """Part -> the error that stopped it."""
    error: str | None = None
    record: dict[str, Any] | None = None


def _failure(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _record(row: _Row, result: Any) -> dict[str, Any]:
    """The output line, as ``samner annotate -o`` writes it (``id`` instead of ``index`` when the input has one)."""
    return result_record(row.key, row.text, result)


class _Step:
    """A Ray Data callable class: one program per endpoint, ``threads`` rows at once, rows round-robin."""

    name = ""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.programs = [_staged(program) for program in spec.programs()]
        self.turn = itertools.count()
        self.pool = ThreadPoolExecutor(max_workers=spec.threads, thread_name_prefix="samner-ray")
        self.final = self.name == "calibration"

    def _part(self, program: SAMNER, part: str) -> Any:
        """Run the program on one part; None where it paused for a later step."""
        try:
            return program(part, self.spec.schema)
        except _Pause:
            return None

    def _run(self, row: _Row) -> _Row:
        if row.error is not None or row.record is not None:
            return row
        program = self.programs[next(self.turn) % len(self.programs)]
        _TAPE.set(_Tape(STEP_STAGES[self.name], row.results))
        schema, max_chars, overlap = self.spec.schema, self.spec.max_chars, self.spec.overlap
        with dspy.context(disable_history=True):
            try:
                if not row.parts:
                    text = check_text(row.text)
                    row.parts = (
                        [text[w.start : w.end] for w in windows(text, max_chars, overlap)] if max_chars else [text]
                    )
                if not max_chars:
                    result = self._part(program, row.parts[0])
                    if result is not None:
                        row.record = _record(row, result)
                    return row
                for part in dict.fromkeys(row.parts):
                    if part.strip() and part not in row.failed:
                        try:
                            self._part(program, part)
                        except Exception as exc:  # one window fails, the document goes on
                            row.failed[part] = _failure(exc)
                if self.final:  # every window's stages are recorded: assemble exactly as local batches do
                    row.record = _record(
                        row, annotate_document(lambda part: program(part, schema), row.text, max_chars, overlap)
                    )
            except Exception as exc:  # one bad input must not end the job
                row.error = _failure(exc)
        return row

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        rows = [pickle.loads(state) for state in batch["state"]]
        contexts = [contextvars.copy_context() for _ in rows]
        rows = list(self.pool.map(lambda context, row: context.run(self._run, row), contexts, rows))
        if not self.final:
            return pd.DataFrame({"state": [pickle.dumps(row) for row in rows]})
        records = [
            row.record if row.error is None else {**row.key, "text": row.text, "error": row.error} for row in rows
        ]
        return pd.DataFrame(
            {
                "record": [json.dumps(record, ensure_ascii=False) for record in records],
                "failed": [row.error is not None for row in rows],
            }
        )


class _Discovery(_Step):
    name = "discovery"


class _Mediation(_Step):
    name = "mediation"


class _Calibration(_Step):
    name = "calibration"


def _to_rows(
    batch: pd.DataFrame, text_column: str, id_column: str | None, done: frozenset, row_type: type = _Row
) -> pd.DataFrame:
    """Input rows to pickled ``row_type`` states, leaving out those an earlier run has written."""
    key_column = id_column or "index"
    states = []
    for key, text in zip(batch[key_column], batch[text_column], strict=True):
        key = key.item() if hasattr(key, "item") else key
        if key in done:
            continue
        states.append(pickle.dumps(row_type({"id" if id_column else "index": key}, text)))
    return pd.DataFrame({"state": states}, dtype=object)


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
    overlap: int = 200,
    text_column: str = "text",
    id_column: str | None = None,
    num_cpus_per_worker: float = 0.25,
    filesystem: pafs.FileSystem | None = None,
    llm: LLMProcessor | None = None,
    output_format: str = "jsonl",
    **options: Any,
) -> CorpusRun:
    """Annotate a corpus on the Ray cluster this process is connected to (``ray.init()`` first, or one is
    started locally). ``options`` are :class:`SAMNER`'s (``ccr``, ``calibration``, ``use_anchor``, ...);
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
    served = resolved if llm is not None else _served(resolved, api_bases[0] if api_bases else None)
    spec = Spec(served, schema, dict(options), api_bases, max_chars, overlap, threads)
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
    # Actors wait on HTTP, so CPUs here are scheduling tokens: three pools of ``workers`` actors, the row-making
    # tasks, and one CPU for re-blocking. A cluster with fewer than that waits forever instead of failing.
    needed = (3 * workers + 1) * num_cpus_per_worker + 1
    if not ray.is_initialized():
        ray.init(num_cpus=max(os.cpu_count() or 1, math.ceil(needed)))
    available = ray.cluster_resources().get("CPU", 0.0)
    if available < needed:
        warnings.warn(
            f"the Ray cluster has {available:g} CPUs; {workers} workers per step at {num_cpus_per_worker:g} CPU each "
            f"need about {needed:g}: the job may wait for resources (fewer workers, a smaller num_cpus_per_worker, "
            "or ray.init(num_cpus=...) with more logical CPUs)",
            stacklevel=2,
        )
    dataset = read_corpus(input_path, text_column, id_column, filesystem)
    # Blocks of one batch each: an actor works on one block at a time, so a large block would hold every row in
    # one step until all of it is done instead of streaming rows on to the next step.
    steps = dataset.map_batches(
        _to_rows,
        batch_format="pandas",
        batch_size=batch_size,
        fn_args=(text_column, id_column, done, _Row if llm is None else RoundRow),
        num_cpus=num_cpus_per_worker,
    ).repartition(target_num_rows_per_block=batch_size)
    if llm is not None:
        steps = request_rounds(steps, spec, llm, workers, batch_size, num_cpus_per_worker)
    else:
        for step in (_Discovery, _Mediation, _Calibration):
            steps = steps.map_batches(
                step,
                fn_constructor_args=(spec,),
                batch_format="pandas",
                batch_size=batch_size,
                compute=ray.data.ActorPoolStrategy(size=workers),
                num_cpus=num_cpus_per_worker,
            )
    sink = RecordSink(output, filesystem, output_format)
    steps.write_datasink(sink)
    return CorpusRun(len(done), sink.written, sink.failed, time.perf_counter() - started)
