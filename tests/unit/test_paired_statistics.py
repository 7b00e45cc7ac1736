"""Differences between plans scored on the same items are judged with paired standard errors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from pruneviz import api
from pruneviz.core.plan import PruningPlan
from pruneviz.data.text import TextCorpus
from pruneviz.evaluation.perplexity import perplexity_result
from pruneviz.evaluation.results import EvaluationResult
from pruneviz.evaluation.statistics import difference_and_noise, paired_difference


def mmlu(correct: list[float]) -> EvaluationResult:
    n = len(correct)
    items = pd.DataFrame({"subject": ["anatomy"] * n, "answer": [i % 4 for i in range(n)], "correct": correct})
    acc = float(np.mean(correct))
    return EvaluationResult("mmlu", n, {"acc": acc}, {"acc": math.sqrt(acc * (1 - acc) / (n - 1))}, "", 0.0, {}, items)


def test_five_flips_in_a_hundred_are_a_change_paired_though_not_by_two_independent_intervals():
    baseline = [1.0] * 60 + [0.0] * 40
    pruned = [0.0] * 5 + [1.0] * 55 + [0.0] * 40  # five right answers turned wrong, nothing else changed
    first, second = mmlu(baseline), mmlu(pruned)
    d, se = paired_difference(first, second, "acc")
    differences = np.array(pruned) - np.array(baseline)
    assert d == pytest.approx(-0.05) and se == pytest.approx(differences.std(ddof=1) / 10)
    combined = math.hypot(first.stderr["acc"], second.stderr["acc"])
    assert abs(d) < 2 * combined  # two independent intervals would call it noise ...
    assert not api.within_noise(first, second, "acc")  # ... the paired test does not
    assert api.noise_verdict(first, second, "acc", "questions") is None


def test_identical_answers_are_said_to_be_identical():
    first = mmlu([1.0, 0.0, 1.0, 1.0])
    assert difference_and_noise(first, mmlu([1.0, 0.0, 1.0, 1.0]), "acc") == ("acc", 0.0, 0.0, True)
    assert api.noise_verdict(first, mmlu([1.0, 0.0, 1.0, 1.0]), "acc", "questions") == (
        "The pruned and unpruned model score each of these questions alike (acc unchanged on every one); "
        "evaluate more questions to see a difference."
    )


def test_results_of_other_items_are_not_paired():
    first, second = mmlu([1.0, 0.0, 1.0, 1.0]), mmlu([1.0, 0.0, 1.0, 1.0])
    second.items = second.items.assign(subject="virology")
    assert paired_difference(first, second, "acc") is None
    assert difference_and_noise(first, second, "acc")[3] is False  # combined errors instead


def test_perplexity_is_paired_on_the_nll_of_each_window():
    def wiki(nll: list[float]) -> EvaluationResult:
        mean = float(np.mean(nll))
        se = float(np.std(nll, ddof=1) / math.sqrt(len(nll)))
        return EvaluationResult("wiki", len(nll), {"perplexity": math.exp(mean), "nll": mean},
                                {"perplexity": math.exp(mean) * se, "nll": se}, "", 0.0, {}, pd.DataFrame({"nll": nll}))

    # windows differ a lot from each other, the plan adds 0.1 nats to each: a small change, far beyond paired noise
    baseline = [2.0, 3.0, 4.0, 2.5, 3.5, 2.2, 3.8, 3.0]
    first, second = wiki(baseline), wiki([x + 0.1 + 0.01 * (i % 2) for i, x in enumerate(baseline)])
    assert api.within_noise(first, second, "perplexity") is False
    judged, d, se, paired = difference_and_noise(first, second, "perplexity")
    assert (judged, paired) == ("nll", True) and d == pytest.approx(0.105) and se < 0.01
    assert math.hypot(first.stderr["nll"], second.stderr["nll"]) > 0.2  # combined, it would have been noise


def test_answer_changes_count_flips_both_ways_and_the_kl_between_answer_distributions():
    from pruneviz.evaluation.statistics import answer_changes

    def scored(rows: list[tuple[float, float, float, float]], gold: list[int]) -> EvaluationResult:
        items = pd.DataFrame(rows, columns=[f"score_{c}" for c in "ABCD"]).assign(subject="anatomy", answer=gold)
        items["pred"] = items[[f"score_{c}" for c in "ABCD"]].to_numpy().argmax(1)
        items["correct"] = (items["pred"] == items["answer"]).astype(float)
        return EvaluationResult("mmlu", len(rows), {"acc": items["correct"].mean()}, {}, "", 0.0, {}, items)

    gold = [0, 1, 2, 3]
    base = scored([(0, -5, -5, -5), (0, -5, -5, -5), (-5, -5, 0, -5), (-1, -1, -1, -1)], gold)
    pruned = scored([(-5, 0, -5, -5), (-5, 0, -5, -5), (-5, -5, 0, -5), (-1, -1, -1, -1)], gold)
    metrics, stderr = answer_changes(base, pruned)
    # question 1: right -> wrong; question 2: wrong -> right; 3 and 4 unchanged
    assert (metrics["flips"], metrics["flips_lost"], metrics["flips_gained"]) == (0.5, 0.25, 0.25)
    assert metrics["flips_gained"] - metrics["flips_lost"] == pruned.metrics["acc"] - base.metrics["acc"]
    p = torch.log_softmax(torch.tensor([0.0, -5, -5, -5], dtype=torch.float64), 0)
    q = torch.log_softmax(torch.tensor([-5.0, 0, -5, -5], dtype=torch.float64), 0)
    one = float((p.exp() * (p - q)).sum())
    assert metrics["kl"] == pytest.approx(2 * one / 4) and stderr["flips"] == pytest.approx(math.sqrt(0.25 / 3))
    assert answer_changes(base, pruned.__class__(**{**pruned.__dict__, "items": pruned.items.iloc[:3]})) is None


def test_the_relative_perplexity_change_and_its_interval_come_from_the_paired_nll_difference():
    data = TextCorpus("wiki", "evaluation", ("x",), "f")
    tokens = 31  # predicted tokens per window of 32
    base_nll = np.array([2.0, 2.2, 1.9, 2.1, 2.05, 1.95])
    shifted = base_nll + np.array([0.10, 0.12, 0.08, 0.11, 0.09, 0.10])  # every window a little worse
    baseline = perplexity_result(PruningPlan(), "wiki", data, 32, list(base_nll * tokens), 0.0)
    pruned = perplexity_result(PruningPlan(), "wiki", data, 32, list(shifted * tokens), 0.0)
    change, low, high = api.perplexity_change(baseline, pruned)
    differences = shifted - base_nll
    d, se = differences.mean(), differences.std(ddof=1) / math.sqrt(len(differences))
    assert change == pytest.approx(100 * (pruned.metrics["perplexity"] / baseline.metrics["perplexity"] - 1))
    assert change == pytest.approx(100 * math.expm1(d))
    assert (low, high) == pytest.approx((100 * math.expm1(d - api.Z_95 * se), 100 * math.expm1(d + api.Z_95 * se)))
    assert 0 < low < change < high  # a consistent shift is beyond noise, paired per window
    assert not api.within_noise(baseline, pruned, "perplexity")
