"""The whole program on scripted stage replies: grounding, trace, ablations, bad input."""

import pytest

from samner_dspy import SAMNER, Entity, InputTextError, SchemaError
from samner_dspy.programs import DirectNER
from tests.helpers import ScriptedLM, stage_lms

SCHEMA = {"person": "a named person", "city": "a named city", "organisation": "a named organisation"}


def run(text, schema=SCHEMA, **options):
    lms = options.pop("lms")
    return SAMNER(lms=lms, **options)(text, schema)


def test_entities_are_grounded_labelled_and_traced_on_non_ascii_text_with_repeats():
    text = "Zoë Müller flew to 東京, then Zoë Müller left 東京 for São Paulo 🎉."
    lms = stage_lms(
        anchor=[{"entities": {"person": ["Zoë Müller"], "city": ["東京", "Atlantis"]}}],
        explorer=[{"entities": {"city": ["são paulo", "東京"], "person": ["flew"]}}],
        archetype=[{"archetypes": {"Zoë Müller": "Person", "東京": "Location", "São Paulo": "Location"}}],
        calibrator=[{"labels": {"Zoë Müller": "person", "東京": "city", "São Paulo": "City"}}],
    )
    result = run(text, lms=lms)
    assert [(e.text, e.label, e.start, e.end) for e in result.entities] == [
        ("Zoë Müller", "person", 0, 10),
        ("東京", "city", 19, 21),
        ("Zoë Müller", "person", 28, 38),
        ("東京", "city", 44, 46),
        ("São Paulo", "city", 51, 60),
    ]
    for entity in result.entities:
        assert isinstance(entity, Entity)
        assert text[entity.start : entity.end] == entity.text
    assert result.entities[1].sources == ("anchor", "explorer")
    assert result.entities[4].sources == ("explorer",) and result.entities[4].archetype == "Location"

    trace = result.trace
    assert [r.stage for r in trace.stages] == [
        "anchor",
        "explorer",
        "consensus",
        "grounding",
        "archetype",
        "calibrator",
    ]
    assert trace["anchor"].dropped[0].item == "Atlantis", "a hallucinated span is dropped and counted"
    assert trace["consensus"].dropped[0].item == "flew"
    assert trace.requests == 4
    assert trace.dropped_counts() == {
        "anchor: not found in the text as a whole word": 1,
        "consensus: noise-prone explorer candidate without anchor corroboration": 1,
    }
    assert trace["anchor"].model == "dummy" and trace["consensus"].model is None


def test_trace_round_trips_through_json():
    from samner_dspy.tracing import Trace

    lms = stage_lms(
        anchor=[{"entities": {"person": ["Ada"]}}],
        explorer=[{"entities": {"person": []}}],
        archetype=[{"archetypes": {"Ada": "Person"}}],
        calibrator=[{"labels": {"Ada": "person"}}],
    )
    trace = run("Ada codes.", lms=lms).trace
    import json

    assert Trace.from_dict(json.loads(trace.to_json())) == trace


def test_without_calibration_entities_are_typed_directly_and_have_no_archetype():
    lms = stage_lms(
        anchor=[{"entities": {"person": ["Ada Lovelace"]}}],
        explorer=[{"entities": {}}],
        calibrator=[{"labels": {"Ada Lovelace": "person"}}],
    )
    result = run("Ada Lovelace wrote.", lms=lms, calibration="off")
    assert [(e.text, e.label, e.archetype) for e in result.entities] == [("Ada Lovelace", "person", None)]
    assert "archetype" not in result.trace and "direct_typing" in result.trace
    assert len(lms["archetype"].history) == 0


@pytest.mark.parametrize(
    ("option", "silent"), [({"use_anchor": False}, "anchor"), ({"use_explorer": False}, "explorer")]
)
def test_extractor_ablations_skip_one_extractor(option, silent):
    reply = [{"entities": {"person": ["Ada Lovelace"]}}]
    lms = stage_lms(
        anchor=reply,
        explorer=reply,
        archetype=[{"archetypes": {"Ada Lovelace": "Person"}}],
        calibrator=[{"labels": {"Ada Lovelace": "person"}}],
    )
    result = run("Ada Lovelace wrote.", lms=lms, **option)
    assert [e.text for e in result.entities] == ["Ada Lovelace"]
    assert silent not in result.trace and len(lms[silent].history) == 0


