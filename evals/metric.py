"""Strict entity-level NER scores over character-offset mentions, with a seqeval cross-check.

The pipeline predicts character spans over a sentence's text, so scoring works on ``(start, end, label)``
triples directly: no token alignment can hide or invent an error. :func:`seqeval_scores` recomputes the same
counts the conventional way (BIO tags scored by seqeval) so the two can be checked against each other.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from seqeval.metrics.sequence_labeling import get_entities

from samner_dspy.formats.labelled import Sentence

Mention = tuple[int, int, str]
"""``(start, end, label)``: a labelled span of a sentence's text, in character offsets (end exclusive)."""


@dataclass(frozen=True)
class Scores:
    """Micro counts; the ratios are derived so that summing counts across sentences or domains stays exact."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        """Share of predictions that are right; 0.0 when nothing was predicted."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        """Share of gold mentions found; 0.0 when there is no gold."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall, 0.0 when both are undefined or zero."""
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp else 0.0

    def __add__(self, other: Scores) -> Scores:
        return Scores(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    def to_dict(self) -> dict[str, float]:
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
        }


def _pairs(gold: Iterable[Collection[Any]], predicted: Iterable[Collection[Any]]) -> list[tuple[Any, Any]]:
    """Sentences paired by position; a length mismatch means misaligned data, never something to truncate."""
    gold, predicted = list(gold), list(predicted)
    if len(gold) != len(predicted):
        raise ValueError(f"gold has {len(gold)} sentences but predictions have {len(predicted)}")
    return list(zip(gold, predicted, strict=True))


def _multiset_scores(gold: Iterable[Hashable], predicted: Iterable[Hashable]) -> Scores:
    """Each gold item matches at most one identical prediction, so a repeated prediction is a false positive."""
    gold_counts, predicted_counts = Counter(gold), Counter(predicted)
    tp = sum((gold_counts & predicted_counts).values())
    return Scores(tp, predicted_counts.total() - tp, gold_counts.total() - tp)


def _score_by(
    gold: Iterable[Collection[Mention]], predicted: Iterable[Collection[Mention]], key: Callable[[Mention], Hashable]
) -> Scores:
    total = Scores()
    for gold_mentions, predicted_mentions in _pairs(gold, predicted):
        total += _multiset_scores(map(key, gold_mentions), map(key, predicted_mentions))
    return total


def score(gold: Iterable[Collection[Mention]], predicted: Iterable[Collection[Mention]]) -> Scores:
    """Strict micro scores: a prediction counts only with the exact span and label of an unmatched gold mention."""
    return _score_by(gold, predicted, tuple)


def span_score(gold: Iterable[Collection[Mention]], predicted: Iterable[Collection[Mention]]) -> Scores:
    """Discovery scores: spans only, labels ignored, to tell boundary errors from typing errors."""
    return _score_by(gold, predicted, lambda mention: mention[:2])


def label_accuracy(strict: Scores, spans: Scores) -> float | None:
    """Of the predictions on a gold span (span hits), the share that also carry its label (strict hits).

    Strict F1 mixes finding entities with typing them; this isolates typing. None when no span was found.
    """
    return strict.tp / spans.tp if spans.tp else None


def per_label(gold: Iterable[Collection[Mention]], predicted: Iterable[Collection[Mention]]) -> dict[str, Scores]:
    """Strict scores per label; a prediction under a label gold never uses is a false positive of that label."""
    by_label: dict[str, Scores] = defaultdict(Scores)
    for gold_mentions, predicted_mentions in _pairs(gold, predicted):
        for label in {m[2] for m in gold_mentions} | {m[2] for m in predicted_mentions}:
            by_label[label] += _multiset_scores(
                (m for m in gold_mentions if m[2] == label), (m for m in predicted_mentions if m[2] == label)
            )
    return dict(sorted(by_label.items()))


def macro_average(by_domain: Mapping[str, Scores]) -> float:
    """Mean of per-domain F1, as in the paper's "Avg." column, so small domains weigh as much as large ones."""
    return sum(s.f1 for s in by_domain.values()) / len(by_domain) if by_domain else 0.0


def archetype_consistency(
    gold: Iterable[Collection[Mention]],
    predicted_with_archetypes: Iterable[Collection[tuple[int, int, str, str | None]]],
) -> dict[str, Any]:
    """How cleanly the archetype stage separates the gold types, as cluster purity.

    Predictions whose span equals a gold span (label ignored) and that carry an archetype are grouped by that
    gold label; purity is the share of them that carry their gold label's most frequent archetype. 1.0 means
    each gold type maps to a single archetype (distinct types may still share one). Where gold holds several
    labels on one span, the first is used.
    """
    by_label: dict[str, Counter[str]] = defaultdict(Counter)
    for gold_mentions, predictions in _pairs(gold, predicted_with_archetypes):
        gold_labels: dict[tuple[int, int], str] = {}
        for start, end, label in gold_mentions:
            gold_labels.setdefault((start, end), label)
        for start, end, _, archetype in predictions:
            if archetype is not None and (start, end) in gold_labels:
                by_label[gold_labels[start, end]][archetype] += 1
    matched = sum(counts.total() for counts in by_label.values())
    majority = sum(max(counts.values()) for counts in by_label.values())
    return {
        "matched": matched,
        "purity": majority / matched if matched else 0.0,
        "by_label": {label: dict(counts.most_common()) for label, counts in sorted(by_label.items())},
    }


