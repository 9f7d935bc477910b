"""Batch annotation (order, bounded concurrency, laziness, isolation) and long-document windows."""

import random
import re
import threading
import time
from itertools import pairwise

import dspy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from samner_dspy.programs import DirectNER
from samner_dspy.programs.batch import ordered_map
from samner_dspy.programs.document import annotate_document, windows
from samner_dspy.types import Entity
from tests.helpers import ScriptedLM


def test_results_come_back_in_input_order_with_bounded_concurrency_and_lazy_input():
    in_flight, peak, pulled = 0, 0, 0
    lock = threading.Lock()

    overlapped = threading.Event()

    def work(text):
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
            if in_flight > 1:
                overlapped.set()
        if text == "t0":  # the first input waits (at most 5 s) for a second to start: run one at a time, it never does
            overlapped.wait(timeout=5)
        time.sleep(random.uniform(0, 0.01))
        with lock:
            in_flight -= 1
        if text == "bad":
            raise ValueError("bad input")
        return text.upper()

    def texts():
        nonlocal pulled
        for i in range(200):
            pulled += 1
            yield "bad" if i == 7 else f"t{i}"

    stream = ordered_map(work, texts(), concurrency=4)
    first = next(stream)
    assert first.index == 0 and first.prediction == "T0"
    assert pulled <= 2 * 4 + 1, "inputs are pulled lazily"
    rest = list(stream)
    items = [first, *rest]
    assert [item.index for item in items] == list(range(200))
    assert items[7].error == "ValueError: bad input" and not items[7].ok
    assert all(item.ok for item in items if item.index != 7)
    assert 1 < peak <= 4


def test_skip_leaves_out_finished_indices():
    items = list(ordered_map(str.upper, ["a", "b", "c", "d"], concurrency=2, skip=lambda i: i in {0, 2}))
    assert [(i.index, i.prediction) for i in items] == [(1, "B"), (3, "D")]
    with pytest.raises(ValueError, match="concurrency"):
        list(ordered_map(str.upper, ["a"], concurrency=0))


def test_program_batch_annotates_each_text_and_isolates_bad_ones():
    texts = ["Ada Lovelace wrote.", "   ", "Alan Turing thought."]
    calibrator = ScriptedLM(
        {
            "Ada Lovelace wrote.": {"entities": {"person": ["Ada Lovelace"]}},
            "Alan Turing thought.": {"entities": {"person": ["Alan Turing"]}},
        }
    )
    program = DirectNER(lms={"calibrator": calibrator})
    items = list(program.annotate_batch(texts, ["person"], concurrency=2))
    assert [[e.text for e in item.prediction.entities] if item.ok else None for item in items] == [
        ["Ada Lovelace"],
        None,
        ["Alan Turing"],
    ]
    assert "empty or only whitespace" in items[1].error
    # dspy.Module.batch keeps its meaning: dspy.Example inputs, predictions in order
    examples = [dspy.Example(text=t, schema=["person"]).with_inputs("text", "schema") for t in texts[::2]]
    results = program.batch(examples, num_threads=2)
    assert [[e.text for e in result.entities] for result in results] == [["Ada Lovelace"], ["Alan Turing"]]


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=400), st.integers(5, 80), st.integers(0, 40))
def test_windows_cover_the_text_and_their_cores_tile_it(text, max_chars, overlap):
    overlap = min(overlap, max_chars - 1)
    parts = windows(text, max_chars, overlap)
    assert parts[0].start == 0 and parts[-1].end == len(text)
    for window in parts:
        assert window.end - window.start <= max_chars and window.start < window.end
    for left, right in pairwise(parts):
        assert right.start <= left.end, "no gap between windows"
        assert left.core_end == right.core_start
    assert parts[0].core_start == 0 and parts[-1].core_end == len(text)


def capitalised_words(text):
    """A deterministic stand-in annotator: every capitalised word (or run of them) is an entity."""
    entities = [
        Entity(m.group(0), "name", m.start(), m.end()) for m in re.finditer(r"[A-ZÄÖÜ]\w*(?: [A-ZÄÖÜ]\w*)*", text)
    ]
    return dspy.Prediction(entities=entities, trace=None)


def test_document_windows_map_back_to_the_same_entities_as_one_pass():
    sentence = "Grüße aus München von Zoë Müller und Ada Lovelace. Danach fuhr sie nach Berlin Mitte. "
    text = sentence * 30
    whole = capitalised_words(text).entities
    result = annotate_document(capitalised_words, text, max_chars=300, overlap=60)
    assert len(result.trace.windows) > 5
    assert [(e.start, e.end, e.text) for e in result.entities] == [(e.start, e.end, e.text) for e in whole]
    for entity in result.entities:
        assert text[entity.start : entity.end] == entity.text
    assert result.trace.errors == []


def test_a_failing_window_is_reported_not_silently_dropped():
    def flaky(window_text):
        if "Berlin" in window_text:
            raise RuntimeError("server hiccup")
        return capitalised_words(window_text)

    text = "Ada went home. " * 20 + "Then Berlin. " + "Ada went home. " * 20
    result = annotate_document(flaky, text, max_chars=100, overlap=20)
    assert result.trace.errors and all("server hiccup" in error for error in result.trace.errors)
    assert any(e.text == "Ada" for e in result.entities)


def test_a_failed_item_keeps_its_exception():
    class Refused(Exception):
        def __init__(self, code):
            super().__init__(f"refused with {code}")
            self.code = code

    def work(text):
        raise Refused(429)

    (item,) = ordered_map(work, ["x"], concurrency=1)
    assert isinstance(item.exception, Refused) and item.exception.code == 429
    assert item.error == "Refused: refused with 429" and not item.ok
