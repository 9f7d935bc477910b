"""The requests-as-rows path: the stages' requests answered in rounds by a Ray Data LLM processor.

Rounds are driven by hand against the stand-in server (one round per stage, the local program's requests and
entities), then on a Ray cluster through Ray's own HTTP processor, and on the embedded model. Here the vLLM
engine processor's rows and configuration are checked against Ray's stage contracts, for either vLLM build;
tests/test_ray_vllm_engine.py runs it for real.
"""

from __future__ import annotations

import json

import httpx
import pytest

from samner_dspy import SAMNER, SamnerConfig, Schema
from samner_dspy.errors import SamnerError
from samner_dspy.scale import HttpEndpoint, VllmEngine, annotate_corpus, read_output
from samner_dspy.scale.processors import request_of
from samner_dspy.scale.replay import Row, Spec
from samner_dspy.scale.requests import Book, StageReply
from samner_dspy.scale.rounds import _Advance
from samner_dspy.serving.hardware import fast_dtype
from samner_dspy.serving.stand_in import Recorder, Reply, stand_in_server
from tests.test_ray_pipeline import embedded_config, write_jsonl

SCHEMA = ["person", "city"]
TEXT = "Ada Lovelace met Charles Babbage in London, and Ada wrote to London again."
TWO_MENTIONS = json.dumps({"person": ["Ada Lovelace"], "city": ["London"]})


def anchor_finds_two(request: dict, number: int) -> Reply | None:
    """The anchor's extraction (IEPile's JSON prompt) finds two mentions, so per-entity calibration asks twice."""
    content = request["messages"][-1]["content"]
    if request["model"] == "anchor" and content.startswith("{"):
        return Reply(content=TWO_MENTIONS)
    return Reply(status=500) if "FAILS" in content else None


def answered(api_base: str, payload: dict) -> StageReply:
    reply = httpx.post(api_base + "/chat/completions", json=payload, timeout=30).json()
    if "error" in reply:
        return StageReply("", error=reply["error"]["message"])
    usage = reply["usage"]
    return StageReply(reply["choices"][0]["message"]["content"], usage["prompt_tokens"], usage["completion_tokens"])


def drive(spec: Spec, text: str, api_base: str) -> tuple[Row, list[list[str]]]:
    """Rounds by hand: advance, answer every recorded request over HTTP, until the row has its record."""
    endpoint = HttpEndpoint(api_base)
    advance = _Advance(spec, endpoint.name)
    row, rounds = Row({"index": 0}, text, Book()), []
    while (row := advance.advance(row)).record is None and row.error is None:
        rounds.append(sorted(request.stage for request in row.pending()))
        for key, request in row.book.pending.items():
            row.book.replies[key] = answered(api_base, endpoint.payload(request))
        assert len(rounds) <= 4, rounds
    return row, rounds


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, [["anchor", "explorer"], ["archetype"], ["calibrator"]]),
        ({"ccr": "verify"}, [["anchor", "explorer"], ["anchor"], ["archetype"], ["calibrator"]]),
        # one request per occurrence: "London" twice is asked as "London" and "London (2)"
        ({"calibration": "entity"}, [["anchor", "explorer"], ["archetype"], ["calibrator"] * 3]),
        ({"calibration": "off"}, [["anchor", "explorer"], ["calibrator"]]),
    ],
)
def test_each_stage_is_one_round_asking_what_the_local_program_asks(options, expected):
    with stand_in_server(script=anchor_finds_two) as api_base:
        config = SamnerConfig.vllm(api_base=api_base)
        local = SAMNER(config, **options)(TEXT, SCHEMA)
        # The processors return text only: the one difference is that no token log-probabilities are asked for.
        asked_locally = sorted(json.dumps({**r, "logprobs": None}, sort_keys=True) for r in Recorder.requests)
        Recorder.requests.clear()
        row, rounds = drive(Spec(config, Schema.coerce(SCHEMA), options), TEXT, api_base)
        asked_in_rounds = sorted(json.dumps({**r, "logprobs": None}, sort_keys=True) for r in Recorder.requests)
    assert rounds == expected
    assert row.error is None
    assert row.record["entities"] == [e.to_dict() for e in local.entities]
    assert [e["text"] for e in row.record["entities"]] == ["Ada Lovelace", "London", "London"]
    assert all(TEXT[e["start"] : e["end"]] == e["text"] for e in row.record["entities"])
    # The very requests the local program sends, no more: prompts, schemas and sampling are one code path.
    assert asked_in_rounds == asked_locally