def archetype_accuracy(
    gold: Iterable[Collection[Mention]],
    archetyped: Iterable[Collection[tuple[int, int, str]]],
    gold_archetype: Callable[[str], str | None],
) -> dict[str, Any]:
    """Of the gold spans the archetype stage classified (``archetyped``: ``(start, end, archetype)``), the share
    given their gold label's archetype (``gold_archetype(label)``; labels it does not know are left out).

    On gold spans (``samner eval --discovery-from gold``) every gold span is classified, so this is the
    classifier's accuracy; elsewhere it is its accuracy on the spans discovery got exactly right."""
    matched = correct = 0
    confusion: Counter[str] = Counter()
    for gold_mentions, classified in _pairs(gold, archetyped):
        predicted = {(start, end): archetype for start, end, archetype in classified}
        for start, end, label in gold_mentions:
            expected = gold_archetype(label)
            if expected is None or (start, end) not in predicted:
                continue
            matched += 1
            correct += predicted[start, end] == expected
            if predicted[start, end] != expected:
                confusion[f"{expected} -> {predicted[start, end]}"] += 1
    return {
        "matched": matched,
        "correct": correct,
        "accuracy": correct / matched if matched else None,
        "errors": dict(confusion.most_common(10)),
    }


def gold_mentions(sentence: Sentence) -> list[Mention]:
    """A sentence's gold entities as mentions, the form every scorer here takes."""
    return [(e.start, e.end, e.label) for e in sentence.entities]


def bio_tags(sentence: Sentence, mentions: Collection[Mention]) -> tuple[list[str], list[Mention]]:
    """IOB2 tags over ``sentence.tokens`` induced by character mentions, and the mentions tags cannot express.

    A mention is expressible when it starts where a token starts and ends where a token ends (tokens sit at
    their offsets in the single-space join). Labels are kept verbatim in ``B-<label>``: seqeval splits a tag at
    its first ``-`` only, so labels with spaces or hyphens come back unchanged. Overlapping expressible
    mentions (duplicates included) raise ``ValueError``, since one tag sequence cannot hold both.
    """
    starts, ends, cursor = {}, {}, 0
    for index, token in enumerate(sentence.tokens):
        starts[cursor] = index
        ends[cursor + len(token)] = index
        cursor += len(token) + 1
    tags = ["O"] * len(sentence.tokens)
    unaligned: list[Mention] = []
    for start, end, label in sorted(mentions):
        first, last = starts.get(start), ends.get(end)
        if first is None or last is None or last < first:
            unaligned.append((start, end, label))
            continue
        if any(tag != "O" for tag in tags[first : last + 1]):
            raise ValueError(f"mention {(start, end, label)!r} overlaps another mention in {sentence.text!r}")
        tags[first : last + 1] = [f"B-{label}"] + [f"I-{label}"] * (last - first)
    return tags, unaligned


def seqeval_scores(sentences: Sequence[Sentence], predicted: Sequence[Collection[Mention]]) -> Scores:
    """The strict counts recomputed through BIO tags and seqeval's chunker, to cross-check :func:`score`.

    Gold tags come from ``sentence.entities``, predicted tags from :func:`bio_tags`, and seqeval's
    ``get_entities`` (default, non-strict IOB2 mode) extracts the ``(type, first token, last token)`` chunks
    that are compared per sentence. A prediction that is not token-aligned cannot be tagged; it is added as one
    false positive, which is exactly what :func:`score` makes of it, because gold mentions are token-aligned.
    Gold that is not token-aligned, or overlapping predictions, raise ``ValueError``.
    """
    total = Scores()
    for sentence, mentions in _pairs(sentences, predicted):
        gold_tags, gold_unaligned = bio_tags(sentence, gold_mentions(sentence))
        if gold_unaligned:
            raise ValueError(f"gold entities {gold_unaligned!r} are not token-aligned in {sentence.text!r}")
        predicted_tags, unaligned = bio_tags(sentence, mentions)
        gold_chunks, predicted_chunks = set(get_entities(gold_tags)), set(get_entities(predicted_tags))
        tp = len(gold_chunks & predicted_chunks)
        total += Scores(tp, len(predicted_chunks) - tp + len(unaligned), len(gold_chunks) - tp)
    return total
