"""API keys reach the server and nothing else: not traces, errors, logs, saved programs, outputs or reports."""

import json
import logging
import os
import secrets
import subprocess
import sys

import dspy

from samner_dspy import SAMNER
from samner_dspy.serving.stand_in import Recorder, Reply, stand_in_server
from tests import figures

KEY_ENV = "SAMNER_TEST_SECRET_KEY"


def faulty(request, number):
    """Some failures on the way, so that error paths are searched too."""
    content = request["messages"][-1]["content"]
    if "unauthorised" in content:
        return Reply(status=401)
    if "broken" in content and request["model"] == "archetype":
        return Reply(content="not json at all")
    return None


def leaks(key, directory):
    return [str(path) for path in directory.rglob("*") if path.is_file() and key.encode() in path.read_bytes()]


def test_the_api_key_never_leaves_the_request(tmp_path, monkeypatch, caplog):
    key = f"sk-samner-{secrets.token_hex(16)}"
    monkeypatch.setenv(KEY_ENV, key)
    caplog.set_level(logging.DEBUG)
    texts = ["Ada Lovelace met Babbage.", "A broken reply about Ada.", "An unauthorised request about Ada."]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    music = tmp_path / "data" / "music"
    music.mkdir(parents=True)
    (music / "test.txt").write_text("Ada\tB-musicalartist\nsang\tO\n\nBob\tB-musicalartist\nDylan\tI-musicalartist\n")

    with stand_in_server(script=faulty) as api_base:
        config = tmp_path / "samner.toml"
        config.write_text(
            f'[defaults]\napi_base = "{api_base}"\napi_key_env = "{KEY_ENV}"\nnum_retries = 0\n', encoding="utf-8"
        )
        program = SAMNER(str(config))
        items = list(program.annotate_batch(texts, ["person"], 2))
        seen = [program.dump_state(), repr(program), repr(program.config), caplog.text]
        seen += [item.prediction.trace.to_json() if item.ok else item.error for item in items]
        (tmp_path / "saved").mkdir()
        program.save(str(tmp_path / "saved" / "state.json"))
        program.save(str(tmp_path / "saved" / "state.pkl"))
        program.save(str(tmp_path / "saved" / "program"), save_program=True)
        loaded = dspy.load(str(tmp_path / "saved" / "program"), allow_pickle=True)
        assert [e.text for e in loaded(texts[0], ["person"]).entities] == ["Ada"], "a loaded program still works"
        copied = program.deepcopy()  # as optimizers copy a program: the copy's stages are bound again on use
        assert copied.anchor.backend is None and program.anchor.backend is not None
        assert [e.text for e in copied(texts[0], ["person"]).entities] == ["Ada"]

        env = {**os.environ, "SAMNER_HOME": str(tmp_path / "home")}
        cli = [sys.executable, "-m", "samner_dspy.cli"]
        annotate = subprocess.run(
            [*cli, "annotate", "-f", tmp_path / "in.jsonl", "-s", "person", "-c", config, "-o", tmp_path / "out.jsonl"],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        evaluate = subprocess.run(
            [*cli, "eval", "--data", tmp_path / "data", "--domains", "music", "--limit", "2", "--config", config,
             "--output-dir", tmp_path / "eval"],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        authorizations = [headers.get("Authorization") for headers in Recorder.headers_seen]

    assert authorizations and set(authorizations) == {f"Bearer {key}"}, "the key is in use on every request"
    assert [item.ok for item in items] == [True, True, False] and "HTTP 401" in items[2].error
    assert annotate.returncode == 1 and "HTTP 401" in annotate.stderr
    assert evaluate.returncode == 0, evaluate.stderr
    assert (tmp_path / "eval" / "report.md").is_file() and (tmp_path / "eval" / "cache").is_dir()
    seen += [annotate.stdout, annotate.stderr, evaluate.stdout, evaluate.stderr]
    assert [i for i, text in enumerate(seen) if key in str(text)] == []
    assert leaks(key, tmp_path) == [], "saved programs, outputs, error files, reports and caches"
    figures.count(inputs=len(texts) * 2 + 2, faults=2)
