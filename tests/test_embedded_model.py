"""Every stage through the real HTTP path: the embedded model behind llama.cpp's OpenAI-compatible server.

These are slow (a request takes seconds on two cores), so each test runs a handful of short sentences.
"""

from __future__ import annotations

import json
import subprocess
import sys
from itertools import islice

import pytest

from samner_dspy import SAMNER, Schema, SchemaError
from samner_dspy.archetypes import archetype_names
from samner_dspy.backends import build_backends
from samner_dspy.config import SamnerConfig
from samner_dspy.errors import EmbeddedModelError
from samner_dspy.evals.crossner import read_bio
from samner_dspy.programs import DirectTyper, SpanVerifier
from samner_dspy.serving.embedded import MODELS, EmbeddedModel, model_path

pytestmark = pytest.mark.model

STAGES = ["anchor", "explorer", "consensus", "grounding", "archetype", "calibrator"]


def server_config(server, prefix: str = "openai") -> SamnerConfig:
    """What a user writes to point the program at an OpenAI-compatible llama.cpp server."""
    return SamnerConfig.from_mapping(
        {
            "defaults": {
                "api_base": server.api_base,
                "model": f"{prefix}/embedded",
                "structured_output": "llama_cpp",
                "max_tokens": 256,
            }
        }
    )


def assert_grounded(text: str, schema: Schema, result) -> None:
    for entity in result.entities:
        assert text[entity.start : entity.end] == entity.text
        assert entity.label in schema.labels
        assert entity.archetype is None or entity.archetype in archetype_names()
        assert entity.sources and set(entity.sources) <= {"anchor", "explorer"}


def test_the_model_file_is_joined_and_hash_checked(monkeypatch, tmp_path, embedded_server):
    path = model_path()
    assert path.stat().st_size > 400_000_000
    assert path.with_suffix(".verified").read_text().startswith(MODELS["qwen2.5-coder-0.5b"].sha256)
    wrong = EmbeddedModel("broken", "test", MODELS["qwen2.5-coder-0.5b"].chunk_packages, "0" * 64, "reinstall")
    monkeypatch.setitem(MODELS, "broken", wrong)
    monkeypatch.setenv("SAMNER_HOME", str(tmp_path))
    with pytest.raises(EmbeddedModelError, match="expected 0000"):
        model_path("broken")
    assert not list((tmp_path / "models").glob("*.gguf")), "a file that fails its hash is not kept"


def test_full_pipeline_on_crossner_sentences_over_http(embedded_server, crossner_dir):
    program = SAMNER(server_config(embedded_server))
    schema = Schema.from_name("crossner:ai")
    sentences = list(islice(read_bio(crossner_dir / "ai" / "test.txt"), 2))
    gold_spans_found = 0
    for sentence in sentences:
        result = program(sentence.text, schema)
        assert_grounded(sentence.text, schema, result)
        trace = result.trace
        assert [record.stage for record in trace.stages] == STAGES
        for stage in ("anchor", "explorer", "archetype", "calibrator"):
            record = trace[stage]
            assert record.model == "openai/embedded" and record.requests == 1
            assert record.latency_s > 0 and record.prompt_tokens > 0 and record.completion_tokens > 0
        assert trace.requests == 4
        gold = {(e.start, e.end) for e in sentence.entities}
        gold_spans_found += len(gold & {(e.start, e.end) for e in result.entities})
    assert gold_spans_found >= 1, "the embedded model finds real CrossNER entities"


def test_vllm_style_configuration_and_the_optional_stages(embedded_server):
    """The hosted_vllm/ provider (what a vLLM deployment uses), VerifySpan and direct typing, over HTTP."""
    config = server_config(embedded_server, prefix="hosted_vllm")
    backends = build_backends(config)
    text = "Ada Lovelace worked with Charles Babbage in London on the Analytical Engine."
    schema = Schema.coerce({"person": "a named person", "city": "a named city"})

    verdict = SpanVerifier().bind(backends["anchor"])(text=text, schema=schema, candidates=["London", "engine"])
    record = verdict.record
    assert verdict.answered and verdict.confirmed <= {"London", "engine"}
    assert record.requests == 1 and record.model == "hosted_vllm/embedded" and record.error is None
    assert record.completion_tokens > 0, "the model wrote a reply (an empty one would not parse)"

    typed = DirectTyper().bind(backends["calibrator"])(text=text, schema=schema, entities=["Ada Lovelace", "London"])
    # The reply's schema requires a label for each entity: a working model labels both, and gets one right.
    assert set(typed.label_of) == {"Ada Lovelace", "London"}
    assert set(typed.label_of.values()) <= {"person", "city"}
    assert typed.label_of["Ada Lovelace"] == "person" or typed.label_of["London"] == "city"
    assert typed.record.error is None and typed.record.prompt_tokens > 0

    result = SAMNER(config, ccr="verify", calibration="entity")(text, schema)
    assert_grounded(text, schema, result)
    assert result.trace["calibrator"].requests == len({e for e in result.trace["archetype"].outputs["archetypes"]})


