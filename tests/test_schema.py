import json

import pytest

from samner_dspy import Schema, SchemaError
from samner_dspy.schema import CROSSNER_DOMAINS, crossner_label_name, crossner_schema


def test_mapping_list_and_schema_forms_agree():
    from_mapping = Schema.coerce({"person": "a human being", "city": ""})
    from_list = Schema.coerce(["person", "city"])
    assert from_mapping.labels == from_list.labels == ["person", "city"]
    assert from_mapping["person"] == "a human being"
    assert from_mapping["city"] == "city", "a label without a definition is defined by its name"
    assert Schema.coerce(from_mapping) is from_mapping


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({}, "empty"),
        ([], "empty"),
        ({"person": "x", " Person ": "y"}, "duplicate"),
        (["city", "city"], "duplicate"),
        ({1: "one"}, "must be strings"),
        (["ok", 3], "must be strings"),
        ({"  ": "blank"}, "empty or only whitespace"),
        ({"person": 5}, "definition of label 'person'"),
        ({"None": "nothing"}, "reserved"),
        (42, "cannot read a schema"),
        ("wikidata:all", "unknown schema name"),
        ("crossner:cooking", "unknown CrossNER domain"),
    ],
)
def test_malformed_schemas_get_a_clear_error(value, message):
    with pytest.raises(SchemaError, match=message):
        Schema.coerce(value)


def test_every_crossner_domain_has_a_definition_for_every_label(crossner_dir):
    for domain in CROSSNER_DOMAINS:
        schema = crossner_schema(domain)
        raw_labels = set()
        for line in (crossner_dir / domain / "train.txt").read_text(encoding="utf-8").splitlines():
            tag = line.rpartition("\t")[2]
            if tag.startswith(("B-", "I-")):
                raw_labels.add(tag[2:])
        assert {crossner_label_name(raw) for raw in raw_labels} == set(schema.labels), domain
        for label in schema.labels:
            assert len(schema[label]) > len(label) + 10, f"{domain}:{label} needs a real definition"


def test_label_names_are_natural_language():
    assert crossner_label_name("programlang") == "programming language"
    assert crossner_label_name("musicalartist") == "musical artist"
    assert crossner_label_name("misc") == "miscellaneous"
    with pytest.raises(SchemaError, match="unknown CrossNER label"):
        crossner_label_name("spaceship")


def test_match_label_repairs_case_and_spacing_only():
    schema = Schema.from_name("crossner:ai")
    assert schema.match_label("Programming_Language") == "programming language"
    assert schema.match_label("researcher") == "researcher"
    assert schema.match_label("scientist") is None
    assert schema.match_label(None) is None


def test_parse_arg_reads_every_command_line_form(tmp_path):
    assert Schema.parse_arg("crossner:music").name == "crossner:music"
    assert Schema.parse_arg('{"person": "a human"}')["person"] == "a human"
    assert Schema.parse_arg("person, city").labels == ["person", "city"]
    path = tmp_path / "labels.json"
    path.write_text(json.dumps({"drug": "a medicine"}), encoding="utf-8")
    assert Schema.parse_arg(str(path)).labels == ["drug"]
    with pytest.raises(SchemaError, match="does not exist"):
        Schema.parse_arg(str(tmp_path / "missing.json"))
    with pytest.raises(SchemaError, match="not valid JSON"):
        Schema.parse_arg("{person")
    with pytest.raises(SchemaError):
        Schema.parse_arg(" , ")
