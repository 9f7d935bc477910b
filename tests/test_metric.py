import random
from itertools import islice

import pytest
from seqeval.metrics import f1_score, precision_score, recall_score

from samner_dspy.evals.crossner import read_bio
from samner_dspy.evals.metric import (
    Scores,
    archetype_consistency,
    bio_tags,
    gold_mentions,
    macro_average,
    per_label,
    score,
    seqeval_scores,
    span_score,
)
from samner_dspy.formats.labelled import GoldEntity, Sentence
from samner_dspy.schema import CROSSNER_DOMAINS, crossner_label_name, crossner_schema

GOLD = [[(0, 3, "person"), (8, 16, "location")]]


def counts(scores):
    return scores.tp, scores.fp, scores.fn


def test_exact_match_is_perfect():
    result = score(GOLD, [[(8, 16, "location"), (0, 3, "person")]])
    assert counts(result) == (2, 0, 0)
    assert (result.precision, result.recall, result.f1) == (1.0, 1.0, 1.0)


def test_wrong_label_and_wrong_boundary_are_each_a_false_positive_and_a_miss():
    result = score(GOLD, [[(0, 3, "location"), (8, 12, "location")]])
    assert counts(result) == (0, 2, 2)
    assert counts(span_score(GOLD, [[(0, 3, "location"), (8, 12, "location")]])) == (1, 1, 1)


def test_a_duplicate_prediction_matches_gold_once():
    result = score(GOLD, [[(0, 3, "person"), (0, 3, "person")]])
    assert counts(result) == (1, 1, 1)
    assert result.precision == 0.5 and result.recall == 0.5 and result.f1 == 0.5


def test_duplicate_gold_mentions_need_two_predictions():
    assert counts(score([[(0, 3, "person")] * 2], [[(0, 3, "person")]])) == (1, 0, 1)


def test_missed_gold_and_scores_across_sentences():
    result = score([*GOLD, [(4, 9, "person")]], [[(0, 3, "person")], []])
    assert counts(result) == (1, 0, 2)
    assert result.precision == 1.0 and result.recall == pytest.approx(1 / 3) and result.f1 == pytest.approx(0.5)


def test_empty_sentences_score_zero_without_dividing_by_zero():
    for gold, predicted in (([[]], [[]]), ([], []), ([[]], [[(0, 1, "x")]]), ([[(0, 1, "x")]], [[]])):
        result = score(gold, predicted)
        assert (result.precision, result.recall, result.f1) == (0.0, 0.0, 0.0)


def test_sentences_are_paired_by_position_and_must_agree_in_number():
    with pytest.raises(ValueError, match="2 sentences"):
        score([[], []], [[]])
    assert counts(score([[(0, 3, "a")], []], [[], [(0, 3, "a")]])) == (0, 1, 1)


def test_per_label_counts_labels_absent_from_gold():
    predicted = [[(0, 3, "person"), (8, 16, "city"), (17, 20, "person")]]
    assert {label: counts(s) for label, s in per_label(GOLD, predicted).items()} == {
        "city": (0, 1, 0),
        "location": (0, 0, 1),
        "person": (1, 1, 0),
    }
    assert sum(per_label(GOLD, predicted).values(), Scores()) == score(GOLD, predicted)


def test_scores_add_and_serialise():
    total = Scores(1, 2, 3) + Scores(3, 0, 1)
    assert total == Scores(4, 2, 4)
    assert total.to_dict() == {"tp": 4, "fp": 2, "fn": 4, "precision": 4 / 6, "recall": 0.5, "f1": 8 / 14}


def test_macro_average_is_the_mean_of_domain_f1():
    assert macro_average({"a": Scores(1, 0, 0), "b": Scores(1, 1, 0), "c": Scores(0, 5, 5)}) == pytest.approx(
        (1.0 + 2 / 3 + 0.0) / 3
    )
    assert macro_average({}) == 0.0


def test_archetype_purity_groups_span_matches_by_gold_label():
    gold = [[(0, 3, "person"), (4, 7, "person"), (8, 11, "city")], [(0, 5, "person")]]
    predicted = [
        [(0, 3, "x", "PER"), (4, 7, "y", "ORG"), (8, 11, "z", "LOC"), (12, 15, "w", "PER")],
        [(0, 5, "x", "PER"), (0, 4, "x", "ORG"), (0, 5, "x", None)],
    ]
    result = archetype_consistency(gold, predicted)
    assert result["matched"] == 4
    assert result["purity"] == 0.75
    assert result["by_label"] == {"city": {"LOC": 1}, "person": {"PER": 2, "ORG": 1}}
    assert archetype_consistency([[]], [[(0, 1, "x", "PER")]]) == {"matched": 0, "purity": 0.0, "by_label": {}}


def sentence(*tokens):
    return Sentence(tuple(tokens), ("O",) * len(tokens), " ".join(tokens), ())


def token_starts(s):
    starts, cursor = [], 0
    for token in s.tokens:
        starts.append(cursor)
        cursor += len(token) + 1
    return starts


