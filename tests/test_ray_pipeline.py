"""Corpus scale on Ray Data: the same entities as local batches, resume by index, failures in the errors folder."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from samner_dspy import SAMNER, SamnerConfig
from samner_dspy.serving.stand_in import Recorder, Reply, stand_in_server

SCHEMA = ["person", "city"]
TEXTS = [f"Zoë Müller {i} flew from Berlin to São Paulo with Ada Lovelace." for i in range(6)]
LONG = " ".join(f"Ada Lovelace {i} met Charles Babbage in London." for i in range(6))
FAIL = "Nobody FAILS here, the server does."


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    return path


def embedded_config(api_base: str) -> dict:
    """The embedded model's server as an OpenAI-compatible endpoint, with room for queued requests."""
    return {
        "defaults": {
            "api_base": api_base,
            "model": "openai/embedded",
            "structured_output": "llama_cpp",
            "max_tokens": 256,
            # One llama.cpp slot serves every request in turn: the steps' requests queue there while rows stream.
            "timeout_s": 600,
        }
    }


def local_records(program: SAMNER, texts: list[str], **batch_options) -> dict[int, list[dict]]:
    items = program.annotate_batch(texts, SCHEMA, concurrency=2, **batch_options)
    return {item.index: [e.to_dict() for e in item.prediction.entities] for item in items if item.ok}


def test_stand_in_corpus_matches_local_batches_resumes_and_records_failures(ray_session, tmp_path):
    from samner_dspy.cli import main
    from samner_dspy.scale import annotate_corpus, read_output

    failing = {"on": True}

    def script(request, number):
        content = request["messages"][-1]["content"]
        return Reply(status=500) if failing["on"] and "FAILS" in content else None

    texts = [*TEXTS, "   ", FAIL]
    blank, fail = len(TEXTS), len(TEXTS) + 1
    inputs = write_jsonl(tmp_path / "in.jsonl", texts)
    output = tmp_path / "out"
    with stand_in_server(latency_s=0.01, script=script) as api_base:
        config = {"defaults": {"api_base": api_base, "num_retries": 0}}
        run = annotate_corpus(str(inputs), str(output), SCHEMA, config, workers=1, threads=4, batch_size=3)
        requests = [r for r in Recorder.requests if "FAILS" not in r["messages"][-1]["content"]]
        assert (run.skipped, run.written, run.failed) == (0, len(TEXTS), 2)
        records = {r["index"]: r for r in read_output(str(output))}
        errors = {r["index"]: r for r in read_output(str(output), errors=True)}
        # Nothing silently dropped: every input is a record or an error with its reason.
        assert sorted([*records, *errors]) == list(range(len(texts)))
        assert "empty or only whitespace" in errors[blank]["error"]
        assert "EndpointRequestError" in errors[fail]["error"]
        # Four requests a sentence: the steps replay the stages an earlier step ran, they do not redo them.
        assert len(requests) == 4 * len(TEXTS)
        # Item for item what local batch annotation returns.
        local = local_records(SAMNER(config), texts)
        assert {i: r["entities"] for i, r in records.items()} == local
        assert all(r["trace"]["stages"] for r in records.values())

        # A killed job: one part file never finished (only its temporary file is left); the server is fixed.
        # The rerun goes through the command line, round-robin over two names of the server.
        parts = sorted(output.glob("part-*.jsonl"))
        lost = [json.loads(line)["index"] for line in parts[0].read_text(encoding="utf-8").splitlines()]
        parts[0].rename(output / f".tmp-{parts[0].name}")
        failing["on"] = False
        toml = tmp_path / "samner.toml"
        toml.write_text('[defaults]\napi_base = "http://127.0.0.1:9/v1"\nnum_retries = 0\n', encoding="utf-8")
        Recorder.requests.clear()
        code = main(
            ["annotate", "--engine", "ray", "--file", str(inputs), "--schema", ",".join(SCHEMA), "-o", str(output),
             "--config", str(toml), "--workers", "1", "--concurrency", "4", "--api-base", api_base,
             "--api-base", api_base.replace("127.0.0.1", "localhost")]
        )  # fmt: skip
        requests = len(Recorder.requests)
        local = local_records(SAMNER(config), texts)
    assert code == 1  # the blank input still fails, and says so
    assert not list(output.glob(".tmp-*"))
    resumed = read_output(str(output))
    indices = [r["index"] for r in resumed]
    assert sorted(indices) == sorted(set(indices)) == [i for i in range(len(texts)) if i != blank]
    assert requests == 4 * (len(lost) + 1)  # only the lost records and the fixed failure
    assert {r["index"]: r["entities"] for r in resumed} == local
    assert [r["index"] for r in read_output(str(output), errors=True)].count(blank) == 2


