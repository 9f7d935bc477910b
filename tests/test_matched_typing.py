"""``calibration="matched"``: the archetype stage's prompt and model type the spans over the labels' definitions."""

import json

from samner_dspy import SAMNER
from tests.helpers import stage_lms

SCHEMA = {
    "person": "a named person who is not a politician",
    "politician": "a named person who holds or seeks office",
    "city": "a named city",
    "organisation": "a named company or agency",
}
TEXT = "Ada met Bob in Paris at Acme."


FOUND = {"entities": {"person": ["Ada", "Bob"], "city": ["Paris"], "organisation": ["Acme"]}}
ARCHETYPES = {"archetypes": {"Ada": "Person", "Bob": "Person", "Paris": "Location", "Acme": "Organization"}}


def _last_prompt(lm) -> str:
    return json.dumps(lm.history[-1]["messages"], ensure_ascii=False)


def test_matched_calibration_types_with_the_archetype_prompt_over_the_label_definitions():
    lms = stage_lms(
        anchor=[FOUND],
        explorer=[FOUND],
        archetype=[
            ARCHETYPES,
            {"archetypes": {"Ada": "politician", "Bob": "person", "Paris": "city", "Acme": "Organization"}},
        ],
    )
    result = SAMNER(lms=lms, preset="paper", calibration="matched")(TEXT, SCHEMA)
    assert {e.text: (e.label, e.typed_by, e.archetype) for e in result.entities} == {
        "Ada": ("politician", "matcher", "Person"),
        "Bob": ("person", "matcher", "Person"),
        "Paris": ("city", "matcher", "Location"),
    }, "an answer outside the schema (an archetype) is dropped, not returned"
    assert result.trace["matcher"].dropped[0].item == "Acme"
    prompt = _last_prompt(lms["archetype"])
    assert "holds or seeks office" in prompt and "<ENT>Acme</ENT>" in prompt, "labels in the archetypes' place"
    assert "calibrator" not in result.trace and len(lms["calibrator"].history) == 0


def test_every_stage_module_runs_in_a_step_of_the_ray_plan():
    """Ray's actor steps run only the modules ``SAMNER.STEPS`` names: a stage left out would never run there."""
    import dspy

    program = SAMNER(lms=stage_lms())
    modules = {name for name, value in vars(program).items() if isinstance(value, dspy.Module)}
    assert modules == {name for step in SAMNER.STEPS for name in step}
