"""Differences between plans scored on the same items are judged with paired standard errors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pruneviz import api
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
