"""The app's figures and tables (``pruneviz.plots``) and the noise judgements they show, on hand-made tables.

No model: the pages themselves run on the embedded model in ``tests/real/test_app_pages.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pruneviz import plots
from pruneviz.evaluation.results import EvaluationResult

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
