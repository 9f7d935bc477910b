"""Label definitions from a file (this project's schema shape, or the authors' per-domain shape) and label naming."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from samner_dspy.errors import SchemaError
from samner_dspy.evals.definitions import builtin_schema, eval_schemas, named_gold
from samner_dspy.formats.labelled import bio_sentence
from samner_dspy.schema import crossner_label_name, crossner_schema

# Written for these tests, in the shape of the SAM-NER authors' schema_define_crossNER.json.
AUTHORS_SHAPE = Path(__file__).parent / "fixtures" / "definitions" / "crossner-shape.json"
FILE_DEFINITIONS = json.loads(AUTHORS_SHAPE.read_text(encoding="utf-8"))


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "definitions.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_the_authors_shape_maps_raw_tags_onto_readable_labels_in_the_files_order():
    schemas = eval_schemas(["politics", "music"], AUTHORS_SHAPE)
    politics = schemas["politics"]
    assert set(politics.labels) == set(crossner_schema("politics").labels)
    assert politics.labels[:4] == ["politician", "person", "organisation", "political party"], "the file's order"
    assert politics["political party"] == FILE_DEFINITIONS["politics"]["politicalparty"]
    assert politics["miscellaneous"] == FILE_DEFINITIONS["politics"]["misc"]
    assert schemas["music"]["musical artist"] == FILE_DEFINITIONS["music"]["musicalartist"]
    assert politics["country"] != crossner_schema("politics")["country"], "the file's text, not the built-in one"


def test_raw_label_names_send_crossner_tags_with_either_definitions():
    from_file = eval_schemas(["music"], AUTHORS_SHAPE, "raw")["music"]
    assert from_file.labels[:3] == ["musicalartist", "person", "band"]
    assert from_file["musicgenre"] == FILE_DEFINITIONS["music"]["musicgenre"]
    builtin = builtin_schema("music", "raw")
    assert set(builtin.labels) == set(FILE_DEFINITIONS["music"])
    assert builtin["musicgenre"] == crossner_schema("music")["music genre"]
    assert eval_schemas(["music"])["music"].to_dict() == crossner_schema("music").to_dict()


def test_one_schema_of_readable_labels_defines_a_single_domain(tmp_path):
    readable = {crossner_schema("politics").labels[i]: f"definition {i}" for i in range(9)}
    schema = eval_schemas(["politics"], write(tmp_path, readable))["politics"]
    assert schema.to_dict() == readable
    with pytest.raises(SchemaError, match=r"one schema .* but 2 domains"):
        eval_schemas(["politics", "music"], write(tmp_path, readable))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"politics": FILE_DEFINITIONS["politics"]}, "has no domain 'music'; it has politics"),
        ({**FILE_DEFINITIONS, "music": {**FILE_DEFINITIONS["music"], "guitar": "x"}}, "'guitar' is not a label of"),
        ({**FILE_DEFINITIONS, "music": {k: v for k, v in FILE_DEFINITIONS["music"].items() if k != "band"}},
         "domain 'music' has no definition for band"),
        ({**FILE_DEFINITIONS, "music": {**FILE_DEFINITIONS["music"], "musical artist": "x"}}, "defined twice"),
        ({**FILE_DEFINITIONS, "music": {**FILE_DEFINITIONS["music"], "song": 3}}, "must be a non-empty string"),
        ({**FILE_DEFINITIONS, "country": "a state"}, "mixes domains"),
        (["politics", "music"], "must hold a JSON object"),
        ({}, "an empty one"),
    ],
)  # fmt: skip
def test_bad_definitions_files_are_refused_with_the_problem_named(tmp_path, data, message):
    with pytest.raises(SchemaError, match=message):
        eval_schemas(["politics", "music"], write(tmp_path, data))


def test_a_missing_or_unreadable_file_is_refused(tmp_path):
    with pytest.raises(SchemaError, match="does not exist"):
        eval_schemas(["music"], tmp_path / "none.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    with pytest.raises(SchemaError, match="not valid JSON"):
        eval_schemas(["music"], broken)
    with pytest.raises(SchemaError, match="unknown label naming"):
        eval_schemas(["music"], None, "tags")
    with pytest.raises(SchemaError, match="unknown CrossNER domain"):
        eval_schemas(["jazz"])


def test_gold_is_renamed_to_the_raw_tags_and_left_alone_otherwise():
    sentence = bio_sentence(
        ["Miles", "Davis", "played", "jazz"],
        ["B-musicalartist", "I-musicalartist", "O", "B-musicgenre"],
        crossner_label_name,
    )
    assert [e.label for e in named_gold([sentence])[0].entities] == ["musical artist", "music genre"]
    raw = named_gold([sentence], "raw")[0]
    assert [(e.text, e.label) for e in raw.entities] == [("Miles Davis", "musicalartist"), ("jazz", "musicgenre")]
    assert (raw.text, raw.tokens, raw.tags) == (sentence.text, sentence.tokens, sentence.tags)


BIO = {
    "politics": "Lincoln\tB-politician\nreplaced\tO\nBuell\tB-politician\n.\tO\n\n"
    "The\tO\nWhigs\tB-politicalparty\nlost\tO\n.\tO\n",
    "music": "Miles\tB-musicalartist\nDavis\tI-musicalartist\nplayed\tO\njazz\tB-musicgenre\n.\tO\n",
}


def crossner_folder(tmp_path: Path) -> Path:
    for domain, text in BIO.items():
        (tmp_path / "data" / domain).mkdir(parents=True)
        (tmp_path / "data" / domain / "test.txt").write_text(text, encoding="utf-8")
    return tmp_path / "data"


def run_eval(tmp_path: Path, *options: str) -> tuple[int, list[dict]]:
    from samner_dspy.cli import main
    from samner_dspy.serving.stand_in import Recorder, stand_in_server

    with stand_in_server() as api_base:
        config = tmp_path / "samner.toml"
        config.write_text(f'[defaults]\napi_base = "{api_base}"\n', encoding="utf-8")
        command = ["eval", "--data", str(crossner_folder(tmp_path)), "--domains", "politics,music", "--direct"]
        command += ["--config", str(config), "--no-cache", "--threads", "1", "--bootstrap-resamples", "200"]
        code = main([*command, *options])
        return code, list(Recorder.requests)


def prompts(requests: list[dict]) -> str:
    return "\n".join(m["content"] for r in requests for m in r["messages"])


def test_samner_eval_sends_the_files_definitions_and_reports_against_direct(tmp_path):
    out = tmp_path / "out"
    code, requests = run_eval(tmp_path, "--definitions", str(AUTHORS_SHAPE), "--output-dir", str(out))
    assert code == 0
    sent = prompts(requests)
    assert FILE_DEFINITIONS["politics"]["politicalparty"] in sent and FILE_DEFINITIONS["music"]["band"] in sent
    assert crossner_schema("music")["band"] not in sent, "the built-in definitions are replaced"
    results = json.loads((out / "report.json").read_text(encoding="utf-8"))["results"]
    assert results["samner"]["paired"]["direct"]["sentences"] == 3
    assert set(results["samner"]["label_accuracy"]) == {"politics", "music"}
    text = (out / "report.md").read_text(encoding="utf-8")
    assert "## Paired against Direct prompting (macro strict F1)" in text and "200 resamples" in text
    gold = [json.loads(line)["gold"] for line in (out / "samner.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [4, 9, "political party"] in [g for gs in gold for g in gs], "gold keeps the readable names"


def test_samner_eval_with_raw_label_names_sends_and_scores_crossner_tags(tmp_path):
    out = tmp_path / "out"
    code, requests = run_eval(tmp_path, "--label-names", "raw", "--output-dir", str(out))
    assert code == 0
    sent = prompts(requests)
    assert '"politicalparty"' in sent and '"political party"' not in sent, "the labels, quoted in JSON"
    gold = [
        g for line in (out / "direct.jsonl").read_text(encoding="utf-8").splitlines() for g in json.loads(line)["gold"]
    ]
    assert {g[2] for g in gold} == {"politician", "politicalparty", "musicalartist", "musicgenre"}


def test_samner_eval_names_a_bad_definitions_file(tmp_path, capsys):
    bad = write(tmp_path, {"politics": FILE_DEFINITIONS["politics"]})
    code, _ = run_eval(tmp_path, "--definitions", str(bad), "--output-dir", str(tmp_path / "out"))
    assert code == 2 and "has no domain 'music'" in capsys.readouterr().err