def test_bio_tags_keep_multiword_labels_and_report_unaligned_mentions():
    s = sentence("Ada", "met", "New", "York", "Times")
    mentions = [(8, 16, "music genre"), (0, 3, "person"), (4, 6, "x"), (9, 22, "y"), (12, 11, "z"), (17, 22, "e-mail")]
    tags, unaligned = bio_tags(s, mentions)
    assert tags == ["B-person", "O", "B-music genre", "I-music genre", "B-e-mail"]
    assert sorted(unaligned) == [(4, 6, "x"), (9, 22, "y"), (12, 11, "z")]


@pytest.mark.parametrize("mentions", [[(8, 16, "a"), (12, 22, "b")], [(0, 3, "a"), (0, 3, "a")]])
def test_bio_tags_refuse_overlapping_mentions(mentions):
    with pytest.raises(ValueError, match="overlaps"):
        bio_tags(sentence("Ada", "met", "New", "York", "Times"), mentions)


def perturb(sentences, labels, rng):
    """Predictions made from gold: ~20% dropped, ~20% relabelled, ~10% of multi-token ones shrunk by their last
    token, and about one spurious token-aligned one-token mention per ten gold mentions."""
    predictions = []
    for s in sentences:
        starts = token_starts(s)
        mentions = []
        for start, end, label in gold_mentions(s):
            roll = rng.random()
            if roll < 0.2:
                continue
            if roll < 0.4:
                label = rng.choice([other for other in labels if other != label])
            elif roll < 0.5 and starts.index(start) < max(i for i, t in enumerate(starts) if t < end):
                end = max(t for t in starts if t < end) - 1
            mentions.append((start, end, label))
        free = [i for i, t in enumerate(starts) if not any(a <= t < b for a, b, _ in mentions)]
        for _ in s.entities:
            if free and rng.random() < 0.1:
                i = free.pop(rng.randrange(len(free)))
                mentions.append((starts[i], starts[i] + len(s.tokens[i]), rng.choice(labels)))
        rng.shuffle(mentions)
        predictions.append(mentions)
    return predictions


@pytest.fixture(scope="module")
def perturbed(crossner_dir):
    """The first 150 test sentences of each domain with their perturbed predictions."""
    rng = random.Random(20240607)
    data = {}
    for domain in CROSSNER_DOMAINS:
        sentences = list(islice(read_bio(crossner_dir / domain / "test.txt"), 150))
        data[domain] = sentences, perturb(sentences, crossner_schema(domain).labels, rng)
    return data


def test_strict_score_agrees_with_seqeval_on_real_crossner(perturbed):
    by_domain = {}
    for domain, (sentences, predicted) in perturbed.items():
        gold = [gold_mentions(s) for s in sentences]
        ours = score(gold, predicted)
        assert counts(ours) == counts(seqeval_scores(sentences, predicted)), domain
        # the perturbations must exercise every kind of error, or agreement would prove little
        assert ours.tp and ours.fp and ours.fn, domain
        assert ours != span_score(gold, predicted)
        assert sum(per_label(gold, predicted).values(), Scores()) == ours

        y_true = [bio_tags(s, g)[0] for s, g in zip(sentences, gold, strict=True)]
        induced = [bio_tags(s, p) for s, p in zip(sentences, predicted, strict=True)]
        assert all(not unaligned for _, unaligned in induced)
        y_pred = [tags for tags, _ in induced]
        assert precision_score(y_true, y_pred) == pytest.approx(ours.precision, abs=1e-9)
        assert recall_score(y_true, y_pred) == pytest.approx(ours.recall, abs=1e-9)
        assert f1_score(y_true, y_pred) == pytest.approx(ours.f1, abs=1e-9)
        by_domain[domain] = ours
    assert 0.3 < macro_average(by_domain) < 0.9


def test_gold_tags_induced_from_entities_reproduce_the_file_tags(perturbed):
    for sentences, _ in perturbed.values():
        for s in sentences:
            tags, unaligned = bio_tags(s, gold_mentions(s))
            assert not unaligned
            assert tags == [t if t == "O" else t[:2] + crossner_label_name(t[2:]) for t in s.tags]


def test_an_unaligned_prediction_is_exactly_one_false_positive_in_both(perturbed):
    sentences, predicted = perturbed["music"]
    index = next(i for i, s in enumerate(sentences) if s.entities)
    entity = sentences[index].entities[0]
    # the gold span minus its last character: close to gold, but on no token boundary
    extra = (entity.start, entity.end - 1, entity.label)
    with_extra = [list(p) for p in predicted]
    with_extra[index].append(extra)
    assert bio_tags(sentences[index], with_extra[index])[1] == [extra]
    gold = [gold_mentions(s) for s in sentences]
    before, after = score(gold, predicted), score(gold, with_extra)
    assert counts(after) == (before.tp, before.fp + 1, before.fn)
    assert counts(seqeval_scores(sentences, with_extra)) == counts(after)


def test_seqeval_scores_refuses_gold_off_token_boundaries():
    s = Sentence(("Ada", "met"), ("O", "O"), "Ada met", (GoldEntity("da", "person", 1, 3),))
    with pytest.raises(ValueError, match="not token-aligned"):
        seqeval_scores([s], [[]])
