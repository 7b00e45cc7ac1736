"""The Streamlit app: layering rules, figures, and every page run on the real embedded model with AppTest."""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from pruneviz import plots
from pruneviz.evaluation.results import EvaluationResult

REPO = Path(__file__).resolve().parent.parent
APP_FILES = [REPO / "app.py", *sorted((REPO / "pages").glob("*.py"))]
LIBRARY_FILES = sorted((REPO / "pruneviz").rglob("*.py"))
TIMEOUT = 300  # seconds per AppTest run: a cold model load converts the GGUF file once


def imported_roots(path: Path) -> set[str]:
    """Top-level package names that ``path`` imports (absolute imports only)."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


# ---------------------------------------------------------------- layering


@pytest.mark.parametrize("path", APP_FILES, ids=lambda p: p.name)
def test_app_and_pages_never_import_torch_or_transformers(path):
    assert not imported_roots(path) & {"torch", "transformers"}, f"{path.name} must call pruneviz, not torch"


def test_only_pruneviz_ui_imports_streamlit():
    offenders = [p.relative_to(REPO) for p in LIBRARY_FILES if p.name != "ui.py" and "streamlit" in imported_roots(p)]
    assert not offenders, f"only pruneviz/ui.py may import streamlit: {offenders}"


def test_pages_are_discovered_in_numeric_order_without_st_navigation():
    pages = [p.name for p in APP_FILES[1:]]
    assert pages == ["1_Influence.py", "2_Prune_and_evaluate.py"]
    for path in APP_FILES:
        assert "navigation" not in {n.attr for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Attribute)}


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


def test_a_model_from_before_a_module_reload_is_not_reused():
    from types import SimpleNamespace

    from pruneviz import ui

    # a stand-in for a LoadedModel built by modules that Streamlit has since re-imported
    assert not ui._from_current_modules(SimpleNamespace(name="smollm2"))


# ---------------------------------------------------------------- pages on the real model


def first_number(text: str) -> float:
    """The leading number of a displayed metric such as ``"23.10 ± 4.00"``."""
    return float(re.match(r"[-+]?\d[\d,]*\.?\d*", text).group().replace(",", ""))


@pytest.fixture
def app():
    """The app started from app.py, landing page already run."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def open_page(at, page: str):
    at.switch_page(f"pages/{page}")
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.mark.real
def test_landing_page_shows_the_architecture(app):
    values = {m.label: m.value for m in app.metric}
    assert values["Blocks"] == "30"
    assert values["Hidden size d"] == "576"
    assert "Siddiqui" in "".join(md.value for md in app.markdown)


@pytest.mark.real
def test_an_unloadable_model_gives_one_error_not_a_traceback(app):
    app.sidebar.selectbox(key="_model_choice").set_value("other").run()
    app.sidebar.text_input(key="_model_other").input("/nonexistent/model.gguf").run()
    assert not app.exception
    assert len(app.error) == 1 and "/nonexistent/model.gguf" in app.error[0].value


@pytest.mark.real
def test_influence_page_draws_heatmaps(app):
    at = open_page(app, "1_Influence.py")
    assert at.get("plotly_chart"), "the first visit computes the default influences"
    at.number_input(key="influence_samples").set_value(2)
    at.number_input(key="influence_seq_len").set_value(32)
    at.multiselect(key="influence_metrics").set_value(["cosine", "rel_l2"])
    next(b for b in at.button if b.label == "Compute influence").click().run()
    assert not at.exception, at.exception
    at.radio(key="influence_view").set_value("all metrics, normalised").run()
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == 1
    assert any("calibration half" in info.value for info in at.info)


@pytest.mark.real
def test_pruning_one_attention_sublayer_changes_perplexity(app):
    at = open_page(app, "2_Prune_and_evaluate.py")
    at.checkbox(key="toggle_3_attn").check().run()
    assert at.text_input(key="plan_text").value == "3.attn"
    at.number_input(key="wiki_windows").set_value(2)
    at.number_input(key="wiki_seq_len").set_value(64)
    next(b for b in at.button if b.label == "Run").click().run()
    assert not at.exception, at.exception
    values = {m.label: first_number(m.value) for m in at.metric}
    pruned, baseline = values["Perplexity (pruned)"], values["Perplexity (unpruned)"]
    assert math.isfinite(pruned) and math.isfinite(baseline) and pruned != baseline
    next(b for b in at.button if b.label == "Run").click().run()
    assert any("Unpruned from cache; pruned from cache" in c.value for c in at.caption)


@pytest.mark.real
def test_pruning_the_n_least_important_blocks_sets_the_plan(app):
    at = open_page(app, "2_Prune_and_evaluate.py")
    at.number_input(key="ranking_samples").set_value(2)
    at.number_input(key="ranking_seq_len").set_value(32)
    next(b for b in at.button if b.label == "Build plan").click().run()
    assert not at.exception, at.exception
    plan = at.text_input(key="plan_text").value
    assert len(plan.split(",")) == 4 and all(unit.isdigit() for unit in plan.split(","))
    assert sum(at.checkbox(key=f"toggle_{i}_block").value for i in range(30)) == 4


@pytest.mark.real
def test_plan_text_and_block_toggles_share_one_canonical_plan(app):
    at = open_page(app, "2_Prune_and_evaluate.py")
    at.text_input(key="plan_text").input("12.mlp, 3.attn,3.mlp").run()
    assert at.text_input(key="plan_text").value == "3,12.mlp"
    assert at.checkbox(key="toggle_3_block").value and not at.checkbox(key="toggle_12_attn").value
    at.checkbox(key="toggle_3_block").uncheck().run()
    assert at.text_input(key="plan_text").value == "12.mlp"
    at.text_input(key="plan_text").input("99.attn").run()
    assert not at.exception
    assert len(at.error) == 1 and "blocks 0-29" in at.error[0].value


@pytest.mark.real
def test_mmlu_results_show_deltas_per_category_and_subject(app):
    at = open_page(app, "2_Prune_and_evaluate.py")
    at.text_input(key="plan_text").input("5").run()
    at.checkbox(key="use_wiki").uncheck().run()
    at.checkbox(key="use_mmlu").check().run()
    assert at.radio(key="mmlu_format").value == "cloze"
    at.radio(key="mmlu_subset").set_value("chosen subjects").run()
    at.multiselect(key="mmlu_subjects").set_value(["anatomy", "astronomy"]).run()
    next(b for b in at.button if b.label == "Run").click().run()
    assert not at.exception, at.exception
    labels = [m.label for m in at.metric]
    assert "acc (pruned)" in labels and "acc_norm (unpruned)" in labels
    assert at.get("plotly_chart") and at.dataframe
