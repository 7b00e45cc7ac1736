"""Greedy pruning curves: remove the K least important units one by one and evaluate every step.

The figures of Siddiqui et al. (2024, §4): one line per ranking metric, one chart per task metric.
"""

import pandas as pd
import streamlit as st

from pruneviz import api, plots, ui
from pruneviz.studies.curves import CURVE_COLUMNS, Ranking, Task, pruning_curve

RESULT_KEY = "curves_result"
FORM = "curves_settings"
CHARTS_PER_ROW = 2


def ranking_inputs(loaded, estimator_choice: str) -> dict:
    """The ranking half of the form: metrics, their dataset and estimator, scheme, steps, iterative mode."""
    left, right = st.columns([3, 2])
    with left:
        metrics = ui.metric_inputs("curves_metrics", label="Ranking metrics (one curve each)", form=FORM)
    scheme = ui.scheme_input("curves_scheme", FORM, right)
    data, samples, seq_len = ui.calibration_inputs(
        loaded, "curves", samples=4, seq_len=64, data_label="Metric data",
        data_help="The data the ranking metric is computed on: the calibration half of Wikipedia, or MMLU "
        "prompts of a category (0-shot letter format).",
        samples_help="Text: calibration documents. MMLU: static metrics use this many prompts in all, "
        "adaptive metrics this many questions per subject (half of them when held out).",
        form=FORM,
    )
    with st.expander("Adaptive metrics: Shapley estimator"):
        estimator = ui.estimator_inputs("curves", estimator_choice, form=FORM)
        st.caption(ui.ADAPTIVE_COST_NOTE)
    steps_column, iterative_column = st.columns(2)
    most = 2 * loaded.n_blocks
    steps = steps_column.number_input("Steps K (units removed)", 1, most, **ui.remembered("curves_steps", 3, (1, most), FORM))
    iterative = iterative_column.checkbox(
        "Iterative", **ui.remembered("curves_iterative", False, form=FORM),
        help="Recompute the metric on the pruned model after every removal (K rankings instead of one).",
    )
    return {
        "metrics": metrics, "scheme": scheme, "steps": int(steps), "iterative": iterative,
        "data": data, "options": {"samples": samples, "seq_len": seq_len, **estimator},
    }


def settings_form(loaded) -> tuple[dict, bool]:
    """Draw the settings; return them and whether Run was pressed."""
    estimator_choice = ui.estimator_choice("curves")
    with st.form(FORM):
        st.subheader("Ranking")
        settings = ranking_inputs(loaded, estimator_choice)
        st.subheader("Tasks")
        tasks, heldout = ui.task_inputs(loaded, "curves", per_subject=2, offer_heldout=True, form=FORM)
        pressed = ui.form_submit_button(FORM, "Run", type="primary")
    settings["options"]["half"] = "fit" if heldout else "all"
    return {**settings, "tasks": tasks, "heldout": heldout}, pressed


def check(settings: dict) -> None:
    """Stop with one error sentence when the settings cannot make a curve."""
    if not settings["metrics"]:
        ui.stop_with_error("Pick at least one ranking metric.")
    if not settings["tasks"]:
        ui.stop_with_error("Choose Wikipedia perplexity, an MMLU subset or a generative task to evaluate at each step.")
    ui.check_heldout(settings["heldout"], settings["tasks"])


def compute(loaded, settings: dict) -> dict:
    """One :func:`pruneviz.studies.curves.pruning_curve` per metric, each with progress bars; return what the page shows."""
    check(settings)
    tasks = [Task(name, options) for name, options in settings["tasks"]]
    with ui.cancellable("curves"):
        curves = [curve_of(loaded, metric, settings, tasks) for metric in settings["metrics"]]
    return {"curve": pd.concat(curves, ignore_index=True), "settings": settings, "model": loaded.fingerprint}


def curve_of(loaded, metric: str, settings: dict, tasks: list[Task]) -> pd.DataFrame:
    """The pruning curve of one ranking metric, with a progress bar for its ranking and one for its steps."""
    with ui.ProgressBar(f"{metric}: ranking units") as ranking_progress, ui.ProgressBar(f"{metric}: evaluating the steps") as progress:
        ranking = Ranking(metric, settings["data"], {**settings["options"], "progress": ranking_progress})
        return ui.run_or_stop(
            pruning_curve, loaded, ranking, settings["scheme"], settings["steps"], tasks, settings["iterative"], progress
        )


def provenance(settings: dict) -> str:
    """Where the rankings came from and which questions were evaluated: held out or optimistic."""
    adaptive_on_mmlu = bool(ui.adaptive_metrics(settings["metrics"])) and api.TaskSpec.parse(settings["data"]).is_mmlu
    mmlu_evaluated = any(api.TaskSpec.parse(name).is_mmlu for name, _ in settings["tasks"])
    note = ui.heldout_note(settings["heldout"], adaptive_on_mmlu, mmlu_evaluated)
    return f"Rankings computed on **{ui.dataset_label(settings['data'])}**. {note}"


def show_charts(curve: pd.DataFrame) -> None:
    """One line chart per task metric, two per row."""
    panels = plots.curve_panels(curve)
    for start in range(0, len(panels), CHARTS_PER_ROW):
        for column, (task, metric) in zip(st.columns(CHARTS_PER_ROW), panels[start : start + CHARTS_PER_ROW]):
            with column:
                ui.plotly_chart(plots.curve_figure(curve, task, metric), f"curve_{task}_{metric}")


def show_result(result: dict) -> None:
    """Charts, the table and a CSV download of the curves."""
    curve, settings = result["curve"], result["settings"]
    st.header("Curves")
    st.info(provenance(settings))
    charts, table = st.tabs(["Charts", "Table"])
    with charts:
        show_charts(curve)
        st.caption(
            "Step 0 is the unpruned model; error bars are one standard error over windows, questions or problems "
            "(for shares such as accuracy or pass@1, Wilson's interval at z = 1: it stays inside 0-100 % and does not "
            "shrink to nothing at 0 of n). Hover a point for its n. The table's stderr columns are the standard errors "
            "themselves (for a share, sqrt(p (1 − p) / (n − 1)), which is 0 at 0 of n)."
        )
    with table:
        st.dataframe(plots.curve_wide(curve), hide_index=True)
        st.download_button(
            "Download CSV", curve.to_csv(index=False), file_name="pruning_curves.csv", mime="text/csv",
            help=f"Columns {', '.join(CURVE_COLUMNS)} (as `pruneviz curve` writes).",
        )


model = ui.page(
    "Pruning curves",
    "Greedy pruning curves",
    "Sort the units by a metric (least important first), remove 0, 1, ..., K of them and evaluate every step. "
    "Several metrics overlay on one chart per task metric, as in Siddiqui et al. (2024, §4). Every "
    "evaluation is cached, so overlapping curves share their steps."
)
chosen, pressed = settings_form(model)
if pressed:
    st.session_state[RESULT_KEY] = compute(model, chosen)
stored = ui.stored_result(RESULT_KEY, model)
if stored is not None:
    show_result(stored)
