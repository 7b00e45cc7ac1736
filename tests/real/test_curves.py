"""Greedy pruning curves, the trade-off matrix and ranking correlations on the embedded model."""

from __future__ import annotations

import math

import pytest

from pruneviz import api, plots
from pruneviz.core.errors import SettingError
from pruneviz.core.plan import PruningPlan
from pruneviz.evaluation.results import proportion_interval
from pruneviz.studies.curves import Ranking, Task, pruning_curve, ranking_correlation, tradeoff_matrix

pytestmark = pytest.mark.real
METRIC_OPTIONS = {"samples": 3, "seq_len": 48}
WIKI = Task("wiki", {"windows": 2, "seq_len": 48})


def test_curve_step_k_removes_exactly_the_k_lowest_units(smollm2):
    ranking = Ranking("cosine", "wiki", METRIC_OPTIONS)
    table = api.influence(smollm2, "wiki", ["cosine"], "sublayer", **METRIC_OPTIONS)
    attn = table[(table["sublayer"] == "attn")].sort_values("value")
    curve = pruning_curve(smollm2, ranking, "attn", 3, [WIKI])
    plans = curve.drop_duplicates("step").set_index("step")["plan"]
    assert plans[0] == ""
    for k in range(1, 4):
        assert PruningPlan.parse(plans[k]) == PruningPlan.of(attn["unit"].iloc[:k])
    assert list(curve.drop_duplicates("step")["removed"].iloc[1:]) == list(attn["unit"].iloc[:3])
    perplexity = curve[curve["metric"] == "perplexity"].set_index("step")["value"]
    direct = api.evaluate(smollm2, PruningPlan.of(attn["unit"].iloc[:2]), "wiki", windows=2, seq_len=48)
    assert perplexity[2] == pytest.approx(direct.metrics["perplexity"], rel=1e-9)
    assert all(math.isfinite(v) for v in perplexity)
    assert set(curve["n"]) == {direct.n} == {2}  # every value carries its n: the 2 windows


def test_iterative_curve_recomputes_the_ranking_on_the_pruned_model(smollm2):
    ranking = Ranking("cosine", "wiki", METRIC_OPTIONS)
    curve = pruning_curve(smollm2, ranking, "block", 2, [WIKI], iterative=True)
    removed = list(curve.drop_duplicates("step")["removed"].iloc[1:])
    first = removed[0]
    after_first = api.influence(smollm2, "wiki", ["cosine"], "block", plan=PruningPlan.parse(first), **METRIC_OPTIONS)
    rest = after_first[after_first["unit"] != first].sort_values("value")
    assert removed[1] == rest["unit"].iloc[0]
    assert curve["ranking"].iloc[0] == "cosine@wiki (iterative)"


def test_curve_progress_counts_evaluations_from_the_evaluation_phase(smollm2):
    calls = []
    tasks = [WIKI, Task("wiki", {"windows": 1, "seq_len": 32})]
    curve = pruning_curve(smollm2, Ranking("cosine", "wiki", METRIC_OPTIONS), "block", 2, tasks, progress=lambda d, t: calls.append((d, t)))
    # 3 steps x 2 tasks, reported from 0 once the ranking is known
    assert calls == [(done, 6) for done in range(7)]
    assert sorted(set(curve["step"])) == [0, 1, 2]


def test_a_generative_curve_carries_n_and_its_error_bars_do_not_vanish_at_zero(smollm2):
    curve = pruning_curve(smollm2, Ranking("cosine", "wiki", METRIC_OPTIONS), "block", 1, [Task("arithmetic", {"per_task": 4})])
    exact = curve[curve["metric"] == "exact_match"].set_index("step")
    assert list(exact["n"]) == [4, 4] and set(curve["task"]) == {"arithmetic"}
    direct = api.evaluate(smollm2, PruningPlan.parse(exact.loc[1, "plan"]), "arithmetic", per_task=4)
    assert exact.loc[1, "value"] == direct.metrics["exact_match"]
    bars = plots.curve_figure(curve, "arithmetic", "exact_match").data[0].error_y
    for step, (value, below, above) in enumerate(zip(exact["value"], bars.arrayminus, bars.array)):
        low, high = proportion_interval(value, 4, z=1.0)
        # the 135M model gets most sums wrong: at 0 of 4 its bar still reaches 1/5 above (Wilson at z = 1)
        assert (below, above) == pytest.approx((value - low, high - value)) and above > 0, step
    wide = plots.curve_wide(curve)
    assert list(wide["arithmetic n"]) == [4, 4] and "arithmetic exact_match stderr" in wide


@pytest.mark.parametrize(("scheme", "count", "units"), [("block", 31, 30), ("both", 61, 60), ("attn", 0, 30)])
def test_a_removal_count_outside_the_scheme_is_refused_before_any_ranking(smollm2, monkeypatch, scheme, count, units):
    def ranked(*_):
        raise AssertionError("the count must be checked before a ranking is computed")

    monkeypatch.setattr(Ranking, "order", ranked)
    ranking = Ranking("cosine", "wiki", METRIC_OPTIONS)
    with pytest.raises(SettingError, match=f"has {units}; choose steps K from 1 to {units}"):
        pruning_curve(smollm2, ranking, scheme, count, [WIKI])
    with pytest.raises(SettingError, match=f"has {units}; choose K units pruned from 1 to {units}"):
        tradeoff_matrix(smollm2, [ranking], [WIKI], scheme, count)


def test_tradeoff_matrix_and_rank_correlation(smollm2):
    rankings = [Ranking("cosine", "wiki", METRIC_OPTIONS), Ranking("rel_l2", "wiki", METRIC_OPTIONS)]
    matrix = tradeoff_matrix(smollm2, rankings, [WIKI], "attn", 2)
    assert list(matrix["ranking"]) == ["unpruned", "cosine@wiki", "rel_l2@wiki"]
    assert matrix.loc[0, "wiki perplexity Δ"] == 0
    baseline = matrix.loc[0, "wiki perplexity"]
    for _, row in matrix.iterrows():
        expected = api.evaluate(smollm2, PruningPlan.parse(row["plan"]), "wiki", windows=2, seq_len=48).metrics["perplexity"]
        assert row["wiki perplexity"] == pytest.approx(expected)
        assert row["wiki perplexity Δ"] == pytest.approx(expected - baseline)
        assert row["wiki n"] == 2
    # the difference's standard error is paired over the two windows, on the NLL: sd(per-window differences) / sqrt(2)
    unpruned = api.evaluate(smollm2, PruningPlan(), "wiki", windows=2, seq_len=48)
    pruned = api.evaluate(smollm2, PruningPlan.parse(matrix.loc[1, "plan"]), "wiki", windows=2, seq_len=48)
    differences = pruned.items["nll"].to_numpy() - unpruned.items["nll"].to_numpy()
    assert matrix.loc[1, "wiki nll Δ stderr"] == pytest.approx(differences.std(ddof=1) / 2**0.5)
    assert math.isnan(matrix.loc[0, "wiki nll Δ stderr"]) and math.isnan(matrix.loc[1, "wiki perplexity Δ stderr"])
    assert matrix.loc[1, "wiki perplexity Δ beyond noise"] == (not api.within_noise(unpruned, pruned, "perplexity"))
    correlation = ranking_correlation(smollm2, rankings, "attn")
    assert correlation.shape == (2, 2)
    assert correlation.loc["cosine@wiki", "cosine@wiki"] == pytest.approx(1.0)
    assert -1 <= correlation.loc["cosine@wiki", "rel_l2@wiki"] <= 1
