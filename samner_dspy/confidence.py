"""Entity confidence from evidence the pipeline already has, so callers can rank and threshold results.

    score = discovery x p(archetype answer) x p(label answer)

``discovery`` rates who proposed the mention (see :func:`discovery_evidence`); each ``p`` is the probability
the model gave its answer for that entity's occurrence, under the key the request named it by (see
:func:`samner_dspy.tagging.occurrence_keys`; the product of its value tokens' probabilities), where the backend
returned token log-probabilities. A missing probability counts as 1: the score then uses the evidence alone.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# Who proposed a mention: both extractors agreeing is the strongest signal the paper's consensus uses; the
# precision-oriented anchor outranks the recall-oriented explorer; the anchor confirming an explorer mention on
# verification (ccr="verify") is nearly as good as proposing it.
ANCHOR = 0.35
EXPLORER = 0.25
VERIFIED = 0.3
BASE = 0.4
DIRECT = 0.5
"""A mention from the single-prompt baseline, with no second opinion."""


def discovery_evidence(sources: Sequence[str], verified: bool = False) -> float:
    """``0.4 + 0.35 [anchor] + 0.25 [explorer] + 0.3 [verified by the anchor, not proposed by it]``, at most 1."""
    if "anchor" not in sources and "explorer" not in sources:
        return DIRECT
    score = BASE + EXPLORER * ("explorer" in sources)
    if "anchor" in sources:
        score += ANCHOR
    elif verified:
        score += VERIFIED
    return min(score, 1.0)


def combine(evidence: float, probabilities: Iterable[float | None]) -> float:
    """The evidence times every available answer probability, clipped to [0, 1] and rounded for output."""
    score = evidence
    for probability in probabilities:
        if probability is not None:
            score *= probability
    return round(min(max(score, 0.0), 1.0), 4)


def _tokens(logprobs: Any) -> list[tuple[str, float]]:
    """``(token, logprob)`` pairs of an OpenAI-style ``logprobs`` object (``{"content": [...]}``), or []."""
    content = logprobs.get("content") if isinstance(logprobs, Mapping) else getattr(logprobs, "content", None)
    pairs = []
    for entry in content or []:
        token = entry.get("token") if isinstance(entry, Mapping) else getattr(entry, "token", None)
        logprob = entry.get("logprob") if isinstance(entry, Mapping) else getattr(entry, "logprob", None)
        if not isinstance(token, str) or not isinstance(logprob, int | float) or math.isnan(logprob):
            return []
        pairs.append((token, float(logprob)))
    return pairs


def answer_probabilities(logprobs: Any, answers: Mapping[str, str]) -> dict[str, float]:
    """The probability of each ``key: "value"`` answer of a JSON reply, from the reply's token logprobs.

    The tokens are joined back into the reply, each answer's value is found after its key, and the logprobs of
    the tokens overlapping the value are summed: ``p = exp(sum)``. Keys not found are left out, never guessed.
    """
    tokens = _tokens(logprobs)
    if not tokens:
        return {}
    reply = "".join(token for token, _ in tokens)
    starts, cursor = [], 0
    for token, _ in tokens:
        starts.append(cursor)
        cursor += len(token)
    found: dict[str, float] = {}
    for key, value in answers.items():
        if not isinstance(value, str):
            continue
        for ascii_only in (False, True):  # the model may write "é" or "\u00e9"
            quoted = (json.dumps(key, ensure_ascii=ascii_only), json.dumps(value, ensure_ascii=ascii_only))
            match = re.search(re.escape(quoted[0]) + r"\s*:\s*(" + re.escape(quoted[1]) + ")", reply)
            if match:
                begin, end = match.start(1) + 1, match.end(1) - 1  # inside the quotes
                total = sum(
                    lp for (token, lp), s in zip(tokens, starts, strict=True) if s < end and s + len(token) > begin
                )
                found[key] = round(math.exp(total), 6)
                break
    return found