def test_ccr_off_keeps_noise_prone_explorer_candidates():
    lms = stage_lms(
        anchor=[{"entities": {"person": ["Ada"]}}],
        explorer=[{"entities": {"organisation": ["data"]}}],
        archetype=[{"archetypes": {"Ada": "Person", "data": "Misc"}}],
        calibrator=[{"labels": {"Ada": "person", "data": "organisation"}}],
    )
    result = run("Ada loves data.", lms=lms, ccr="off")
    assert [e.text for e in result.entities] == ["Ada", "data"]


def test_a_failed_stage_is_recorded_and_the_pipeline_goes_on():
    lms = stage_lms(
        anchor=[{"entities": {"person": ["Ada"]}}],
        explorer=["<<<garbage>>>"],
        archetype=["not json at all"],
        calibrator=[{"labels": {"Ada": "person"}}],
    )
    result = run("Ada codes.", lms=lms)
    assert [(e.text, e.label, e.archetype) for e in result.entities] == [("Ada", "person", "Misc")]
    assert result.trace["explorer"].raw_reply == "<<<garbage>>>"
    assert result.trace["archetype"].raw_reply == "not json at all"
    assert len(result.trace.errors) == 2


def test_nothing_found_makes_no_typing_requests():
    lms = stage_lms(anchor=[{"entities": {"person": []}}], explorer=[{"entities": {}}])
    result = run("Nothing to see here.", lms=lms)
    assert result.entities == []
    assert result.trace.requests == 2
    assert len(lms["calibrator"].history) == 0


@pytest.mark.parametrize(("text", "message"), [("", "empty"), ("  \n\t", "empty"), (None, "must be a string")])
def test_bad_text_gets_a_clear_error(text, message):
    with pytest.raises(InputTextError, match=message):
        run(text, lms=stage_lms())


def test_bad_schema_gets_a_clear_error():
    with pytest.raises(SchemaError, match="duplicate"):
        run("Ada codes.", schema=["person", "person"], lms=stage_lms())


def test_predict_entities_gives_plain_dicts():
    lms = stage_lms(
        anchor=[{"entities": {"person": ["Ada"]}}],
        explorer=[{"entities": {}}],
        archetype=[{"archetypes": {"Ada": "Person"}}],
        calibrator=[{"labels": {"Ada": "person"}}],
    )
    found = SAMNER(lms=lms).predict_entities("Ada codes.", ["person"])
    assert found == [
        {
            "text": "Ada",
            "label": "person",
            "start": 0,
            "end": 3,
            "archetype": "Person",
            "sources": ["anchor"],
            "score": 0.75,  # the anchor alone, no logprobs: the evidence term only
            "alignment_status": "exact",
            "typed_by": "calibrator",
        }
    ]


def test_invalid_options_are_refused():
    with pytest.raises(ValueError, match="at least one extractor"):
        SAMNER(lms=stage_lms(), use_anchor=False, use_explorer=False)
    with pytest.raises(ValueError, match="unknown calibration"):
        SAMNER(lms=stage_lms(), calibration="guess")


def test_an_anchor_mention_outranks_an_overlapping_explorer_only_phrase():
    text = "The missionary in Sweden was declared a saint."
    lms = stage_lms(
        anchor=[{"entities": {"country": ["Sweden"]}}],
        explorer=[{"entities": {"person": ["The missionary in Sweden"]}}],
        archetype=[{"archetypes": {"Sweden": "Location"}}],
        calibrator=[{"labels": {"Sweden": "country"}}],
    )
    result = run(text, schema=["country", "person"], lms=lms)
    assert [(e.text, e.label) for e in result.entities] == [("Sweden", "country")]
    assert result.trace["grounding"].dropped[0].item == "The missionary in Sweden [0:24]"


