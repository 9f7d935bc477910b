"""A batch against a server that misbehaves on purpose, one fault per input, and keeps going.

Model misbehaviour (malformed or empty replies, labels outside the schema, spans not in the text, endless
repetition cut at the token limit) ends as a repair or a drop recorded in the trace; server faults (429,
5xx, stalls, hang-ups) are retried with backoff, and what retries cannot fix fails only its own input,
with an error naming the stage and the URL.
"""

import re
import threading
import time

import pytest

from samner_dspy import SAMNER, SamnerConfig
from samner_dspy.serving.stand_in import Reply, stand_in_server
from tests import figures

TIMEOUT_S = 0.5
REPETITION = '{"entities": {"person": [' + '"Ada", ' * 300 + '"Ad'
FAULTS = {
    # kind: (stage, reply, attempts it applies to)
    "clean": (None, None, 0),
    "malformed json": ("explorer", Reply(content='{"entities": {"person": ["Ada", "Lovelace"], "city": ["Lon'), 9),
    "prose": ("archetype", Reply(content="I am sorry, I cannot classify these entities."), 9),
    "empty reply": ("calibrator", Reply(content=""), 9),
    "labels outside the schema": ("calibrator", Reply(content='{"labels": {"Ada": "galaxy", "London": "PERSON"}}'), 9),
    "spans not in the text": ("anchor", Reply(content='{"person": ["Atlantis", "Ada Lovelace met Bab"]}'), 9),
    "endless repetition": ("explorer", Reply(content=REPETITION, finish_reason="length"), 9),
    "slow once": ("archetype", Reply(delay_s=2 * TIMEOUT_S), 1),
    "slow always": ("calibrator", Reply(delay_s=2 * TIMEOUT_S), 9),
    "429 once": ("anchor", Reply(status=429, headers={"Retry-After": "0.05"}), 1),
    "500 once": ("explorer", Reply(status=500), 1),
    "503 always": ("anchor", Reply(status=503, headers={"Retry-After": "0.05"}), 9),
    "hang-up once": ("calibrator", Reply(hang_up=True), 1),
}
KINDS = [*FAULTS, "clean", "clean"]
RECOVERED = {"clean", "slow once", "429 once", "500 once", "hang-up once"}
FAILED = {"slow always": ("calibrator", "timed out"), "503 always": ("anchor", "HTTP 503")}
STAGE_OF_MODEL = {"anchor": "anchor", "explorer": "explorer", "archetype": "archetype"}


class FaultScript:
    """Injects each input's fault at its stage, for as many attempts as planned; counts injections."""

    def __init__(self) -> None:
        self.attempts: dict[tuple[int, str], int] = {}
        self.injected = 0
        self.lock = threading.Lock()

    def __call__(self, request, number):
        case = int(re.search(r"case (\d+)\b", request["messages"][-1]["content"]).group(1))
        stage = STAGE_OF_MODEL.get(request["model"], "calibrator")
        fault_stage, reply, attempts = FAULTS[KINDS[case]]
        if stage != fault_stage:
            return None
        with self.lock:
            seen = self.attempts.get((case, stage), 0)
            self.attempts[case, stage] = seen + 1
            if seen >= attempts:
                return None
            self.injected += 1
        return reply


def text(case):
    return f"Ada Lovelace met Babbage in London, case {case}."


@pytest.fixture()
def outcomes():
    script = FaultScript()
    with stand_in_server(script=script) as api_base:
        config = SamnerConfig.from_mapping(
            {"defaults": {"api_base": api_base, "timeout_s": TIMEOUT_S, "num_retries": 1}}
        )
        started = time.perf_counter()
        items = list(SAMNER(config).annotate_batch([text(case) for case in range(len(KINDS))], ["person", "city"], 4))
        elapsed = time.perf_counter() - started
    figures.count(inputs=len(KINDS), faults=script.injected, lost=len(KINDS) - len(items))
    return items, api_base, elapsed


def test_every_fault_ends_repaired_dropped_or_as_a_clear_error_and_the_batch_goes_on(outcomes):
    items, api_base, elapsed = outcomes
    assert [item.index for item in items] == list(range(len(KINDS))), "every input comes back, in order"
    by_kind = {}
    for item, kind in zip(items, KINDS, strict=True):
        by_kind.setdefault(kind, item)
        if kind in FAILED:
            stage, reason = FAILED[kind]
            assert not item.ok
            assert item.error.startswith(f"EndpointRequestError: the {stage} request to {api_base} failed: ")
            assert reason in item.error
            continue
        assert item.ok, f"{kind}: {item.error}"
        for entity in item.prediction.entities:
            assert item.text[entity.start : entity.end] == entity.text and entity.label in ("person", "city")

    clean = [(e.text, e.label, e.start, e.end) for e in by_kind["clean"].prediction.entities]
    assert clean == [("Ada", "person", 0, 3)]
    for kind in RECOVERED:
        prediction = by_kind[kind].prediction
        assert [(e.text, e.label, e.start, e.end) for e in prediction.entities] == clean, kind
        assert prediction.trace.errors == [], f"{kind} was retried away"
        if kind != "clean":
            figures.recovered_in(max(record.latency_s for record in prediction.trace.stages))

    def trace(kind):
        return by_kind[kind].prediction.trace

    assert "read leniently" in trace("malformed json")["explorer"].repaired[0].reason
    assert trace("prose")["archetype"].raw_reply.startswith("I am sorry")
    assert [e.archetype for e in by_kind["prose"].prediction.entities] == ["Misc"], "repaired to the fallback"
    assert "unparseable reply" in trace("empty reply")["calibrator"].error
    assert by_kind["empty reply"].prediction.entities == []
    assert [d.reason for d in trace("empty reply")["calibrator"].dropped] == ["no label given"]
    assert [d.reason for d in trace("labels outside the schema")["calibrator"].dropped] == [
        "label 'galaxy' is not in the schema"
    ]
    assert [d.item for d in trace("spans not in the text")["anchor"].dropped] == ["Atlantis", "Ada Lovelace met Bab"]
    repetition = trace("endless repetition")["explorer"]
    assert any("cut off at the token limit (512 tokens)" in r.reason for r in repetition.repaired)
    assert repetition.dropped[0].item == "Ad", "the torn-off last mention is not in the text"
    assert elapsed < 15, "retries back off briefly, they do not stall the batch"
