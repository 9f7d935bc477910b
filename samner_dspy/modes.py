"""The program's mode names and option defaults, defined once: the options' checks, the CLI's choices and the
evaluations read them."""

from __future__ import annotations

from typing import Literal, get_args

ConsensusMode = Literal["rule", "verify", "off"]
"""``rule``: the released consensus rule; ``verify``: the anchor checks doubtful candidates; ``off``: plain union."""
CalibrationRequests = Literal["sentence", "entity"]
"""How the calibrator asks: ``sentence``, one typing request per text; ``entity``, one per entity."""
CalibrationMode = Literal[CalibrationRequests, "matched", "off", "anchor"]
"""The program's calibration: the calibrator's two ways of asking; ``matched``: the archetype stage's trained
classifier matches the marked spans to the target labels' definitions, in the prompt it matches them to the
archetypes' (one request a text, on the archetype stage's model); ``off``: direct typing, no archetypes;
``anchor``: no typing stage, each mention keeps the first label the anchor filed it under (the "anchor's types
only" ablation, and with ``use_explorer=False`` the anchor-only baseline: one request a sentence)."""
CONSENSUS_MODES: tuple[str, ...] = get_args(ConsensusMode)
CALIBRATION_MODES: tuple[str, ...] = get_args(CalibrationMode)
CALIBRATION_REQUESTS: tuple[str, ...] = get_args(CalibrationRequests)


def check_mode(option: str, value: object, modes: tuple[str, ...]) -> None:
    """Raise a ValueError naming the option, the value and the choices when ``value`` is not one of ``modes``."""
    if value not in modes:
        raise ValueError(f"unknown {option} {value!r}; choose one of {', '.join(modes)}")


Preset = Literal["paper", "small", "trained"]
"""Named sets of the program's options: ``paper``, the paper's and the authors' released configuration (for
fine-tuned stages, vLLM and the LoRAs); ``small``, what scores best on the untrained small models run here;
``trained``, what scores best on the embedded model with the adapters trained for it
(``samner_dspy.serving.trained``)."""
PRESETS: dict[str, dict[str, object]] = {
    "paper": {
        "ccr": "rule", "calibration": "sentence", "trust_anchor_types": False,
        "use_explorer": True, "person_role": False,
    },
    # On the embedded 0.5B model, standing sample (100 CrossNER sentences): the anchor's unambiguous types are
    # right 64% of the time against the calibrator's 29%, and CCR's verification finds more gold spans.
    "small": {
        "ccr": "verify", "calibration": "entity", "trust_anchor_types": True,
        "use_explorer": True, "person_role": False,
    },
    # The trained anchor and archetype-mix on the embedded 0.5B, dev decision sample (50 sentences): matching labels
    # with the trained classifier beat the frozen calibrator; the explorer (untrained or trained) and CCR added
    # nothing to the trained anchor's spans (+0.3 and -0.7 macro F1) at 1.7-2.2 more requests a sentence; filing
    # ``person`` under the schema's person role gave +8.3 (README, "Evaluation on CrossNER").
    "trained": {
        "ccr": "verify", "calibration": "matched", "trust_anchor_types": True,
        "use_explorer": False, "person_role": True,
    },
}  # fmt: skip
PRESET_NAMES: tuple[str, ...] = get_args(Preset)

DEFAULT_MAX_CHARS = 2000
"""The longest text the stages are sent in one piece: about 500 tokens, well inside a 4,096-token context with
the instructions and definitions around it (the embedded model's); longer texts are windowed."""
DEFAULT_OVERLAP = 200
"""Characters neighbouring windows share, so an entity cut by one window's edge is whole in the other's."""
