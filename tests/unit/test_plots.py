"""The app's figures and tables (``pruneviz.plots``) and the noise judgements they show, on hand-made tables.

No model: the pages themselves run on the embedded model in ``tests/real/test_app_pages.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pruneviz import plots
from pruneviz.evaluation.results import EvaluationResult, proportion_interval

# ---------------------------------------------------------------- figures (no model)


def influence_table() -> pd.DataFrame:
    """A 3-block influence table with two metrics at every granularity."""
    rows = []
    for layer in range(3):
        for kind in ("block", "attn", "mlp"):
            unit = str(layer) if kind == "block" else f"{layer}.{kind}"
            for metric, scale in (("cosine", 0.1), ("l2", 10.0)):
                value = scale * (layer + 1) * {"attn": 1, "mlp": 2, "block": 3}[kind]
                rows.append({"unit": unit, "layer": layer, "sublayer": kind, "metric": metric, "value": value,
                             "stderr": math.nan, "dataset": "wiki (calibration half)"})
    return pd.DataFrame(rows)


def test_influence_heatmap_has_block_0_on_top_and_unit_names_on_hover():
    figure = plots.influence_heatmap(influence_table(), "cosine")
    heatmap = figure.data[0]
    assert list(heatmap.x) == ["attn", "mlp", "block"]
    assert list(heatmap.y) == [0, 1, 2]
    assert figure.layout.yaxis.autorange == "reversed"
    assert heatmap.customdata[2][0][0] == "2.attn" and heatmap.customdata[1][2][0] == "1"
    assert heatmap.z[2][1] == pytest.approx(0.6)
    assert "cosine distance" in heatmap.hovertemplate


def test_log_colour_keeps_exact_values_on_hover():
    heatmap = plots.influence_heatmap(influence_table(), "l2", log_colour=True).data[0]
    assert heatmap.z[0][0] == pytest.approx(1.0)  # log10 of 10.0
    assert heatmap.customdata[0][0][1] == pytest.approx(10.0)


def test_normalised_heatmaps_scale_each_metric_to_unit_interval():
    figure = plots.normalised_heatmaps(influence_table())
    assert len(figure.data) == 2
    for trace in figure.data:
        values = [v for row in trace.z for v in row]
        assert min(values) == pytest.approx(0.0) and max(values) == pytest.approx(1.0)
    assert figure.data[1].customdata[0][0][1] == pytest.approx(10.0)  # raw l2 value of 0.attn on hover
    logged = plots.normalised_heatmaps(influence_table(), ["l2"], log_colour=True).data[0]
    assert logged.z[1][0] == pytest.approx(math.log10(2) / math.log10(9))  # 1.attn between 0.attn and 2.block


def mmlu_result(prune: str, acc: list[float]) -> EvaluationResult:
    per_category = pd.DataFrame({"category": ["STEM", "other"], "n": [10, 10], "acc": acc})
    return EvaluationResult("mmlu", 20, {"acc": sum(acc) / 2}, {}, prune, 0.0, {}, pd.DataFrame(), per_category=per_category)


def test_mmlu_category_bars_name_each_evaluation_by_its_plan():
    figure = plots.mmlu_category_bars([mmlu_result("", [0.5, 0.3]), mmlu_result("3.attn", [0.4, 0.3])], "acc")
    assert [trace.name for trace in figure.data] == ["unpruned", "pruned 3.attn"]
    assert list(figure.data[1].x) == ["STEM", "other"]


def test_category_bars_have_length_at_none_and_all_of_n():
    none_and_all = EvaluationResult("mmlu", 20, {"acc": 0.5}, {}, "7", 0.0, {}, pd.DataFrame(),
                                    per_category=pd.DataFrame({"category": ["STEM", "other"], "n": [10, 10], "acc": [0.0, 1.0]}))
    bars = plots.mmlu_category_bars([none_and_all], "acc").data[0].error_y
    # Wilson at z = 1, 0 of 10: 0 to 1 / 11; 10 of 10: 10 / 11 to 1 (p ± stderr would be 0 wide at both)
    assert list(bars.arrayminus) == pytest.approx([0.0, 1 / 11]) and list(bars.array) == pytest.approx([1 / 11, 0.0])


def test_comparison_table_reports_the_change():
    table = plots.comparison_table(mmlu_result("", [0.5, 0.3]).per_category, mmlu_result("7", [0.4, 0.3]).per_category, "category", ["acc"])
    assert list(table["Δ acc"]) == pytest.approx([-0.1, 0.0])


# ---------------------------------------------------------------- figures and helpers of the curve, trade-off and recovery pages


def curve_table() -> pd.DataFrame:
    """Two rankings over three steps on Wikipedia (perplexity, nll) and MMLU (acc)."""
    rows = []
    for ranking, slope in (("cosine@wiki", 1.0), ("loss_shapley@wiki", 2.0)):
        for step in range(3):
            removed, plan = ("", "") if step == 0 else (str(step), ",".join(str(i) for i in range(1, step + 1)))
            common = {"ranking": ranking, "scheme": "block", "step": step, "removed": removed, "plan": plan}
            rows.append({**common, "task": "wiki", "metric": "perplexity", "value": 10.0 + slope * step, "stderr": 0.5})
            rows.append({**common, "task": "wiki", "metric": "nll", "value": 2.0 + slope * step / 10, "stderr": 0.01})
            rows.append({**common, "task": "mmlu:STEM", "metric": "acc", "value": 0.5 - 0.1 * step, "stderr": math.nan})
    return pd.DataFrame(rows)


def test_curve_figure_overlays_one_line_per_ranking_with_error_bars():
    curve = curve_table()
    assert plots.curve_panels(curve) == [("wiki", "perplexity"), ("wiki", "nll"), ("mmlu:STEM", "acc")]
    figure = plots.curve_figure(curve, "wiki", "perplexity")
    assert [trace.name for trace in figure.data] == ["cosine@wiki", "loss_shapley@wiki"]
    assert figure.data[0].line.color != figure.data[1].line.color
    assert list(figure.data[1].x) == [0, 1, 2] and list(figure.data[1].y) == [10.0, 12.0, 14.0]
    # perplexity's bars span exp(nll ± se_nll), se_nll = se_ppl / ppl (delta method): lopsided, never below zero
    bars = figure.data[0].error_y
    assert bars.visible and not bars.symmetric
    assert list(bars.arrayminus) == pytest.approx([10 * (1 - math.exp(-0.05)), 11 * (1 - math.exp(-0.5 / 11)), 12 * (1 - math.exp(-0.5 / 12))])
    assert list(bars.array) == pytest.approx([10 * (math.exp(0.05) - 1), 11 * (math.exp(0.5 / 11) - 1), 12 * (math.exp(0.5 / 12) - 1)])
    assert list(plots.curve_figure(curve, "wiki", "nll").data[0].error_y.array) == [0.01] * 3
    assert figure.layout.xaxis.dtick == 1 and list(figure.layout.xaxis.range) == [-0.5, 2.5]
    assert figure.layout.yaxis.type == "log" and figure.layout.xaxis.title.text == "whole blocks removed"
    assert figure.data[0].customdata[0][0] == "nothing" and figure.data[0].customdata[2][1] == "1,2"
    accuracy = plots.curve_figure(curve, "mmlu:STEM", "acc")
    assert not accuracy.data[0].error_y.visible and "±" not in accuracy.data[0].hovertemplate
    with pytest.raises(ValueError, match="no 'acc' values on 'wiki'"):
        plots.curve_figure(curve, "wiki", "acc")


def test_a_long_curve_keeps_its_ticks_apart_and_its_error_bars_above_zero():
    steps = 30
    rows = [
        {"ranking": "cosine@wiki", "scheme": "block", "step": step, "removed": str(step), "plan": "", "task": "wiki",
         "metric": "perplexity", "value": 10.0 ** (1 + step), "stderr": 3 * 10.0 ** (1 + step)}  # se larger than the value
        for step in range(steps + 1)
    ]
    figure = plots.curve_figure(pd.DataFrame(rows), "wiki", "perplexity")
    assert figure.layout.xaxis.dtick == 5 and list(figure.layout.xaxis.range) == [-0.5, 30.5]
    values, below = np.array(figure.data[0].y), np.array(figure.data[0].error_y.arrayminus)
    assert (values - below > 0).all(), "a bar reaches down to the log axis"
    assert figure.layout.yaxis.exponentformat == "power"


def test_curve_wide_has_one_row_per_ranking_and_step():
    wide = plots.curve_wide(curve_table())
    assert len(wide) == 6
    assert {"wiki perplexity", "wiki nll", "mmlu:STEM acc"} <= set(wide.columns)
    assert wide.loc[(wide["ranking"] == "cosine@wiki") & (wide["step"] == 2), "wiki perplexity"].item() == 12.0
    # each value is followed by its standard error where it has one; a table without n gets no n columns
    assert list(wide.columns[4:]) == ["wiki perplexity", "wiki perplexity stderr", "wiki nll", "wiki nll stderr", "mmlu:STEM acc"]


def generative_curve() -> pd.DataFrame:
    """One ranking over three steps on HumanEval (pass@1 of 24 problems) and Wikipedia (8 windows)."""
    rows = []
    for step, passed in enumerate((0.5, 1 / 24, 0.0)):
        common = {"ranking": "cosine@wiki", "scheme": "attn", "step": step, "removed": str(step), "plan": "", "dtype": "bfloat16"}
        rows.append({**common, "task": "humaneval", "metric": "pass@1", "value": passed,
                     "stderr": math.sqrt(passed * (1 - passed) / 23), "n": 24})
        rows.append({**common, "task": "wiki", "metric": "perplexity", "value": 10.0 + step, "stderr": 0.5, "n": 8})
    return pd.DataFrame(rows)


def test_a_share_at_zero_of_n_keeps_an_error_bar_and_every_curve_value_its_n():
    figure = plots.curve_figure(generative_curve(), "humaneval", "pass@1")
    bars = figure.data[0].error_y
    assert bars.visible and not bars.symmetric
    # step 2 passes 0 of 24: p ± stderr has length 0; Wilson's interval at z = 1 reaches 1 / 25 above and not below 0
    assert bars.arrayminus[2] == 0.0 and bars.array[2] == pytest.approx(1 / 25)
    low, high = proportion_interval(0.5, 24, z=1.0)
    assert (bars.arrayminus[0], bars.array[0]) == pytest.approx((0.5 - low, high - 0.5))
    assert "n = %{customdata[3]}" in figure.data[0].hovertemplate and figure.data[0].customdata[2][3] == 24
    wide = plots.curve_wide(generative_curve())
    assert list(wide.columns[4:]) == ["humaneval pass@1", "humaneval pass@1 stderr", "wiki perplexity", "wiki perplexity stderr",
                                      "humaneval n", "wiki n"]
    assert list(wide["humaneval n"]) == [24] * 3 and list(wide["wiki n"]) == [8] * 3


def test_tradeoff_deltas_are_green_when_better_and_red_when_worse():
    matrix = pd.DataFrame({
        "ranking": ["unpruned", "cosine@wiki", "cosine@mmlu:STEM"], "plan": ["", "3", "5"],
        "wiki perplexity": [10.0, 12.0, 15.0], "wiki perplexity Δ": [0.0, 2.0, -1.0],
        "mmlu:STEM acc": [0.5, 0.4, 0.6], "mmlu:STEM acc Δ": [0.0, -0.1, 0.1],
    })
    html = plots.tradeoff_styled(matrix).to_html()
    styles = plots._delta_styles(matrix["wiki perplexity Δ"])
    assert styles[0] == "" and plots.WORSE_RGB in styles[1] and plots.BETTER_RGB in styles[2]
    accuracy = plots._delta_styles(matrix["mmlu:STEM acc Δ"])
    assert plots.WORSE_RGB in accuracy[1] and plots.BETTER_RGB in accuracy[2]
    assert "+2.000" in html and "-10.0 pp" in html  # accuracy differences in percentage points


def test_tradeoff_deltas_within_two_standard_errors_of_the_difference_are_not_coloured():
    matrix = pd.DataFrame({
        "ranking": ["unpruned", "cosine@wiki", "loss_shapley@mmlu:STEM"], "plan": ["", "3", "5"], "mmlu:STEM n": [40, 40, 40],
        "mmlu:STEM acc": [0.5, 0.45, 0.3], "mmlu:STEM acc Δ": [0.0, -0.05, -0.2], "mmlu:STEM acc Δ stderr": [math.nan, 0.04, 0.05],
        "mmlu:STEM acc Δ beyond noise": [False, False, True],  # -5 pp is within 2 x 4 pp; -20 pp is not
    })
    styles = plots._delta_styles(matrix["mmlu:STEM acc Δ"], matrix["mmlu:STEM acc Δ beyond noise"])
    assert styles[:2] == ["", ""] and plots.WORSE_RGB in styles[2]
    html = plots.tradeoff_styled(matrix).to_html()
    assert "± 4.0 pp" in html and "-20.0 pp" in html and html.count(plots.WORSE_RGB) == 1
    assert "beyond noise" not in html


def test_correlation_heatmap_is_labelled_and_fixed_to_minus_one_one():
    labels = ["cosine@wiki", "cosine@mmlu:STEM"]
    correlation = pd.DataFrame([[1.0, 0.3], [0.3, 1.0]], index=labels, columns=labels)
    heatmap = plots.correlation_heatmap(correlation, "block").data[0]
    assert list(heatmap.x) == labels and (heatmap.zmin, heatmap.zmax) == (-1, 1)
    assert heatmap.z[0][1] == pytest.approx(0.3)


def test_recovery_comparison_names_each_recovery():
    table = pd.DataFrame({"variant": ["unpruned", "pruned", "bias/emulate", "bias/emulate"], "wiki perplexity": [10.0, 20.0, 15.0, 14.0]})
    named = plots.recovery_comparison(table, ["bias/emulate, pruned inputs", "bias/emulate, unpruned inputs"])
    assert list(named["variant"]) == ["unpruned", "pruned", "bias/emulate, pruned inputs", "bias/emulate, unpruned inputs"]
    with pytest.raises(ValueError):
        plots.recovery_comparison(table, ["one"])
    assert plots.variant_bars(named, "wiki perplexity", "stderr").layout.title.text == "wiki perplexity (lower is better)"


def test_recovery_comparison_shows_confidence_intervals_and_flags_noise():
    from pruneviz import api

    table = pd.DataFrame({
        "variant": ["unpruned", "pruned", "bias", "lowrank"],
        "wiki perplexity": [10.0, 20.0, 15.0, 14.0],
        "wiki perplexity stderr": [0.5, 1.0, 1.0, 1.0],
    })
    # |15 - 20| = 5 > 2 sqrt(2) ~ 2.83: bias beats pruned; |14 - 15| = 1 < 2.83: bias vs lowrank is noise
    assert api.recoveries_within_noise(table) == [("lowrank", "bias", "wiki perplexity")]
    # nll says what perplexity says: flagged once
    with_nll = table.assign(**{"wiki nll": [2.3, 3.0, 2.7, 2.64], "wiki nll stderr": [0.05, 0.05, 0.05, 0.05]})
    assert api.recoveries_within_noise(with_nll) == [("lowrank", "bias", "wiki perplexity")]
    # 4 sigmas: threshold 4 sqrt(2) ~ 5.66 takes in bias vs pruned (5) but not lowrank vs pruned (6)
    assert api.recoveries_within_noise(table, sigmas=4.0) == [("bias", "pruned", "wiki perplexity"), ("lowrank", "bias", "wiki perplexity")]
    shown = plots.with_confidence_columns(table, "stderr")
    assert list(shown.columns) == ["variant", "wiki perplexity", "wiki perplexity ±95% CI"]
    assert shown["wiki perplexity ±95% CI"].tolist() == pytest.approx([0.98, 1.96, 1.96, 1.96], abs=1e-3)
    bars = plots.variant_bars(table, "wiki perplexity", "stderr")
    assert list(bars.data[0].error_y.array) == pytest.approx([0.98, 1.96, 1.96, 1.96], abs=1e-3)
    assert "95% CI" in bars.layout.title.text


def test_shapley_standard_errors_reach_the_hover_and_the_table():
    table = influence_table()
    shapley = table[table["metric"] == "cosine"].assign(metric="loss_shapley", stderr=0.25, dataset="wiki")
    table = pd.concat([table, shapley], ignore_index=True)
    heatmap = plots.influence_heatmap(table, "loss_shapley").data[0]
    assert "±" in heatmap.hovertemplate and heatmap.customdata[0][0][2] == pytest.approx(0.25)
    assert "±" not in plots.influence_heatmap(table, "cosine").data[0].hovertemplate
    wide = plots.influence_wide(table)
    assert list(wide.columns) == ["layer", "sublayer", "unit", "cosine", "l2", "loss_shapley", "loss_shapley stderr"]
    assert plots.metric_label("loss_shapley") == "−Shapley value for the task loss (loss_shapley)"


# ---------------------------------------------------------------- reliability: differences judged against their noise


def evaluation(value: float, stderr: float, n: int = 50) -> EvaluationResult:
    return EvaluationResult("mmlu", n, {"acc": value}, {"acc": stderr}, "", 0.0, {}, pd.DataFrame())


def test_within_noise_compares_the_difference_with_two_combined_standard_errors():
    from pruneviz import api

    # combined standard error sqrt(0.03² + 0.04²) = 0.05, so the noise band is ± 0.10
    assert api.within_noise(evaluation(0.40, 0.03), evaluation(0.49, 0.04), "acc")
    assert not api.within_noise(evaluation(0.40, 0.03), evaluation(0.51, 0.04), "acc")
    assert api.within_noise(evaluation(0.0, math.nan, n=1), evaluation(1.0, math.nan, n=1), "acc")
    assert api.confidence_halfwidth(0.05) == pytest.approx(0.098, abs=1e-3)
    with pytest.raises(Exception, match="'loss' is not in both results"):
        api.within_noise(evaluation(0.4, 0.03), evaluation(0.5, 0.03), "loss")


def test_perplexity_is_judged_against_noise_by_its_nll():
    from pruneviz import api

    def wiki(nll: float, se_nll: float) -> EvaluationResult:
        # the delta-method standard error of perplexity, exp(nll) x se(nll), as the evaluator reports it
        ppl = math.exp(nll)
        return EvaluationResult("wiki", 8, {"perplexity": ppl, "nll": nll}, {"perplexity": ppl * se_nll, "nll": se_nll}, "", 0.0, {}, pd.DataFrame())

    # every block pruned: NLL 3.14 -> 103.9 nats is far outside noise, though the perplexity band is wider still
    unpruned, everything = wiki(3.14, 0.1), wiki(103.9, 4.0)
    assert api.difference_within_noise(unpruned.metrics["perplexity"], unpruned.stderr["perplexity"],
                                       everything.metrics["perplexity"], everything.stderr["perplexity"])
    assert not api.within_noise(unpruned, everything, "perplexity")
    assert api.within_noise(wiki(3.14, 0.1), wiki(3.30, 0.1), "perplexity")


def test_comparison_table_gives_each_subject_its_n_and_confidence_interval():
    baseline = pd.DataFrame({"subject": ["anatomy", "astronomy"], "category": ["STEM", "STEM"], "n": [5, 1], "acc": [0.6, 1.0]})
    pruned = baseline.assign(acc=[0.4, 0.0])
    table = plots.comparison_table(baseline, pruned, "subject", ["acc"], confidence=True)
    assert list(table["n"]) == [5, 1]
    assert table["± acc (95% CI)"].iloc[0] == pytest.approx(1.959964 * math.sqrt(0.4 * 0.6 / 4))
    assert math.isnan(table["± acc (95% CI)"].iloc[1])  # one question: no standard error
    assert "± acc (95% CI)" not in plots.comparison_table(baseline, pruned, "subject", ["acc"]).columns


def test_heatmap_colours_resist_one_extreme_unit_and_centre_signed_values_at_zero():
    values = np.array([[0.5, 0.6], [0.55, 0.52], [0.58, 0.61], [0.54, 0.57]] * 10)
    values[0, 0] = 50.0  # one unit far above the rest
    linear = plots.colour_range(values)
    assert linear["colorscale"] == plots.COLORSCALE and linear["zmax"] < 50 and linear["zmin"] >= 0.5
    signed = plots.colour_range(np.array([-0.2, -0.01, 0.0, 0.03, 0.4, 3.0]))
    assert signed["colorscale"] == plots.DIVERGING and signed["zmid"] == 0 and signed["zmin"] == -signed["zmax"]
    assert plots.colour_range(np.array([np.nan, np.nan])) == {"colorscale": plots.COLORSCALE}


def test_log_colour_is_not_applied_to_shapley_values_at_or_below_zero():
    rows = [{"unit": f"{i}.{s}", "layer": i, "sublayer": s, "metric": "loss_shapley", "value": v, "stderr": 0.01, "dataset": "wiki"}
            for i, (s, v) in enumerate([("attn", -0.05), ("mlp", 0.2), ("attn", 0.0), ("mlp", 1.5)])]
    figure = plots.influence_heatmap(pd.DataFrame(rows), "loss_shapley", log_colour=True)
    heatmap = figure.data[0]
    assert heatmap.colorbar.title.text == plots.metric_label("loss_shapley")  # not "log10 ..."
    assert heatmap.zmid == 0 and heatmap.zmin == -heatmap.zmax
    assert np.nanmin(np.array(heatmap.z, dtype=float)) == -0.05  # the values themselves, not clipped logarithms
