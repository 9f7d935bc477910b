"""`samner annotate` over files against a stand-in server: order, errors, resume, documents, bad endpoints."""

import json
import socket
import subprocess
import sys

import pytest

from samner_dspy.serving.stand_in import stand_in_server


def annotate(*args, check=True):
    command = [sys.executable, "-m", "samner_dspy.cli", "annotate", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=check)


@pytest.fixture()
def config(tmp_path):
    with stand_in_server(latency_s=0.02) as api_base:
        path = tmp_path / "samner.toml"
        path.write_text(f'[defaults]\napi_base = "{api_base}"\n', encoding="utf-8")
        yield path


def test_jsonl_input_streams_in_order_records_failures_and_resumes(config, tmp_path):
    texts = [f"Person{i} met Zoë in Paris." for i in range(12)]
    texts[5] = "   "
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    output = tmp_path / "out.jsonl"

    first = annotate(
        "--file", inputs, "--schema", "person,city", "--config", config, "-o", output, "--concurrency", "4", check=False
    )
    assert first.returncode == 1 and "1 input(s) failed" in first.stderr
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [r["index"] for r in records] == [i for i in range(12) if i != 5], "input order, failed one left out"
    for record in records:
        assert record["text"] == texts[record["index"]]
        for entity in record["entities"]:
            assert record["text"][entity["start"] : entity["end"]] == entity["text"]
    (failure,) = [json.loads(line) for line in (tmp_path / "out.jsonl.errors.jsonl").read_text().splitlines()]
    assert failure["index"] == 5 and "empty or only whitespace" in failure["error"]

    second = annotate("--file", inputs, "--schema", "person,city", "--config", config, "-o", output, check=False)
    assert second.returncode == 1, "only the failed input is retried, and it fails again"
    assert len(output.read_text(encoding="utf-8").splitlines()) == 11


def test_long_documents_are_windowed_and_mapped_back(config, tmp_path):
    document = "Zoë Müller lives in Paris. " * 40
    inputs = tmp_path / "doc.txt"
    inputs.write_text(document.strip() + "\n", encoding="utf-8")
    output = tmp_path / "out.jsonl"
    annotate(
        "--file",
        inputs,
        "--schema",
        "person,city",
        "--config",
        config,
        "-o",
        output,
        "--max-chars",
        "200",
        "--overlap",
        "50",
    )
    (record,) = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    windows = record["trace"]["windows"]
    assert len(windows) > 4 and all(window["trace"]["stages"] for window in windows)
    assert windows[-1]["end"] == len(record["text"]) and [w["error"] for w in windows] == [None] * len(windows)
    assert record["entities"], "the stand-in finds the first word of each window"
    for entity in record["entities"]:
        assert record["text"][entity["start"] : entity["end"]] == entity["text"]


def test_unreachable_endpoint_stops_before_the_first_input(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = tmp_path / "samner.toml"
    path.write_text(f'[defaults]\napi_base = "http://127.0.0.1:{port}/v1"\n', encoding="utf-8")
    done = annotate("some text", "--schema", "person", "--config", path, check=False)
    assert done.returncode == 2
    assert f"http://127.0.0.1:{port}/v1" in done.stderr


def test_threshold_drops_low_scores_and_output_carries_scores(config, tmp_path):
    output = tmp_path / "out.jsonl"
    annotate("Ada met Zoë.", "--schema", "person", "--config", config, "-o", output, "--threshold", "0.5")
    (record,) = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert record["entities"] and all(0.5 <= e["score"] <= 1.0 for e in record["entities"])
    assert any(stage["stage"] == "confidence" for stage in record["trace"]["stages"])
    output.unlink()
    annotate("Ada met Zoë.", "--schema", "person", "--config", config, "-o", output, "--threshold", "1")
    (record,) = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    # The stand-in returns no logprobs and both extractors agree on "Ada": evidence alone scores it 1.0.
    assert [e["text"] for e in record["entities"]] == ["Ada"]
    refused = annotate("Ada.", "--schema", "person", "--config", config, "--threshold", "2", check=False)
    assert refused.returncode == 2 and "between 0 and 1" in refused.stderr


def test_preset_flag_picks_the_modes_and_explicit_flags_win(config, tmp_path):
    def stages(*flags):
        done = annotate("Zoë met Ada in Paris.", "--schema", "person,city", "--config", config, "--json", *flags)
        (record,) = [json.loads(line) for line in done.stdout.splitlines()]
        return {stage["stage"]: stage for stage in record["trace"]["stages"]}

    paper = stages()  # a server other than the embedded model: the paper's modes
    assert paper["calibrator"]["inputs"]["mode"] == "sentence" and "from_anchor" not in paper["calibrator"]["inputs"]
    small = stages("--preset", "small")
    assert small["calibrator"]["inputs"]["mode"] == "entity" and "from_anchor" in small["calibrator"]["inputs"]
    assert small["consensus"]["inputs"]["mode"] == "verify"
    mixed = stages("--preset", "small", "--calibration", "sentence")
    assert mixed["calibrator"]["inputs"]["mode"] == "sentence" and "from_anchor" in mixed["calibrator"]["inputs"]
    trained = stages("--preset", "trained")
    assert "explorer" not in trained and "matcher" in trained and "person_role" in trained
    assert "from_anchor" in trained["matcher"]["inputs"]
    explored = stages("--preset", "trained", "--with-explorer", "--no-person-role")
    assert "explorer" in explored and "matcher" in explored and "person_role" not in explored
    assert "explorer" not in stages("--no-explorer")