def test_a_failed_request_fails_its_input_with_the_reason():
    with stand_in_server(script=anchor_finds_two) as api_base:
        config = SamnerConfig.vllm(api_base=api_base)
        row, rounds = drive(Spec(config, Schema.coerce(SCHEMA)), "Nobody FAILS here.", api_base)
    assert row.record is None and rounds == [["anchor", "explorer"]]
    assert "EndpointRequestError" in row.error and api_base in row.error and "HTTP 500" in row.error


def succeeding(requests: list[dict]) -> int:
    """Requests other than the failing ones (which local LMs retry and Ray's HTTP stage does not)."""
    return sum("FAILS" not in request["messages"][-1]["content"] for request in requests)


def test_on_ray_the_http_processor_matches_local_batches_and_resumes(ray_session, tmp_path):
    texts = [TEXT, "Zoë Müller flew from Berlin to São Paulo.", "  ", "Nobody FAILS here.", TEXT + " " + TEXT]
    inputs = write_jsonl(tmp_path / "in.jsonl", texts)
    output = tmp_path / "out"
    options = {"calibration": "entity", "max_chars": 90, "overlap": 20, "workers": 1, "batch_size": 2}
    with stand_in_server(script=anchor_finds_two) as api_base:
        config = SamnerConfig.vllm(api_base=api_base)
        run = annotate_corpus(str(inputs), str(output), SCHEMA, config, llm=HttpEndpoint(api_base), **options)
        in_rounds = succeeding(Recorder.requests)
        Recorder.requests.clear()
        items = list(SAMNER(config, calibration="entity").annotate_batch(texts, SCHEMA, max_chars=90, overlap=20))
        assert in_rounds == succeeding(Recorder.requests)  # as many requests as local batches send
        records = {r["index"]: r for r in read_output(str(output))}
        errors = {r["index"]: r["error"] for r in read_output(str(output), errors=True)}
        # A text within max_chars is one piece, not a one-window document: its failed request fails the input.
        assert (run.written, run.failed) == (len(records), len(errors)) == (3, 2)
        assert "empty or only whitespace" in errors[2]
        assert all(part in errors[3] for part in ("EndpointRequestError", api_base, "HTTP 500"))
        # Each input is what local batch annotation returns, failed windows included.
        for item in items:
            if item.ok:
                assert records[item.index]["entities"] == [e.to_dict() for e in item.prediction.entities]
                failed_windows = [w.error is None for w in item.prediction.trace.windows]
                assert [w["error"] is None for w in records[item.index]["trace"].get("windows", [])] == failed_windows
        assert len(records[4]["trace"]["windows"]) > 1 and len(records[4]["entities"]) == 6

        # A killed job: one finished part file is lost (back to its temporary name); the rerun redoes just that.
        part = sorted(output.glob("part-*.jsonl"))[0]
        lost = {json.loads(line)["index"] for line in part.read_text(encoding="utf-8").splitlines()}
        part.rename(output / f".tmp-{part.name}")
        again = annotate_corpus(str(inputs), str(output), SCHEMA, config, llm=HttpEndpoint(api_base), **options)
    assert again.skipped == len(records) - len(lost) and again.written == len(lost)
    assert {r["index"]: r["entities"] for r in read_output(str(output))} == {
        i: r["entities"] for i, r in records.items()
    }


def recorded(config: SamnerConfig, options: dict | None = None) -> list:
    """The requests of a text's first two rounds, recorded without a server."""
    spec = Spec(config, Schema.coerce(SCHEMA), options or {})
    advance, row = _Advance(spec, "nothing: requests are only recorded"), Row({"index": 0}, TEXT, Book())
    row = advance.advance(row)
    first = row.pending()
    for key in row.book.pending:
        row.book.replies[key] = StageReply(TWO_MENTIONS)
    return first + advance.advance(row).pending()


