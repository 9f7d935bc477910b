"""Paired bootstrap comparisons against direct prompting, and label accuracy on found spans, in the report."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from samner_dspy.evals import report
from samner_dspy.evals.metric import Scores, label_accuracy, macro_average, score, span_score
from samner_dspy.evals.paired import Bootstrap, compare, rerun_agreement, sentence_counts, verdict

GOLD = [[0, 3, "person"], [8, 13, "city"]]


def record(domain: str, index: int, entities: list[tuple[int, int, str]], gold=GOLD) -> dict:
    return {
        "key": f"{domain}:{index}",
        "domain": domain,
        "index": index,
        "gold": gold,
        "entities": [{"start": s, "end": e, "label": label, "text": "x"} for s, e, label in entities],
        "trace": {"stages": [{"requests": 1}]},
    }


RIGHT = [(0, 3, "person"), (8, 13, "city")]
HALF = [(0, 3, "person")]
WRONG_LABEL = [(0, 3, "city"), (8, 13, "person")]


def records(domain: str, answers: list[list[tuple[int, int, str]]]) -> list[dict]:
    return [record(domain, i, a) for i, a in enumerate(answers)]


def test_identical_configurations_differ_by_nothing():
    same = records("ai", [RIGHT, HALF, [], WRONG_LABEL])
    result = compare({"direct": same, "samner": same})["samner"]
    assert (result["difference"], result["low"], result["high"]) == (0.0, 0.0, 0.0)
    assert result["verdict"] == "no difference" and result["sentences"] == 4


def test_a_configuration_right_everywhere_is_better_and_its_mirror_worse():
    right, wrong = records("ai", [RIGHT] * 6), records("ai", [[]] * 6)
    better = compare({"direct": wrong, "samner": right})["samner"]
    assert better["difference"] == 1.0 and better["low"] == 1.0 and better["verdict"] == "better"
    worse = compare({"direct": right, "samner": wrong})["samner"]
    assert worse["difference"] == -1.0 and worse["high"] == -1.0 and worse["verdict"] == "worse"


def test_the_difference_is_of_macro_f1_over_domains_on_the_shared_sentences():
    mine = records("ai", [RIGHT, RIGHT]) + records("music", [HALF, []])
    base = records("ai", [HALF, HALF, RIGHT]) + records("music", [HALF, HALF])  # ai:2 only in the baseline
    result = compare({"direct": base, "samner": mine})["samner"]

    def macro(rs):
        by_domain = {}
        for domain in ("ai", "music"):
            shared = [r for r in rs if r["domain"] == domain and r["key"] != "ai:2"]
            by_domain[domain] = score(
                [[tuple(g) for g in r["gold"]] for r in shared],
                [[(e["start"], e["end"], e["label"]) for e in r["entities"]] for r in shared],
            )
        return macro_average(by_domain)

    assert result["sentences"] == 4 and result["domains"] == ["ai", "music"]
    assert result["difference"] == pytest.approx(macro(mine) - macro(base))


def test_resampling_stays_within_each_domain():
    # One sentence in "ai" decides a difference of 1 there; "music" is identical. Resampled within domains, the
    # "ai" sentence is in every resample, so the macro difference is exactly 1/2 every time.
    mine = records("ai", [RIGHT]) + records("music", [RIGHT, HALF, [], WRONG_LABEL, HALF])
    base = records("ai", [[]]) + records("music", [RIGHT, HALF, [], WRONG_LABEL, HALF])
    result = compare({"direct": base, "samner": mine})["samner"]
    assert result["high"] - result["low"] < 1e-12
    assert result["low"] == pytest.approx(0.5) and result["difference"] == pytest.approx(0.5)


def naive_interval(mine: list[dict], base: list[dict], resamples: int, seed: int) -> tuple[float, float]:
    """The same bootstrap written the slow, obvious way: draw sentences, rescore both, take the difference."""
    rng = random.Random(seed)
    domains = sorted({r["domain"] for r in mine})
    differences = []
    for _ in range(resamples):
        totals = {"mine": {}, "base": {}}
        for domain in domains:
            rows = [i for i, r in enumerate(mine) if r["domain"] == domain]
            drawn = [rng.choice(rows) for _ in rows]
            for name, rs in (("mine", mine), ("base", base)):
                gold = [[tuple(g) for g in rs[i]["gold"]] for i in drawn]
                predicted = [[(e["start"], e["end"], e["label"]) for e in rs[i]["entities"]] for i in drawn]
                totals[name][domain] = score(gold, predicted)
        differences.append(macro_average(totals["mine"]) - macro_average(totals["base"]))
    return tuple(np.quantile(differences, [0.025, 0.975]))


def test_the_interval_agrees_with_a_naive_bootstrap():
    rng = random.Random(1)
    options = [RIGHT, HALF, [], WRONG_LABEL]
    mine = records("ai", rng.choices(options, [4, 3, 1, 1], k=30)) + records("music", rng.choices(options, k=20))
    base = records("ai", rng.choices(options, [2, 3, 2, 2], k=30)) + records("music", rng.choices(options, k=20))
    result = compare({"direct": base, "samner": mine}, bootstrap=Bootstrap(2000, seed=3))["samner"]
    low, high = naive_interval(mine, base, 600, seed=5)
    assert result["low"] == pytest.approx(low, abs=0.04) and result["high"] == pytest.approx(high, abs=0.04)
    assert result["low"] < result["difference"] < result["high"]


def test_a_fixed_seed_reproduces_the_interval_and_another_seed_moves_it():
    rng = random.Random(2)
    options = [RIGHT, HALF, [], WRONG_LABEL]
    mine, base = records("ai", rng.choices(options, k=15)), records("ai", rng.choices(options, k=15))
    results = {"direct": base, "samner": mine}
    first = compare(results, bootstrap=Bootstrap(500, seed=11))["samner"]
    assert compare(results, bootstrap=Bootstrap(500, seed=11))["samner"] == first
    other = compare(results, bootstrap=Bootstrap(500, seed=12))["samner"]
    assert (other["low"], other["high"]) != (first["low"], first["high"])
    assert other["difference"] == first["difference"] and first["resamples"] == 500 and first["seed"] == 11


def test_no_baseline_no_comparison_and_bad_settings_are_refused():
    assert compare({"samner": records("ai", [RIGHT])}) == {}
    with pytest.raises(ValueError, match="at least one resample"):
        Bootstrap(0)
    with pytest.raises(ValueError, match="between 0 and 1"):
        Bootstrap(confidence=1.0)
    assert [verdict(0.01, 0.2), verdict(-0.2, -0.01), verdict(-0.1, 0.1), verdict(0.0, 0.2)] == [
        "better",
        "worse",
        "no difference",
        "no difference",
    ]


def test_sentence_counts_sum_to_the_strict_micro_counts():
    rs = records("ai", [RIGHT, HALF, [], WRONG_LABEL, [*RIGHT, (4, 7, "city")]])
    total = sentence_counts(rs).sum(axis=0)
    strict = score(
        [[tuple(g) for g in r["gold"]] for r in rs],
        [[(e["start"], e["end"], e["label"]) for e in r["entities"]] for r in rs],
    )
    assert tuple(total) == (strict.tp, strict.fp, strict.fn)


def test_label_accuracy_is_strict_hits_among_span_hits():
    gold = [[(0, 3, "person"), (8, 13, "city"), (20, 25, "band")]]
    predicted = [[(0, 3, "person"), (8, 13, "country"), (30, 35, "band")]]
    assert label_accuracy(score(gold, predicted), span_score(gold, predicted)) == 0.5
    assert label_accuracy(Scores(), Scores(fp=3)) is None, "no span found: undefined, not 0"


def test_the_report_shows_label_accuracy_and_the_paired_comparison(tmp_path):
    results = {
        "samner": records("ai", [RIGHT] * 4) + records("music", [WRONG_LABEL] * 3),
        "direct": records("ai", [HALF] * 4) + records("music", [[]] * 3),
    }
    summary = report.summarize(results, Bootstrap(300, seed=1))
    samner, direct = summary["samner"], summary["direct"]
    assert samner["label_accuracy"]["ai"] == {"matched": 8, "correct": 8, "accuracy": 1.0}
    assert samner["label_accuracy"]["music"] == {"matched": 6, "correct": 0, "accuracy": 0.0}
    assert samner["label_accuracy_avg"] == 0.5
    assert direct["label_accuracy"]["music"]["accuracy"] is None and direct["label_accuracy_avg"] == 1.0
    assert "paired" not in direct
    assert samner["paired"]["direct"]["baseline"] == "direct" and samner["paired"]["direct"]["resamples"] == 300
    text = report.markdown(summary, "test", "samner eval")
    assert "## Typing: label accuracy on found spans" in text
    assert "| SAM-NER, paper's preset | 100.0 | 0.0 | 50.0 |" in text
    assert "| Direct prompting | 100.0 | - | 100.0 |" in text
    paired = samner["paired"]["direct"]
    interval = f"[{100 * paired['low']:+.1f}, {100 * paired['high']:+.1f}]"
    assert (
        f"| SAM-NER, paper's preset | {100 * paired['difference']:+.1f} | {interval} | {paired['verdict']} | 7 |"
        in text
    )
    report.write(summary, tmp_path, "test", "samner eval")
    written = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))["results"]
    assert written["samner"]["paired"]["direct"] == paired and written["samner"]["label_accuracy_avg"] == 0.5


def test_a_difference_whose_interval_holds_zero_reads_no_difference_in_the_report():
    rng = random.Random(4)
    options = [RIGHT, HALF, [], WRONG_LABEL]
    answers = rng.choices(options, k=10)
    shuffled = rng.sample(answers, k=len(answers))
    summary = report.summarize({"direct": records("ai", answers), "samner": records("ai", shuffled)})
    assert summary["samner"]["paired"]["direct"]["verdict"] == "no difference"
    assert "| no difference | 10 |" in report.markdown(summary, "test", "samner eval")


def test_rows_are_paired_against_each_baseline_that_ran_and_the_strongest_is_named():
    results = {
        "direct": records("ai", [HALF] * 4),
        "plain": records("ai", [RIGHT] * 3 + [HALF]),
        "anchor-only": records("ai", [[]] * 4),
        "small": records("ai", [RIGHT] * 4),
    }
    summary = report.summarize(results, Bootstrap(200, seed=0), against=("plain", "anchor-only", "direct-short"))
    assert set(summary["small"]["paired"]) == {"plain", "anchor-only"}, "a baseline that did not run pairs nothing"
    assert "plain" not in summary["plain"]["paired"] and "anchor-only" in summary["plain"]["paired"]
    assert summary["small"]["paired"]["anchor-only"]["verdict"] == "better"
    assert report.strongest_baseline(summary) == "plain"
    text = report.markdown(summary, "test", "samner eval")
    assert "Strongest single-request baseline on these sentences: **Plain prompt (label names only)**" in text
    assert "## Paired against Plain prompt (label names only)" in text and "## Paired against Anchor alone" in text


def test_a_rerun_reports_the_sentences_whose_predictions_differ():
    first = records("ai", [RIGHT, HALF, [], RIGHT])
    second = records("ai", [RIGHT, RIGHT, [], RIGHT])
    found = rerun_agreement(first, second, Bootstrap(200))
    assert found["differing"] == ["ai:1"] and found["sentences"] == 4 and found["difference"] > 0
    assert rerun_agreement(first, first)["differing"] == [] and rerun_agreement(first, first)["difference"] == 0
    with pytest.raises(ValueError, match="share no sentence"):
        rerun_agreement(first, records("music", [RIGHT]))


def test_samner_noise_prints_and_writes_what_differs(tmp_path, capsys):
    from samner_dspy.cli import main

    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("".join(json.dumps(r) + "\n" for r in records("ai", [RIGHT, HALF, RIGHT])))
    second.write_text("".join(json.dumps(r) + "\n" for r in records("ai", [RIGHT, RIGHT, RIGHT])))
    assert main(["noise", str(first), str(second), "-o", str(tmp_path / "noise.txt")]) == 0
    printed = capsys.readouterr().out
    assert "predictions differ on 1 of 3 sentences" in printed and "differing: ai:1" in printed
    assert (tmp_path / "noise.txt").read_text() == printed
    (tmp_path / "c.jsonl").write_text(json.dumps(record("music", 0, RIGHT)) + "\n")
    assert main(["noise", str(first), str(tmp_path / "c.jsonl")]) != 0
    assert "share no sentence" in capsys.readouterr().err
