from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from samner_dspy.grounding import Located, Unlocated, locate, resolve_overlaps
from samner_dspy.tagging import escape_tags, tag_entities
from samner_dspy.types import Span


def spans_of(text, candidate):
    result = locate(text, candidate)
    assert isinstance(result, Located), result
    return [(s.start, s.end) for s in result.spans]


def test_repeated_mentions_each_get_their_own_offsets():
    text = "Paris is big. I love Paris, and Paris loves me."
    assert spans_of(text, "Paris") == [(0, 5), (21, 26), (32, 37)]
    for start, end in spans_of(text, "Paris"):
        assert text[start:end] == "Paris"


def test_non_ascii_offsets_are_character_offsets():
    text = "Müller traf 東京大学 in Zürich 🎉 — Zürich gewann; naïve Bayes."
    for candidate in ("Müller", "東京大学", "東京", "Zürich", "🎉", "naïve Bayes"):
        result = locate(text, candidate)
        assert isinstance(result, Located), candidate
        for span in result.spans:
            assert text[span.start : span.end] == span.text == result.surface
    assert len(locate(text, "Zürich").spans) == 2


def test_case_and_whitespace_are_repaired_to_the_texts_spelling():
    text = "We used naive Bayes with the  Gaussian mixture model."
    result = locate(text, "Naive  bayes")
    assert isinstance(result, Located) and result.surface == "naive Bayes"
    result = locate(text, "gaussian mixture model")
    assert isinstance(result, Located) and result.surface == "Gaussian mixture model"


def test_exact_spelling_wins_over_a_case_variant():
    text = "apple pie from Apple"
    assert spans_of(text, "Apple") == [(15, 20)]


def test_hallucinated_and_partial_word_strings_are_not_located():
    text = "The classifiers started."
    assert isinstance(locate(text, "neural network"), Unlocated)
    assert isinstance(locate(text, "art"), Unlocated), "must not match inside 'started'"
    assert isinstance(locate(text, "classifier"), Unlocated)
    assert locate(text, "   ").reason == "empty string"
    assert locate(text, None).reason == "not a string"


def test_overlaps_keep_the_longest_mention():
    kept, discarded = resolve_overlaps([Span(0, 8, "New York"), Span(0, 14, "New York Times"), Span(20, 25, "Paris")])
    assert kept == [Span(0, 14, "New York Times"), Span(20, 25, "Paris")]
    assert discarded == [Span(0, 8, "New York")]


def test_tagging_marks_spans_and_escapes_look_alike_tags():
    text = "Ada <ENT>fake</ent> met Bob"
    tagged = tag_entities(text, [Span(0, 3, "Ada"), Span(24, 27, "Bob")])
    assert tagged == "<ENT>Ada</ENT> &lt;ENT&gt;fake&lt;/ent&gt; met <ENT>Bob</ENT>"
    assert tagged.count("<ENT>") == 2
    assert escape_tags("<ENT>x</ENT>") == "&lt;ENT&gt;x&lt;/ENT&gt;"


@given(
    st.text(min_size=1, max_size=60),
    st.integers(min_value=0, max_value=59),
    st.integers(min_value=1, max_value=12),
    st.booleans(),
)
def test_every_located_span_is_the_texts_own_substring(text, offset, length, lower):
    candidate = text[offset : offset + length]
    if lower:
        candidate = candidate.lower()
    result = locate(text, candidate)
    if isinstance(result, Located):
        assert result.spans
        for span in result.spans:
            assert 0 <= span.start < span.end <= len(text)
            assert text[span.start : span.end] == span.text
        kept, _ = resolve_overlaps(list(result.spans))
        assert all(a.end <= b.start for a, b in pairwise(kept))


def test_overlaps_can_favour_better_supported_spans():
    support = {Span(0, 40, "The missionary in Sweden and the Nordic"): 1, Span(18, 24, "Sweden"): 2}
    kept, discarded = resolve_overlaps(list(support), priority=lambda span: (support[span],))
    assert kept == [Span(18, 24, "Sweden")] and len(discarded) == 1
