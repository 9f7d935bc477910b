"""A `samner eval` killed with SIGKILL mid-run resumes to exactly what an uninterrupted run writes."""

import json
import os
import signal
import subprocess
import sys
import time

from samner_dspy.serving.stand_in import stand_in_server


def eval_command(data, config, output):
    return [
        sys.executable, "-m", "samner_dspy.cli", "eval", "--data", str(data), "--domains", "music,politics",
        "--limit", "6", "--configs", "samner", "--direct", "--config", str(config), "--output-dir", str(output),
        "--threads", "2", "--no-cache",
    ]  # fmt: skip


def predictions(directory):
    """Per configuration, every valid line's key -> entities; and whether any key was written twice."""
    found, duplicated = {}, False
    for path in sorted(directory.glob("*.jsonl")):
        rows = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            duplicated |= record["key"] in rows
            rows[record["key"]] = record["entities"]
        found[path.stem] = rows
    return found, duplicated


def test_killed_evaluation_resumes_without_losing_or_repeating_a_sentence(crossner_dir, tmp_path):
    with stand_in_server(latency_s=0.05) as api_base:
        config = tmp_path / "samner.toml"
        config.write_text(f'[defaults]\napi_base = "{api_base}"\n', encoding="utf-8")
        env = {**os.environ, "SAMNER_HOME": str(tmp_path / "home")}

        whole = tmp_path / "whole"
        subprocess.run(eval_command(crossner_dir, config, whole), env=env, check=True, capture_output=True, timeout=300)

        killed = tmp_path / "killed"
        process = subprocess.Popen(
            eval_command(crossner_dir, config, killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 120
        target = killed / "samner.jsonl"
        while time.monotonic() < deadline and process.poll() is None:
            if target.is_file() and len(target.read_text(encoding="utf-8").splitlines()) >= 3:
                break
            time.sleep(0.01)
        assert process.poll() is None, "the run finished before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait()
        partial, _ = predictions(killed)
        assert len(partial.get("samner", {})) < 12 and "direct" not in partial

        subprocess.run(
            eval_command(crossner_dir, config, killed), env=env, check=True, capture_output=True, timeout=300
        )

    expected, _ = predictions(whole)
    resumed, duplicated = predictions(killed)
    assert not duplicated, "no sentence is written twice"
    assert {name: len(rows) for name, rows in expected.items()} == {"samner": 12, "direct": 12}
    assert resumed == expected
    assert sum(len(entities) for entities in expected["samner"].values()) > 0, "the stand-in yields entities"
    whole_report = json.loads((whole / "report.json").read_text(encoding="utf-8"))["results"]
    resumed_report = json.loads((killed / "report.json").read_text(encoding="utf-8"))["results"]
    for name in ("samner", "direct"):
        assert resumed_report[name]["strict"] == whole_report[name]["strict"]
