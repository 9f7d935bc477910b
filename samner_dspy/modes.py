"""The program's mode names, defined once: the options' checks, the CLI's choices and the evaluations read them."""

from __future__ import annotations

from typing import Literal, get_args

ConsensusMode = Literal["rule", "verify", "off"]
"""``rule``: the released consensus rule; ``verify``: the anchor checks doubtful candidates; ``off``: plain union."""
CalibrationRequests = Literal["sentence", "entity", "label"]
"""How the calibrator asks: ``sentence``, one typing request per text answering a label per entity; ``entity``,
one request per entity; ``label``, one request per text that files the entities under the labels (the answer
shape of direct prompting)."""
CalibrationMode = Literal[CalibrationRequests, "off"]
"""The program's calibration: the calibrator's two ways of asking, or ``off``: direct typing, no archetypes."""
CONSENSUS_MODES: tuple[str, ...] = get_args(ConsensusMode)
CALIBRATION_MODES: tuple[str, ...] = get_args(CalibrationMode)
CALIBRATION_REQUESTS: tuple[str, ...] = get_args(CalibrationRequests)


def check_mode(option: str, value: object, modes: tuple[str, ...]) -> None:
    """Raise a ValueError naming the option, the value and the choices when ``value`` is not one of ``modes``."""
    if value not in modes:
        raise ValueError(f"unknown {option} {value!r}; choose one of {', '.join(modes)}")
