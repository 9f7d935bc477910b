"""`samner annotate --output` survives a SIGKILL and a server that dies mid-batch: a resumed run ends
with every input annotated exactly once, as an uninterrupted run would have."""

import json
import random
import signal
import subprocess
import sys
import time

from samner_dspy import SAMNER
from samner_dspy.serving.stand_in import stand_in_server
from tests import figures

TEXTS = [f"Zoë Müller {i} flew from 東京 to São Paulo with Ada Lovelace." for i in range(24)]


def annotate_command(inputs, config, output, concurrency=2):
    return [
        sys.executable, "-m", "samner_dspy.cli", "annotate", "--file", str(inputs), "--schema", "person,city",
        "--config", str(config), "-o", str(output), "--concurrency", str(concurrency),
    ]  # fmt: skip


def write_inputs(path, texts):
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")


def records(path):
    """Every line of an output file, which must each be a whole record; and the indices, in file order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    parsed = [json.loads(line) for line in lines]
    return parsed, [record["index"] for record in parsed]


def without_timings(record):
    record = json.loads(json.dumps(record))
    for stage in record["trace"]["stages"]:
        stage.pop("latency_s")
    return record


def line_count(path):
    return len(path.read_bytes().splitlines()) if path.is_file() else 0


def wait_for(condition, what, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_annotate_killed_at_a_random_point_resumes_to_the_uninterrupted_output(tmp_path):
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    inputs = tmp_path / "in.jsonl"
    write_inputs(inputs, TEXTS)
    with stand_in_server(latency_s=0.03) as api_base:
        config = tmp_path / "samner.toml"
        config.write_text(f'[defaults]\napi_base = "{api_base}"\n', encoding="utf-8")
        whole = tmp_path / "whole.jsonl"
        subprocess.run(annotate_command(inputs, config, whole), check=True, capture_output=True, timeout=120)

        killed = tmp_path / "killed.jsonl"
        process = subprocess.Popen(
            annotate_command(inputs, config, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        at_least = rng.randint(1, 12)
        wait_for(lambda: line_count(killed) >= at_least or process.poll() is not None, "the first records")
        time.sleep(rng.uniform(0, 0.05))
        assert process.poll() is None, f"the run finished before it could be killed (seed {seed})"
        process.send_signal(signal.SIGKILL)
        process.wait()
        written = line_count(killed)
        assert 0 < written < len(TEXTS), f"seed {seed}"
        # A kill can also land inside a write, leaving a torn last line, here cut inside a UTF-8 character.
        torn = (json.dumps(json.loads(whole.read_text(encoding="utf-8").splitlines()[-1]), ensure_ascii=False)).encode()
        with killed.open("ab") as handle:
            handle.write(torn[: torn.index("ü".encode()) + 1])

        resumed = subprocess.run(annotate_command(inputs, config, killed), capture_output=True, text=True, timeout=120)
        assert resumed.returncode == 0, resumed.stderr

    expected, expected_order = records(whole)
    got, order = records(killed)  # json.loads fails on any torn or merged line left behind
    assert expected_order == list(range(len(TEXTS)))
    assert sorted(order) == expected_order, f"every input exactly once (seed {seed}, killed after {written})"
    by_index = {record["index"]: without_timings(record) for record in got}
    assert [by_index[i] for i in expected_order] == [without_timings(r) for r in expected]
    assert sum(len(r["entities"]) for r in expected) > 0, "the stand-in yields entities"
    figures.count(inputs=2 * len(TEXTS), faults=2, lost=len(TEXTS) - len(set(order)))


def start_server(port=0):
    """A stand-in serving on ``port`` (0: a free one), and its base URL."""
    return take_over(standby_server(port))


def standby_server(port):
    """A stand-in that has done its imports and waits to take ``port`` until told: started before the old server is
    killed, it is back within milliseconds however loaded the machine is, so a short outage stays inside one retry."""
    code = (
        "import sys; from samner_dspy.serving import stand_in; "
        "print('ready', flush=True); sys.stdin.readline(); stand_in.main()"
    )
    server = subprocess.Popen(
        [sys.executable, "-c", code, "--latency", "0.04", "--port", str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout.readline().strip() == "ready"
    return server


def take_over(standby):
    """Tell a :func:`standby_server` to take its port: the server and its base URL."""
    standby.stdin.write("\n")
    standby.stdin.flush()
    api_base = standby.stdout.readline().strip()
    assert api_base.startswith("http://127.0.0.1:"), api_base
    return standby, api_base


def kill(server):
    server.send_signal(signal.SIGKILL)
    server.wait()


def test_a_server_that_dies_mid_batch_and_comes_back_loses_no_input(tmp_path):
    texts = TEXTS[:16]
    inputs = tmp_path / "in.jsonl"
    write_inputs(inputs, texts)
    output = tmp_path / "out.jsonl"
    server, api_base = start_server()
    port = int(api_base.rsplit(":", 1)[1].split("/")[0])
    try:
        config = tmp_path / "samner.toml"
        config.write_text(f'[defaults]\napi_base = "{api_base}"\nnum_retries = 1\ntimeout_s = 5\n', encoding="utf-8")
        expected = [
            item.prediction.entities for item in SAMNER(str(config)).annotate_batch(texts, ["person", "city"], 4)
        ]

        run = subprocess.Popen(annotate_command(inputs, config, output, 2), stderr=subprocess.PIPE, text=True)
        # A short outage: requests in flight fail, and their one retry (after a second) finds the server back.
        standby = standby_server(port)
        wait_for(lambda: line_count(output) >= 3, "the first records")
        kill(server)
        down = time.perf_counter()
        lines_then = line_count(output)
        server, _ = take_over(standby)
        wait_for(lambda: line_count(output) > lines_then or run.poll() is not None, "a record after the outage")
        figures.recovered_in(time.perf_counter() - down)

        # A long outage: retries run out, so the inputs left fail, each with a clear error, and the run ends.
        wait_for(lambda: line_count(output) >= 9 or run.poll() is not None, "more records")
        assert run.poll() is None, "the run finished before the second outage"
        kill(server)
        before_long_outage = set(records(output)[1])
        stderr = run.communicate(timeout=120)[1]
        assert run.returncode == 1, stderr
        failed = [json.loads(line) for line in (tmp_path / "out.jsonl.errors.jsonl").read_text().splitlines()]
        assert failed, "the long outage failed some inputs"
        assert min(f["index"] for f in failed) > max(before_long_outage), "the short outage failed none"
        for failure in failed:
            assert failure["error"].startswith("EndpointUnreachableError: cannot reach the ")
            assert f"endpoint at {api_base}" in failure["error"]

        server, _ = start_server(port)
        back = time.perf_counter()
        resumed = subprocess.run(annotate_command(inputs, config, output), capture_output=True, text=True, timeout=120)
        assert resumed.returncode == 0, resumed.stderr
        figures.recovered_in(time.perf_counter() - back)
    finally:
        kill(server)

    got, order = records(output)
    assert sorted(order) == list(range(len(texts))), "every input annotated exactly once"
    by_index = {record["index"]: record["entities"] for record in got}
    assert [by_index[i] for i in range(len(texts))] == [[e.to_dict() for e in entities] for entities in expected]
    figures.count(inputs=len(texts), faults=2 + len(failed), lost=len(texts) - len(set(order)))