def test_matched_typing_over_http(embedded_server):
    """``calibration="matched"``: the archetype stage's prompt over the labels' definitions, on the real model."""
    config = server_config(embedded_server)
    text = "Ada Lovelace worked with Charles Babbage in London on the Analytical Engine."
    schema = Schema.coerce({"person": "a named person", "city": "a named city", "machine": "a named machine"})

    matched = SAMNER(config, preset="paper", calibration="matched")(text, schema)
    assert_grounded(text, schema, matched)
    record = matched.trace["matcher"]
    assert record.requests == 1 and record.error is None and record.completion_tokens > 0
    assert set(record.outputs["labels"].values()) <= set(schema.labels) and record.outputs["labels"]
    assert {e.typed_by for e in matched.entities} == {"matcher"}


def test_default_program_runs_on_the_embedded_model_with_non_ascii_and_repeats(monkeypatch):
    monkeypatch.delenv("SAMNER_CONFIG", raising=False)
    text = "Zoë Müller visited München. Later Zoë Müller returned to München with José."
    schema = Schema.coerce({"person": "a named person", "city": "a named city"})
    program = SAMNER()
    assert program.preset == "trained", "on the embedded model the default is the trained preset"
    result = program(text, schema)
    assert_grounded(text, schema, result)
    anchor_adapter = program.config.anchor.adapter
    assert anchor_adapter and result.trace["anchor"].model == f"openai/embedded+lora:{anchor_adapter}"
    assert result.trace["anchor"].error is None and "explorer" not in result.trace
    typing = result.trace["matcher"] if "matcher" in result.trace else None
    from_anchor = typing.inputs["from_anchor"] if typing is not None else {}
    assert result.entities and {e.typed_by for e in result.entities} <= {"anchor", "matcher", "person_role"}
    one_label = {m: t[0] for m, t in result.trace["anchor"].outputs["mentions"].items() if len(t) == 1}
    assert all(one_label.get(key.split(" (")[0]) == label for key, label in from_anchor.items()), from_anchor
    returned = {(e.start, e.end) for e in result.entities}
    for entity in result.entities:
        index = text.find(entity.text)
        while index != -1:
            span = (index, index + len(entity.text))
            covered = any(s < span[1] and span[0] < e and (s, e) != span for s, e in returned)
            assert span in returned or covered, f"occurrence {span} of {entity.text!r} is missing"
            index = text.find(entity.text, index + 1)