def test_vllm_engine_rows_follow_ray_stage_contracts(tmp_path):
    from ray.data.llm import build_processor

    base = tmp_path / "base"  # a local model folder: the processor reads its config, nothing is downloaded
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    adapters = {"anchor": "/loras/anchor", "explorer": "/loras/explorer", "archetype": "/loras/archetype"}
    engine = VllmEngine(str(base), adapters, max_lora_rank=16, replicas=2, accelerator_type="H100")
    config = SamnerConfig.vllm(base_model=str(base))
    engine.check(config)
    requests = recorded(config)
    assert sorted(r.stage for r in requests) == ["anchor", "archetype", "explorer"]
    processor = build_processor(engine.config(), preprocess=engine.engine_row)
    stages = list(processor.stages.values())
    names = [type(stage).__name__ for stage in stages]
    assert names == ["ChatTemplateStage", "TokenizeStage", "vLLMEngineStage", "DetokenizeStage"]
    for request in requests:
        row = engine.engine_row({"row_id": "r", "key": request.key, "request": json.dumps(request.__dict__)})
        assert request_of({"request": json.dumps(request.__dict__)}) == request
        # What the chat template and engine stages read (tokenize and detokenize read what those write).
        assert set(stages[0].get_required_input_keys()) | set(stages[2].get_required_input_keys()) <= set(row)
        assert "model" in stages[2].get_optional_input_keys()
        assert row["model"] == adapters[request.stage]  # each stage's LoRA, loaded by the engine itself
        assert row["messages"] == request.chat() and row["messages"][-1]["role"] == "user"
        assert request.schema() and json.loads(row["sampling_params"]["structured_outputs"]["json"]) == request.schema()
        assert row["sampling_params"]["temperature"] == 0.0 and row["sampling_params"]["max_tokens"] > 0
    settings = engine.config()
    assert settings.engine_kwargs["enable_lora"] and settings.engine_kwargs["max_loras"] == 3
    assert settings.engine_kwargs["max_lora_rank"] == 16 and settings.should_continue_on_error
    calibrator = next(r for r in recorded(config, {"calibration": "off"}) if r.stage == "calibrator")
    assert engine.engine_row({"row_id": "r", "key": "k", "request": json.dumps(calibrator.__dict__)})["model"] == str(
        base
    )
    # An engine error fails the request, and so its input, with the engine's reason.
    failed = VllmEngine.reply_row({"row_id": "r", "key": "k", "__inference_error__": "CUDA out of memory"})
    assert failed["error"] == "CUDA out of memory" and failed["text"] == ""
    done = VllmEngine.reply_row(
        {"row_id": "r", "key": "k", "generated_text": "{}", "num_input_tokens": 7, "num_generated_tokens": 2}
    )
    assert (done["text"], done["prompt_tokens"], done["completion_tokens"], done["error"]) == ("{}", 7, 2, None)


def test_vllm_engine_settings_follow_the_vllm_build():
    adapters = {"anchor": "/a", "explorer": "/e", "archetype": "/r"}
    cpu = VllmEngine("/models/base", adapters, 8, tensor_parallel_size=2, build="cpu")
    settings = cpu.config()
    # Ray's default bundles ask for a GPU each, and wait forever on a machine with none.
    assert [bundle["CPU"] for bundle in settings.placement_group_config["bundles"]] == [1.0, 1.0]
    assert not any(bundle.get("GPU") for bundle in settings.placement_group_config["bundles"])
    assert settings.log_engine_metrics is False
    assert settings.runtime_env == {"env_vars": {"VLLM_CPU_KVCACHE_SPACE": "2"}}
    assert (settings.engine_kwargs["dtype"], settings.engine_kwargs["max_model_len"]) == (fast_dtype(), 4096)
    stages = (settings.chat_template_stage, settings.tokenize_stage, settings.detokenize_stage)
    assert [stage["num_cpus"] for stage in stages] == [0.25] * 3
    assert cpu.reserved_cpus() == 2 + 3 * 0.25
    chosen = VllmEngine(
        "/models/base", adapters, 8, max_model_len=2048, kv_cache_gib=8, engine_kwargs={"dtype": "float32"}, build="cpu"
    ).config()
    assert (chosen.engine_kwargs["dtype"], chosen.engine_kwargs["max_model_len"]) == ("float32", 2048)
    assert chosen.runtime_env == {"env_vars": {"VLLM_CPU_KVCACHE_SPACE": "8"}}
    cuda = VllmEngine("/models/base", adapters, 8, replicas=2, build="cuda")
    settings = cuda.config()
    assert settings.placement_group_config is None and settings.log_engine_metrics and settings.runtime_env is None
    assert "dtype" not in settings.engine_kwargs and "max_model_len" not in settings.engine_kwargs
    assert settings.tokenize_stage is True or "num_cpus" not in settings.tokenize_stage
    assert cuda.reserved_cpus() == 2 * (1 + 3)


