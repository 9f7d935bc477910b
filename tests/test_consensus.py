import pytest

from samner_dspy.backends import StageBackend
from samner_dspy.programs.consensus import ConsensusRefiner, NoiseRule
from samner_dspy.schema import Schema
from samner_dspy.types import Candidate
from tests.helpers import ScriptedLM

SCHEMA = Schema.coerce(["person", "algorithm"])
TEXT = "Hinton trained a neural network on data with the system of Yann LeCun."


def anchor(*surfaces):
    return [Candidate(s, ("anchor",)) for s in surfaces]


def explorer(*surfaces):
    return [Candidate(s, ("explorer",)) for s in surfaces]


def test_noise_rule_is_single_words_by_default_and_configurable():
    assert NoiseRule().is_noise_prone("data")
    assert not NoiseRule().is_noise_prone("neural network")
    assert NoiseRule(max_words=2).is_noise_prone("neural network")
    assert not NoiseRule(max_words=0).is_noise_prone("data")
    with pytest.raises(ValueError):
        NoiseRule(max_words=-1)


def test_rule_mode_keeps_corroborated_and_multiword_candidates():
    result = ConsensusRefiner("rule")(
        text=TEXT,
        schema=SCHEMA,
        anchor=anchor("Hinton", "Yann LeCun"),
        explorer=explorer("hinton", "data", "system", "neural network"),
    )
    surfaces = {c.surface: c.sources for c in result.candidates}
    assert surfaces == {
        "Hinton": ("anchor", "explorer"),
        "Yann LeCun": ("anchor",),
        "neural network": ("explorer",),
    }
    assert {d.item for d in result.record.dropped} == {"data", "system"}
    assert result.record.requests == 0


def test_off_mode_is_the_plain_deduplicated_union():
    result = ConsensusRefiner("off")(
        text=TEXT, schema=SCHEMA, anchor=anchor("Hinton"), explorer=explorer("Hinton", "data")
    )
    assert [c.surface for c in result.candidates] == ["Hinton", "data"]
    assert not result.record.dropped


def test_without_one_extractor_consensus_has_nothing_to_check():
    result = ConsensusRefiner("rule")(text=TEXT, schema=SCHEMA, anchor=None, explorer=explorer("data"))
    assert [c.surface for c in result.candidates] == ["data"]
    assert result.record.inputs["mode"] == "off"


def test_verify_mode_asks_the_anchor_once_for_all_uncorroborated_noise_prone_candidates():
    lm = ScriptedLM([{"confirmed": ["system", "invented"]}])
    backend = StageBackend("anchor", lm, "dummy")
    refiner = ConsensusRefiner("verify")
    refiner.verifier.bind(backend)
    result = refiner(
        text=TEXT,
        schema=SCHEMA,
        anchor=anchor("Hinton"),
        explorer=explorer("Hinton", "data", "system", "neural network"),
    )
    assert [c.surface for c in result.candidates] == ["Hinton", "neural network", "system"]
    assert result.record.requests == 1 and len(lm.history) == 1
    assert [(d.item, d.reason) for d in result.record.dropped] == [
        ("data", "the anchor did not confirm it on verification")
    ]
    prompt = lm.history[0]["messages"][-1]["content"]
    assert '["data", "system"]' in prompt, "only the uncorroborated noise-prone candidates are sent"


def test_verify_mode_with_an_unparseable_reply_records_it_and_drops_the_candidates():
    backend = StageBackend("anchor", ScriptedLM(["I think they are fine"]), "dummy")
    refiner = ConsensusRefiner("verify")
    refiner.verifier.bind(backend)
    result = refiner(text=TEXT, schema=SCHEMA, anchor=anchor("Hinton"), explorer=explorer("data"))
    assert [c.surface for c in result.candidates] == ["Hinton"]
    assert result.record.error and result.record.raw_reply == "I think they are fine"
    assert result.record.dropped[0].reason == "verification failed, so it stays uncorroborated"


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown consensus mode"):
        ConsensusRefiner("vote")