def test_direct_baseline_extracts_and_types_in_one_request():
    from samner_dspy.programs import DirectNER

    lms = stage_lms(
        calibrator=[{"entities": {"Person": ["Ada Lovelace", "Charles Babbage"], "city": ["London", "Atlantis"]}}]
    )
    result = DirectNER(lms=lms)("Ada Lovelace met Charles Babbage in London.", SCHEMA)
    assert [(e.text, e.label, e.start, e.sources) for e in result.entities] == [
        ("Ada Lovelace", "person", 0, ("direct",)),
        ("Charles Babbage", "person", 17, ("direct",)),
        ("London", "city", 36, ("direct",)),
    ]
    assert [r.stage for r in result.trace.stages] == ["direct", "grounding"]
    assert result.trace.requests == 1
    assert [d.item for d in result.trace["direct"].dropped] == ["Atlantis"]


def test_predict_entities_takes_a_per_call_threshold_and_a_list_of_texts():
    def lms():
        return stage_lms(
            anchor=[{"entities": {"person": ["Ada"]}}],
            explorer=[{"entities": {"person": ["Ada", "Bob Smith"]}}],
            archetype=[{"archetypes": {"Ada": "Person", "Bob Smith": "Person"}}],
            calibrator=[{"labels": {"Ada": "person", "Bob Smith": "person"}}],
        )

    text = "Ada met Bob Smith."
    assert [d["text"] for d in SAMNER(lms=lms()).predict_entities(text, ["person"])] == ["Ada", "Bob Smith"]
    assert [d["text"] for d in SAMNER(lms=lms()).predict_entities(text, ["person"], threshold=0.7)] == ["Ada"]
    program = SAMNER(lms=lms(), threshold=0.7)
    assert [d["text"] for d in program.predict_entities(text, ["person"], threshold=0.0)] == ["Ada", "Bob Smith"]
    assert program.threshold == 0.7, "a per-call option leaves the program as it was"
    with pytest.raises(ValueError, match="threshold"):
        program.predict_entities(text, ["person"], threshold=2)

    direct = DirectNER(
        lms={"calibrator": ScriptedLM({"Ada": {"entities": {"person": ["Ada"]}}, "Bob": {"entities": {}}})}
    )
    assert direct.predict_entities(["Ada codes.", "Bob naps."], ["person"]) == [
        [
            {
                "text": "Ada",
                "label": "person",
                "start": 0,
                "end": 3,
                "archetype": None,
                "sources": ["direct"],
                "score": 0.5,
                "alignment_status": "exact",
                "typed_by": "direct",
            }
        ],
        [],
    ]
    with pytest.raises(InputTextError, match="empty"):
        direct.predict_entities(["Ada codes.", "  "], ["person"])


def test_the_plain_call_windows_a_long_text_or_refuses_it_before_any_request():
    sentence = "Ada Lovelace met Charles Babbage in London. "
    text = sentence * 200  # 8,800 characters
    calibrator = ScriptedLM({"Ada": {"entities": {"person": ["Ada Lovelace", "Charles Babbage"]}}})
    result = DirectNER(lms={"calibrator": calibrator})(text, ["person"])
    assert len(result.trace.windows) >= 4 and result.trace.windows[-1].end == len(text)
    assert len(result.entities) == 400 and all(text[e.start : e.end] == e.text for e in result.entities)
    assert all(len(text[w.start : w.end]) <= 2000 for w in result.trace.windows)

    refusing = DirectNER(lms={"calibrator": ScriptedLM([])})
    refusing.window = False
    with pytest.raises(InputTextError, match=r"8800 characters, more than max_chars=2000.*window=True"):
        refusing(text, ["person"])
    with pytest.raises(InputTextError, match="max_chars=2000"):
        SAMNER(lms=stage_lms(), window=False)(text, ["person"])
    assert len(refusing.lms["calibrator"].history) == 0, "refused before the first request"