def test_a_local_ray_has_the_cpus_the_rounds_hold():
    from samner_dspy.scale.ray_data import reserved_cpus

    engine = VllmEngine("/models/base", build="cpu")
    # The advance pool, the row-making tasks, the engine and Ray's three CPU stages, one CPU for the tasks between.
    assert reserved_cpus(2, 0.25, engine) == 3 * 0.25 + 1.75 + 1
    assert reserved_cpus(2, 0.25, HttpEndpoint("http://localhost:1/v1", concurrency=2)) == 3 * 0.25 + 0.5 + 1
    assert reserved_cpus(2, 0.25) == 7 * 0.25 + 1  # three actor pools without a processor


def test_vllm_engine_refuses_a_configuration_naming_models_it_does_not_load():
    engine = VllmEngine("meta-llama/Meta-Llama-3-8B-Instruct", {"anchor": "/a", "explorer": "/e", "archetype": "/r"})
    engine.check(SamnerConfig.vllm())
    with pytest.raises(SamnerError, match="'embedded'"):
        engine.check(SamnerConfig.embedded())


def test_cli_ray_vllm_checks_the_adapters_first(tmp_path, capsys):
    from samner_dspy.cli import main

    inputs = write_jsonl(tmp_path / "in.jsonl", [TEXT])
    code = main(
        ["annotate", "--engine", "ray-vllm", "--file", str(inputs), "-o", str(tmp_path / "out"), "-s", "person",
         "--anchor", str(tmp_path / "missing-anchor"), "--explorer", str(tmp_path / "explorer"),
         "--archetype", str(tmp_path / "archetype")]
    )  # fmt: skip
    assert code == 2
    assert "the anchor adapter folder" in (err := capsys.readouterr().err) and "missing-anchor does not exist" in err
    assert not (tmp_path / "out").exists()  # nothing started


@pytest.mark.model
def test_rounds_on_the_embedded_model_equal_local_batches(ray_session, whole_prompt_server, tmp_path):
    """Answer for answer: the rounds send the stages' prompts in another order than a local batch, so the server
    evaluates each prompt whole (with prefix reuse a greedy answer may move with the request before it)."""
    texts = ["Ada Lovelace worked with Charles Babbage in London.", "Zoë Müller moved from München to Berlin."]
    schema = ["person", "city"]
    config = embedded_config(whole_prompt_server.api_base)
    items = list(SAMNER(config).annotate_batch(texts, schema, concurrency=1))
    assert all(item.ok for item in items), [item.error for item in items]
    local = {item.index: [e.to_dict() for e in item.prediction.entities] for item in items}
    llm = HttpEndpoint(whole_prompt_server.api_base, dialect="llama_cpp")
    out = tmp_path / "out"
    run = annotate_corpus(str(write_jsonl(tmp_path / "in.jsonl", texts)), str(out), schema, config, llm=llm)
    assert (run.written, run.failed) == (len(texts), 0), read_output(str(out), errors=True)
    assert {r["index"]: r["entities"] for r in read_output(str(out))} == local
    assert any(local.values())  # the comparison is not between empty results


def test_base_in_place_of_every_adapter_serves_the_stages_on_the_base_model():
    from samner_dspy.config import SamnerConfig

    engine = VllmEngine.for_adapters("base", "base", anchor="base", base_model="/models/base", build="cpu")
    assert engine.adapters == {} and "enable_lora" not in engine.config().engine_kwargs
    config = SamnerConfig.vllm(base_model="/models/base")
    with pytest.raises(SamnerError, match="asks for the model 'anchor'"):
        engine.check(config)
    for stage in ("anchor", "explorer", "archetype"):
        config = config.with_stage(stage, config.calibrator)
    engine.check(config)
