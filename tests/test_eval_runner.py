"""The evaluation runner and report on scripted replies: streaming, resume after a torn write, the table."""

from collections import defaultdict
from itertools import islice

import pytest

from samner_dspy.evals import report
from samner_dspy.evals.crossner import read_bio
from samner_dspy.evals.runner import Item, done_keys, read_results, run
from samner_dspy.programs import DirectNER
from samner_dspy.schema import Schema
from tests.helpers import stage_lms


def oracle_reply(sentence, wrong_label=False):
    """What a perfect direct model would answer for a sentence (optionally with every label swapped)."""
    by_label = defaultdict(list)
    for entity in sentence.entities:
        wrong = "song" if entity.label != "song" else "album"
        by_label[wrong if wrong_label else entity.label].append(entity.text)
    return {"entities": dict(by_label)}


def test_runner_streams_resumes_and_the_report_scores_it(crossner_dir, tmp_path):
    sentences = list(islice(read_bio(crossner_dir / "music" / "test.txt"), 3))
    items = [Item("music", i, s) for i, s in enumerate(sentences)]
    schemas = {"music": Schema.from_name("crossner:music")}
    output = tmp_path / "direct.jsonl"

    first = DirectNER(lms=stage_lms(calibrator=[oracle_reply(s) for s in sentences[:2]]))
    assert run(first, items[:2], schemas, output, threads=1) == 2
    assert done_keys(output) == {"music:0", "music:1"}

    with output.open("a", encoding="utf-8") as handle:
        handle.write('{"key": "music:2", "domain": "mu')  # a run killed in the middle of a write
    second = DirectNER(lms=stage_lms(calibrator=[oracle_reply(sentences[2], wrong_label=True)]))
    assert run(second, items, schemas, output, threads=1) == 1, "only the unfinished sentence is redone"
    assert run(second, items, schemas, output, threads=1) == 0

    records = read_results(output)
    assert [r["key"] for r in records] == ["music:0", "music:1", "music:2"]
    for record, sentence in zip(records, sentences, strict=True):
        assert record["gold"] == [[e.start, e.end, e.label] for e in sentence.entities]

    summary = report.summarize({"direct": records})["direct"]
    gold_total = sum(len(s.entities) for s in sentences)
    strict = summary["strict"]["music"]
    assert strict["tp"] == len(sentences[0].entities) + len(sentences[1].entities)
    assert strict["fn"] == len(sentences[2].entities) == strict["fp"] > 0
    assert summary["span"]["music"]["tp"] == gold_total, "every span was found; only labels were wrong"
    assert summary["requests_per_sentence"] == 1.0

    markdown = report.markdown(report.summarize({"direct": records}), "test", "samner eval ...")
    assert "| Method | Music | Avg. |" in markdown
    assert f"| Direct prompting | {100 * strict['f1']:.1f} | {100 * strict['f1']:.1f} |" in markdown


def test_a_write_torn_inside_a_utf8_character_is_redone_not_fatal(tmp_path):
    output = tmp_path / "samner.jsonl"
    output.write_bytes(b'{"key": "music:0", "domain": "music", "index": 0}\n{"key": "music:1", "text": "Zo\xc3')
    assert done_keys(output) == {"music:0"}
    assert [r["key"] for r in read_results(output)] == ["music:0"]


def test_a_sentence_whose_request_fails_is_left_for_the_rerun_and_the_others_go_on(crossner_dir, tmp_path):
    from samner_dspy.errors import EndpointRequestError

    sentences = list(islice(read_bio(crossner_dir / "music" / "test.txt"), 3))
    items = [Item("music", i, s) for i, s in enumerate(sentences)]
    schemas = {"music": Schema.from_name("crossner:music")}
    output = tmp_path / "direct.jsonl"

    class FlakyNER(DirectNER):
        def forward(self, text, schema):
            if text == sentences[1].text:
                raise EndpointRequestError("http://127.0.0.1:9/v1", "calibrator", "LMTimeoutError: timed out")
            return super().forward(text, schema)

    flaky = FlakyNER(lms=stage_lms(calibrator=[oracle_reply(sentences[0]), oracle_reply(sentences[2])]))
    run(flaky, items, schemas, output, threads=1)
    assert done_keys(output) == {"music:0", "music:2"}

    healthy = DirectNER(lms=stage_lms(calibrator=[oracle_reply(sentences[1])]))
    assert run(healthy, items, schemas, output, threads=1) == 1
    assert done_keys(output) == {"music:0", "music:1", "music:2"}


def test_a_held_out_slice_keeps_each_sentences_index(crossner_dir):
    from samner_dspy.evals.evaluate import Data

    _, _, first = Data("music", limit=3, crossner_dir=str(crossner_dir)).load()
    _, _, later = Data("music", limit=2, crossner_dir=str(crossner_dir), start=1).load()
    assert [item.key for item in later["music"]] == ["music:1", "music:2"]
    assert [item.sentence for item in later["music"]] == [item.sentence for item in first["music"][1:]]
    assert Data("music", limit=2, start=1).heading("zero-shot").startswith("CrossNER test, 2 after the first 1")