def test_parquet_keyed_by_an_id_column_with_long_documents_windowed(ray_session, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from samner_dspy.scale import annotate_corpus, read_output

    path = tmp_path / "in.parquet"
    texts = [TEXTS[0], LONG, TEXTS[1]]
    pq.write_table(pa.table({"doc": ["b", "a", "c"], "text": texts}), path)
    output = str(tmp_path / "out")
    options = {"id_column": "doc", "workers": 1, "max_chars": 120, "overlap": 30, "output_format": "parquet"}
    with stand_in_server() as api_base:
        config = SamnerConfig.vllm(api_base=api_base)
        run = annotate_corpus(str(path), output, SCHEMA, config, **options)
        local = local_records(SAMNER(config), texts, max_chars=120, overlap=30)
    assert (run.skipped, run.written, run.failed) == (0, 3, 0)
    records = {r["id"]: r for r in read_output(output)}
    assert {key: r["entities"] for key, r in records.items()} == {"b": local[0], "a": local[1], "c": local[2]}
    windows = records["a"]["trace"]["windows"]
    assert len(windows) > 1 and [w["error"] for w in windows] == [None] * len(windows)
    assert all(w["trace"]["stages"] for w in windows)
    # Parquet readers get the key, text and entities as columns.
    table = pq.read_table(next(Path(output).glob("part-*.parquet")))
    assert table.column_names == ["id", "text", "entities", "error", "record"]
    for row in table.to_pylist():
        assert row["entities"] == records[row["id"]]["entities"] and row["text"] == records[row["id"]]["text"]


@pytest.mark.model
def test_ray_pipeline_on_the_embedded_model_equals_local_batches(ray_session, whole_prompt_server, tmp_path):
    """Answer for answer: the server evaluates each prompt whole, as the two runs send the same requests in another
    order (with prefix reuse a greedy answer may move with the request before it)."""
    from samner_dspy.scale import annotate_corpus, read_output

    texts = [
        "Bob Dylan played harmonica on Blonde on Blonde, recorded in Nashville.",
        "Ada Lovelace worked with Charles Babbage in London.",
        "Zoë Müller moved from München to Berlin.",
        "The Beatles were formed in Liverpool in 1960.",
        "Angela Merkel met Emmanuel Macron in Paris.",
    ]
    schema = ["person", "city", "band", "album"]
    config = embedded_config(whole_prompt_server.api_base)
    items = list(SAMNER(config).annotate_batch(texts, schema, concurrency=2))
    assert all(item.ok for item in items), [item.error for item in items]
    local = {item.index: [e.to_dict() for e in item.prediction.entities] for item in items}
    inputs = write_jsonl(tmp_path / "in.jsonl", texts)
    run = annotate_corpus(str(inputs), str(tmp_path / "out"), schema, config, workers=1, threads=1, batch_size=1)
    assert (run.written, run.failed) == (len(texts), 0), read_output(str(tmp_path / "out"), errors=True)
    records = {r["index"]: r["entities"] for r in read_output(str(tmp_path / "out"))}
    assert records == local
    assert any(local.values())  # the comparison is not between empty results


def test_rows_already_written_are_left_out_by_id_or_index():
    import pandas as pd

    from samner_dspy.scale.replay import to_rows as _to_rows

    batch = pd.DataFrame({"doc": ["b", "a", "c"], "index": [0, 1, 2], "text": ["x", "y", "z"]})
    by_id = [pickle.loads(state) for state in _to_rows(batch, "text", "doc", frozenset({"a"}))["state"]]
    assert [(row.key, row.text) for row in by_id] == [({"id": "b"}, "x"), ({"id": "c"}, "z")]
    by_index = [pickle.loads(state) for state in _to_rows(batch, "text", None, frozenset({0, 2}))["state"]]
    assert [(row.key, row.text) for row in by_index] == [({"index": 1}, "y")]