def test_trusted_anchor_types_keep_the_anchors_one_label_and_only_the_rest_is_calibrated():
    text = "Ada met Bob in Paris and Rome."
    lms = stage_lms(
        # Ada: one label (kept); Paris: two labels (calibrated); Rome: the explorer's only (calibrated).
        anchor=[{"entities": {"person": ["Ada"], "city": ["Paris"], "organisation": ["Paris"]}}],
        explorer=[{"entities": {"city": ["Rome", "Ada"]}}],
        archetype=[{"archetypes": {"Ada": "Person", "Paris": "Location", "Rome": "Location"}}],
        calibrator=[{"label": "city"}, {"label": "city"}],
    )
    result = run(text, lms=lms, ccr="off", calibration="entity", trust_anchor_types=True)
    assert [(e.text, e.label, e.archetype) for e in result.entities] == [
        ("Ada", "person", "Person"),
        ("Paris", "city", "Location"),
        ("Rome", "city", "Location"),
    ]
    calibrator = result.trace["calibrator"]
    assert calibrator.requests == 2, "Ada was not sent to the calibrator"
    assert calibrator.inputs["from_anchor"] == {"Ada": "person"}
    assert calibrator.inputs["archetypes"] == {"Paris": "Location", "Rome": "Location"}


def test_when_the_anchor_typed_every_mention_no_typing_request_is_sent():
    lms = stage_lms(
        anchor=[{"entities": {"person": ["Ada"]}}],
        explorer=[{"entities": {}}],
        archetype=[{"archetypes": {"Ada": "Person"}}],
    )
    result = run("Ada sang.", lms=lms, trust_anchor_types=True)
    assert [(e.text, e.label) for e in result.entities] == [("Ada", "person")]
    assert result.trace["calibrator"].requests == 0
    assert result.trace["calibrator"].inputs["from_anchor"] == {"Ada": "person"}
    assert lms["calibrator"].history == []


def test_the_preset_follows_the_models_and_explicit_options_win():
    from samner_dspy.config import SamnerConfig

    embedded = SAMNER()  # every stage on the embedded model (no server starts until the first call)
    assert (embedded.preset, embedded.calibration, embedded.use_explorer) == ("trained", "matched", False)
    assert embedded.trust_anchor_types is True and embedded.person_role is True
    assert embedded.config.anchor.adapter and embedded.config.archetype.adapter, "the committed adapters"
    untrained = SAMNER(SamnerConfig.embedded(trained=False))
    assert (untrained.preset, untrained.consensus.mode, untrained.calibration) == ("small", "verify", "entity")
    assert untrained.use_explorer is True and untrained.person_role is False
    chosen = SAMNER(use_explorer=True, person_role=False, calibration="entity")
    assert (chosen.preset, chosen.use_explorer, chosen.person_role, chosen.calibration) == (
        "trained",
        True,
        False,
        "entity",
    ), "explicit options win over the preset's"
    served = SAMNER(SamnerConfig.vllm())
    assert (served.preset, served.consensus.mode, served.calibration) == ("paper", "rule", "sentence")
    assert served.trust_anchor_types is False
    scripted = SAMNER(lms=stage_lms())  # stages on other LMs than the embedded model: the paper's configuration
    assert scripted.preset == "paper"
    mixed = SAMNER.for_small_models(SamnerConfig.vllm(), ccr="off")
    assert (mixed.preset, mixed.consensus.mode, mixed.calibration) == ("small", "off", "entity")
    with pytest.raises(ValueError, match="unknown preset 'tiny'"):
        SAMNER(preset="tiny")
    with pytest.raises(ValueError, match="'trained' preset's use_explorer is False"):
        SAMNER(use_anchor=False)


def test_the_preset_is_decided_by_the_stages_as_configured():
    from samner_dspy.config import SamnerConfig
    from samner_dspy.programs.samner import preset_for

    embedded = SamnerConfig.embedded(trained=False)
    assert preset_for(embedded) == "small"
    assert preset_for(SamnerConfig.embedded()) == "trained"
    assert preset_for(embedded.with_stage("anchor", "embedded", adapter="mine/anchor")) == "small", "archetype too"
    assert preset_for(embedded.with_stage("calibrator", "embedded:qwen2.5-coder-1.5b")) == "small"
    assert preset_for(embedded.with_stage("calibrator", "openai/gpt-4o-mini")) == "paper"
    assert preset_for(embedded, {"calibrator": ScriptedLM([])}) == "paper"