def test_dev_is_read_for_decisions_and_the_heading_says_what_each_sample_is_for(crossner_dir):
    from samner_dspy.evals.crossner import read_bio
    from samner_dspy.evals.evaluate import Data

    _, _, dev = Data("music", split="dev", limit=2, crossner_dir=str(crossner_dir)).load()
    from_file = list(read_bio(crossner_dir / "music" / "dev.txt"))[:2]
    assert [item.sentence.tokens for item in dev["music"]] == [s.tokens for s in from_file]
    _, _, test = Data("music", split="test", limit=2, crossner_dir=str(crossner_dir)).load()
    assert [i.sentence.tokens for i in test["music"]] != [i.sentence.tokens for i in dev["music"]]
    assert Data("music", split="dev").heading("zero-shot").endswith("decision sample: choices are made on it")
    report = Data("music", start=30, limit=60).heading("zero-shot")
    assert "60 after the first 30" in report and "report sample: test sentences 30 onwards" in report
    assert "in-sample: the first 30" in Data("music", start=20, limit=10).heading("zero-shot")
    assert "in-sample" in Data("music").heading("zero-shot")


def test_a_trained_row_runs_its_untrained_twin_with_the_committed_adapter(tmp_path, monkeypatch):
    import pytest

    from samner_dspy.config import SamnerConfig
    from samner_dspy.errors import SamnerError
    from samner_dspy.evals import runner
    from samner_dspy.serving import trained as trained_module

    folder = tmp_path / "qwen2.5-coder-0.5b" / "anchor"
    monkeypatch.setattr(trained_module, "TRAINED_ADAPTERS", tmp_path)
    with pytest.raises(SamnerError, match=r"trained anchor adapter .* needs .*qwen2\.5-coder-0\.5b/anchor"):
        runner.build_program("anchor-only-trained", SamnerConfig.embedded(trained=False))
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    trained = runner.build_program("anchor-only-trained", SamnerConfig.embedded(trained=False))
    twin = runner.build_program("anchor-only", SamnerConfig.embedded(trained=False))
    assert trained.config.anchor.adapter == str(folder) and twin.config.anchor.adapter is None
    assert trained.config.explorer == twin.config.explorer, "only the named stage changes"
    assert runner.CONFIGURATIONS["anchor-only-trained"].options == runner.CONFIGURATIONS["anchor-only"].options
    with pytest.raises(SamnerError, match="for the embedded model"):
        runner.build_program("anchor-only-trained", SamnerConfig())  # every stage on a vLLM server


def test_the_trained_typing_rows_match_labels_with_archetype_mix_on_the_archetype_stage(tmp_path, monkeypatch):
    from samner_dspy.config import SamnerConfig
    from samner_dspy.errors import SamnerError
    from samner_dspy.evals import runner
    from samner_dspy.serving import trained as trained_module
    from tests.helpers import trained_adapter_folders

    monkeypatch.setattr(trained_module, "TRAINED_ADAPTERS", tmp_path)
    model = trained_adapter_folders(tmp_path, "anchor", "archetype-mix")
    program = runner.build_program("anchor-trained-matched-all", SamnerConfig.embedded(trained=False))
    assert program.config.archetype.adapter == str(model / "archetype-mix")
    assert program.config.anchor.adapter == str(model / "anchor")
    assert program.matcher.endpoint == "archetype", "the matcher asks the archetype stage's (adapted) model"
    assert (program.calibration, program.use_explorer, program.trust_anchor_types) == ("matched", False, False)
    assert runner.build_program("small-trained", SamnerConfig.embedded(trained=False)).use_explorer
    with pytest.raises(SamnerError, match="trained explorer adapter"):
        runner.build_program("small-trained-explorer", SamnerConfig.embedded(trained=False))
    trained_adapter_folders(tmp_path, "explorer")
    every = runner.build_program("small-trained-explorer", SamnerConfig.embedded(trained=False))
    assert every.config.explorer.adapter == str(model / "explorer")
    assert every.config.anchor == program.config.anchor and every.config.archetype == program.config.archetype


def test_the_served_trained_row_runs_the_default_requests_on_the_configurations_own_stage_models(tmp_path):
    from samner_dspy.config import SamnerConfig
    from samner_dspy.evals import runner

    served = SamnerConfig.vllm(api_base="http://127.0.0.1:8000/v1", base_model="qwen2.5-coder-0.5b")
    program = runner.build_program("trained-served", served)
    default = runner.build_program("trained", SamnerConfig.embedded(trained=False))
    assert program.config == served, "no adapter is added: the server's LoRAs are the stages' models"
    for option in ("preset", "calibration", "use_explorer", "trust_anchor_types", "person_role"):
        assert getattr(program, option) == getattr(default, option), option
