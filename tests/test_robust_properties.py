"""Property tests: arbitrary Unicode text and schemas against an adversarial LM at every stage.

Whatever the text, the schema and the replies, a program returns entities that are the text's own
substrings with labels from the schema, or raises a documented error for input that is not usable.
"""

import json
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from samner_dspy import SAMNER, InputTextError, Schema, SchemaError, Trace
from samner_dspy.archetypes import archetype_names
from samner_dspy.programs import DirectNER
from samner_dspy.tagging import CLOSE_TAG, OPEN_TAG, TAG_LOOKALIKE, escape_tags, tag_entities
from samner_dspy.types import Span
from tests import figures
from tests.adversary import HOSTILE_FRAGMENTS, Adversary, adversarial_lms

WORDS = [
    "Ada",
    "Lovelace",
    "ada",
    "London",
    "東京",
    "Zoë",
    "São Paulo",
    "İstanbul",
    "straße",
    "STRASSE",
    "ﬁle",
    "e\u0301",
    "\u200b",
    "\u202e",
    "\x00",
    "O'Brien",
    "AT&T",
    "C++",
    "U.S.",
    "🎉",
    "\n\n",
    "\t",
    *HOSTILE_FRAGMENTS,
]
word = st.one_of(st.sampled_from(WORDS), st.text(max_size=6))
TEXTS = st.one_of(
    st.text(max_size=120),
    st.lists(word, max_size=20).map(" ".join),
    st.lists(word, max_size=20).map("".join),
    st.lists(st.one_of(word, st.characters(categories=["Cs"])), min_size=1, max_size=8).map(" ".join),
)
LABEL = st.one_of(
    st.sampled_from(
        ["person", "city", "Person", "PERSON", "none", "organisation", "programming language", "a_b", "a b", " ", ""]
    ),
    st.sampled_from(HOSTILE_FRAGMENTS),
    st.text(max_size=10),
)
SCHEMAS = st.one_of(
    st.lists(LABEL, min_size=1, max_size=4),
    st.dictionaries(LABEL, st.one_of(st.none(), st.text(max_size=15)), max_size=4),
    st.lists(LABEL, max_size=0),
    st.sampled_from(["crossner:music", "crossner:nowhere", "person,city"]),
    st.lists(st.integers(), min_size=1, max_size=2),
)
PROGRAMS = [
    ("samner", {}),
    ("samner", {"ccr": "verify"}),
    ("samner", {"ccr": "off", "allow_no_label": True}),
    ("samner", {"calibration": "entity"}),
    ("samner", {"calibration": "off"}),
    ("samner", {"use_anchor": False, "max_types_per_request": 1}),
    ("samner", {"use_explorer": False}),
    ("direct", {}),
]
SOURCES = {"anchor", "explorer", "direct"}


def build(kind, options, adversary):
    lms = adversarial_lms(adversary)
    return DirectNER(lms=lms) if kind == "direct" else SAMNER(lms=lms, **options)


def labels_of(schema):
    try:
        return Schema.coerce(schema).labels
    except SchemaError:
        return []


def check_result(text, schema, result):
    """What every returned result must satisfy, whatever the model said."""
    labels = Schema.coerce(schema).labels
    archetypes = set(archetype_names())
    previous_end = 0
    for entity in result.entities:
        assert 0 <= entity.start < entity.end <= len(text)
        assert text[entity.start : entity.end] == entity.text, "an entity is the text's own substring"
        assert entity.label in labels, f"{entity.label!r} is not a label of the schema"
        assert entity.archetype is None or entity.archetype in archetypes
        assert entity.sources and set(entity.sources) <= SOURCES
        assert entity.start >= previous_end, "entities are in text order and never overlap"
        previous_end = entity.end
    trace = result.trace
    assert Trace.from_dict(json.loads(trace.to_json())) == trace, "the trace always serialises"
    for record in trace.stages:
        assert all(isinstance(d.item, str) and isinstance(d.reason, str) for d in record.dropped + record.repaired)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXTS, schema=SCHEMAS, seed=st.integers(0, 2**32 - 1), program=st.sampled_from(PROGRAMS))
def test_any_text_and_schema_give_grounded_in_schema_entities_or_a_documented_error(text, schema, seed, program):
    adversary = Adversary(seed, text, labels_of(schema))
    try:
        result = build(*program, adversary)(text, schema)
    except SchemaError:
        try:
            Schema.coerce(schema)
        except SchemaError:
            return  # documented, and deserved
        raise
    except InputTextError:
        assert not text.strip() or re.search("[\ud800-\udfff]", text), "only unusable text is refused"
        return
    finally:
        figures.count(inputs=1, faults=adversary.faults)
    check_result(text, schema, result)


def test_the_adversary_is_not_vacuous():
    """Across seeds, the same program keeps some entities, drops others, and survives broken replies."""
    text = "Ada Lovelace met Charles Babbage in London; later Ada moved to Paris."
    schema = {"person": "a person", "city": "a city"}
    kept = dropped = failed = 0
    for seed in range(40):
        adversary = Adversary(seed, text, list(schema))
        result = SAMNER(lms=adversarial_lms(adversary), ccr="off")(text, schema)
        check_result(text, schema, result)
        kept += len(result.entities)
        dropped += sum(result.trace.dropped_counts().values())
        failed += len(result.trace.errors)
        figures.count(inputs=1, faults=adversary.faults)
    assert kept > 20 and dropped > 20 and failed > 3, (kept, dropped, failed)


TAGGABLE = st.lists(
    st.sampled_from(["<", ">", "/", "ENT", "ent", " ", "a", "Ada", "<ENT>", "</ENT>", "< ent >", "&lt;", "\n"])
    | st.text(max_size=3),
    max_size=30,
).map("".join)


@settings(max_examples=200, deadline=None)
@given(text=TAGGABLE, cuts=st.lists(st.integers(0, 200), max_size=8))
def test_tagging_escapes_every_tag_look_alike_in_the_text(text, cuts):
    points = sorted({c % (len(text) + 1) for c in cuts})
    spans = [Span(a, b, text[a:b]) for a, b in zip(points[::2], points[1::2], strict=False) if a < b]
    tagged = tag_entities(text, spans)
    assert [m.group() for m in TAG_LOOKALIKE.finditer(tagged)] == [OPEN_TAG, CLOSE_TAG] * len(spans)
    inside = re.findall(f"{re.escape(OPEN_TAG)}(.*?){re.escape(CLOSE_TAG)}", tagged, re.DOTALL)
    assert inside == [escape_tags(span.text) for span in spans]
    assert not TAG_LOOKALIKE.search(escape_tags(text))