def test_cli_annotates_writes_jsonl_and_resumes(embedded_server, tmp_path):
    config_file = tmp_path / "samner.toml"
    config_file.write_text(
        f'[defaults]\napi_base = "{embedded_server.api_base}"\nmodel = "openai/embedded"\n'
        'structured_output = "llama_cpp"\nmax_tokens = 128\n',
        encoding="utf-8",
    )
    inputs = tmp_path / "in.txt"
    inputs.write_text("Barack Obama visited Paris.\n\nAngela Merkel met Emmanuel Macron.\n", encoding="utf-8")
    output = tmp_path / "out.jsonl"
    command = [
        sys.executable, "-m", "samner_dspy.cli", "annotate", "--file", str(inputs), "--schema", "person,city",
        "--config", str(config_file), "--output", str(output), "--no-explorer", "--calibration", "off", "--json",
    ]  # fmt: skip
    first = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [r["index"] for r in records] == [0, 1]
    assert [json.loads(line)["index"] for line in first.stdout.splitlines()] == [0, 1]
    for record in records:
        for entity in record["entities"]:
            assert record["text"][entity["start"] : entity["end"]] == entity["text"]
        assert record["trace"]["stages"][0]["stage"] == "anchor"

    # An interrupted run resumes: drop the last record and run again; only the missing input is redone.
    output.write_text(output.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    second = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    assert [json.loads(line)["index"] for line in second.stdout.splitlines()] == [1]
    assert [json.loads(line)["index"] for line in output.read_text(encoding="utf-8").splitlines()] == [0, 1]


def test_cli_bad_input_exits_with_a_clear_message(tmp_path):
    command = [sys.executable, "-m", "samner_dspy.cli", "annotate", "some text", "--schema", "a,a"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "duplicate schema label 'a'" in done.stderr
    with pytest.raises(SchemaError):
        Schema.parse_arg("a,a")


def test_the_embedded_server_keeps_only_the_logits_it_needs():
    """With every position's logits kept, each prompt-cache entry copied n_ctx x vocabulary floats (2.5 GB for
    Qwen) past the cache's size limit, and a long evaluation was killed for memory. A server per prompt family
    needs no prompt cache at all (it reuses the prefix it evaluated last)."""
    from samner_dspy.serving.embedded import EmbeddedServer

    command = EmbeddedServer().command()
    assert command[command.index("--logits_all") + 1] == "False"
    assert command[command.index("--cache") + 1] == "False"


def test_the_embedded_server_exits_when_the_process_that_started_it_is_killed(tmp_path):
    """A SIGKILLed annotation runs no clean-up; its server must not live on holding gigabytes."""
    import os
    import signal
    import time
    from pathlib import Path

    pid_file = tmp_path / "server.pid"
    starter = (
        "import sys, time\n"
        "from samner_dspy.serving.embedded import EmbeddedServer\n"
        "server = EmbeddedServer().start()\n"
        f"open({str(pid_file)!r}, 'w').write(str(server._process.pid))\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", starter])
    deadline = time.monotonic() + 180
    while not pid_file.is_file() or not pid_file.read_text():
        assert time.monotonic() < deadline and parent.poll() is None, "the embedded server did not start"
        time.sleep(0.5)
    server_pid = int(pid_file.read_text())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    status = Path(f"/proc/{server_pid}/status")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if "\tZ" in next(line for line in status.read_text().splitlines() if line.startswith("State:")):
                return  # exited; only its parent of adoption has yet to reap it
        except FileNotFoundError:
            return
        time.sleep(0.2)
    os.kill(server_pid, signal.SIGKILL)
    raise AssertionError("the embedded server outlived the process that started it")


def test_each_stage_keeps_its_prompt_prefix_evaluated_from_one_sentence_to_the_next(embedded_server):
    """The default embedded deployment: one llama.cpp server per stage, so a stage's instructions and definitions
    are evaluated once and the next sentence's request evaluates little more than the sentence."""
    from samner_dspy.serving.embedded import shared_servers

    program = SAMNER(SamnerConfig.embedded(trained=False), preset="paper")  # one request per stage, one server each
    roles = ["anchor", "explorer", "archetype", "calibrator"]
    backends = program.backends()
    servers = shared_servers(roles)
    assert len({server.api_base for server in servers.values()}) == len(roles)
    assert {backends[role].api_base for role in roles} == {server.api_base for server in servers.values()}
    program("Bob Dylan recorded Blonde on Blonde in Nashville.", "crossner:music")
    before = {role: servers[role].evaluated_prompt_tokens() for role in roles}
    result = program("Joni Mitchell recorded Blue in Los Angeles.", "crossner:music")
    sent = {record.stage: record.prompt_tokens for record in result.trace.stages}
    evaluated = {role: servers[role].evaluated_prompt_tokens() - before[role] for role in roles}
    assert all(evaluated[role] > 0 for role in roles if sent.get(role)), evaluated
    for role in ("archetype", "calibrator"):  # the stages with long fixed definitions
        if sent.get(role):
            assert evaluated[role] < 0.5 * sent[role], (role, evaluated[role], sent[role])


def test_grammar_checked_greedy_decoding_gives_the_tokens_of_llama_cpps_own_sampler_chain(embedded_server):
    """The embedded server's sampler asks the grammar about the chosen token only; under greedy decoding that must
    pick exactly the tokens llama-cpp-python's chain picks after masking the whole vocabulary."""
    import llama_cpp

    from samner_dspy.constraints import choice_per_key, string_lists
    from samner_dspy.serving import embedded_sampling

    llm = llama_cpp.Llama(str(model_path()), n_ctx=1024, verbose=False, n_threads=1)
    cases = [
        ("Entities in: Geoffrey Hinton taught at the University of Toronto.\nJSON:", string_lists(["person", "org"])),
        ("Archetypes of: Paris, Bob Dylan.\nJSON:", choice_per_key(["Paris", "Bob Dylan"], ["Person", "Location"])),
    ]

    def decode() -> list[str]:
        texts = []
        for prompt, schema in cases:
            llm.reset()
            grammar = llama_cpp.LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
            reply = llm.create_completion(prompt, max_tokens=80, temperature=0, repeat_penalty=1.1, grammar=grammar)
            texts.append(reply["choices"][0]["text"])
        return texts

    original = llama_cpp.Llama._init_sampler
    try:
        chain = decode()
        embedded_sampling.install()
        assert llama_cpp.Llama._init_sampler is not original
        grammar = llama_cpp.LlamaGrammar.from_json_schema(json.dumps(cases[0][1]), verbose=False)
        sampler = llm._init_sampler(temp=0.0, grammar=grammar, repeat_penalty=1.1)
        assert isinstance(sampler, embedded_sampling.GrammarCheckedGreedy), "this llama-cpp-python fell back"
        checked = decode()
    finally:
        llama_cpp.Llama._init_sampler = original
    assert checked == chain
    assert all(json.loads(text) for text in checked)  # grammar-valid, complete JSON objects


def test_a_new_server_starts_from_the_prompts_an_earlier_one_evaluated(embedded_server, tmp_path):
    """The prefix store: a second process evaluates only what its prompt does not share with a stored one, and
    answers exactly as a server that evaluated the stored prompt itself before (llama.cpp's own prefix reuse)."""
    import httpx

    from samner_dspy.archetypes import archetype_definitions
    from samner_dspy.serving.embedded import EmbeddedServer

    system = "Give the archetype of the entity, one of these: " + json.dumps(archetype_definitions())
    first_sentence, second_sentence = "Bob Dylan recorded Blonde on Blonde.", "Joni Mitchell recorded Blue."

    def ask(server, sentence):
        reply = httpx.post(
            f"{server.api_base}/chat/completions",
            json={
                "model": "embedded",
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": sentence}],
                "max_tokens": 12,
                "temperature": 0,
            },
            timeout=120,
        ).json()
        return reply["choices"][0]["message"]["content"], reply["usage"]["prompt_tokens"]

    store = tmp_path / "prefixes"
    with EmbeddedServer(prefix_store=store, log_path=tmp_path / "first.log") as first:
        ask(first, first_sentence)
    assert len(list(store.glob("*.kv"))) == 1
    with EmbeddedServer(prefix_store=store, log_path=tmp_path / "second.log") as second:
        answer, sent = ask(second, second_sentence)
        evaluated = second.evaluated_prompt_tokens()
    assert 0 < evaluated < 0.2 * sent, (evaluated, sent)
    with EmbeddedServer(prefix_store=False, log_path=tmp_path / "live.log") as live:
        ask(live, first_sentence)  # the same prefix, evaluated here and kept live
        assert ask(live, second_sentence)[0] == answer


def test_the_set_up_check_annotates_a_sentence_with_every_stage(embedded_server):
    """The check runs every stage of the default program on the committed adapters, the typing stage included, and
    its requests never import LiteLLM (4 s on 2 cores): the embedded servers take OpenAI's json_schema format, which
    dspy's own client sends."""
    starter = (
        "import sys; from samner_dspy.cli import main; code = main(['embedded', 'check']); "
        "print('litellm imported' if 'litellm' in sys.modules else 'no litellm'); sys.exit(code)"
    )
    completed = subprocess.run([sys.executable, "-c", starter], capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-2000:]
    *_, line, imported = completed.stdout.strip().splitlines()
    assert imported == "no litellm"
    assert line.startswith("embedded model check (trained preset): ") and " requests, " in line, line
    entities = line.count(" (") - 1
    requests = int(line.rsplit("; ", 1)[1].split(" requests")[0])
    assert entities >= 1 and requests == 3, f"the anchor, the archetype stage and the matcher, once each: {line}"
    assert "(person)" in line or "(organisation)" in line or "(location)" in line, line


def test_the_single_request_baselines_over_http(embedded_server, crossner_dir):
    """The plain prompt, the definitions without examples and the anchor alone, each one request on the model."""
    from samner_dspy.evals.runner import CONFIGURATIONS

    config = server_config(embedded_server)
    schema = Schema.from_name("crossner:music")
    sentence = next(iter(read_bio(crossner_dir / "music" / "test.txt")))
    gold = {(e.start, e.end) for e in sentence.entities}
    for name in ("plain", "direct-short", "anchor-only"):
        result = CONFIGURATIONS[name].build(config)(sentence.text, schema)
        assert result.trace.requests == 1, name
        record = result.trace.stages[0]
        assert record.error is None and record.prompt_tokens > 0 and record.completion_tokens > 0, name
        for entity in result.entities:
            assert sentence.text[entity.start : entity.end] == entity.text and entity.label in schema.labels
        assert gold & {(e.start, e.end) for e in result.entities}, f"{name} finds a gold span"
    plain = CONFIGURATIONS["plain"].build(config)(sentence.text, schema).trace["direct"]
    assert plain.inputs["prompt"] == "plain" and plain.prompt_tokens < 250, "the plain prompt is short"
