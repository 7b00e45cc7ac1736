"""Task trade-offs: prune K units by metrics computed on each task's data, and evaluate every task.

A metric computed on one task (an adaptive one above all) ranks units for that task; the matrix shows
what that ranking does to the other tasks, and the heatmap how much the rankings agree.
"""

import streamlit as st

from pruneviz import api, plots, ui
from pruneviz.studies.curves import Ranking, Task, ranking_correlation, tradeoff_matrix

RESULT_KEY = "tradeoff_result"
FORM = "tradeoff_settings"
EXPLANATION = (
    "Each row prunes K units chosen by one metric computed on one task's data (`metric@task`; the first "
    "row is the unpruned model); each column is one task's score after pruning, with its change from the "
    "unpruned model (green = better, red = worse). A metric tuned on one task can keep that task's score "
    "while hurting another, so the rows trade tasks against each other; the rank correlations show how "
    "differently the metrics order the units."
)


def metric_inputs(loaded, estimator_choice: str) -> dict:
    """Metrics, how much data each is computed on, and the Shapley estimator."""
    left, right = st.columns([3, 2])
    with left:
        metrics = ui.metric_inputs("tradeoff_metrics", label="Metrics (each computed on each task's data)", form=FORM)
    with right:
        samples_column, length_column = st.columns(2)
        most, longest = ui.cap("samples", 1024), ui.cap("seq_len", loaded.max_length)
        samples = samples_column.number_input(
            "Metric samples", 1, most, **ui.remembered("tradeoff_samples", min(4, most), (1, most), FORM),
            help="Text: calibration documents. MMLU: static metrics use this many prompts in all, adaptive "
            "metrics this many questions per subject (half of them when held out).",
        )
        seq_len = length_column.number_input(
            "Tokens per document", 2, longest, step=32, **ui.remembered("tradeoff_seq_len", min(64, longest), (2, longest), FORM)
        )
    with st.expander("Adaptive metrics: Shapley estimator"):
        estimator = ui.estimator_inputs("tradeoff", estimator_choice, form=FORM)
        st.caption(ui.ADAPTIVE_COST_NOTE)
    return {"metrics": metrics, "options": {"samples": int(samples), "seq_len": int(seq_len), **estimator}}


def settings_form(loaded) -> tuple[dict, bool]:
    """Draw the settings; return them and whether Run was pressed."""
    estimator_choice = ui.estimator_choice("tradeoff")
    with st.form(FORM):
        st.subheader("Tasks")
        tasks, heldout = ui.task_inputs(loaded, "tradeoff", mmlu=("mmlu:STEM",), per_subject=2, offer_heldout=True, form=FORM)
        st.subheader("Metrics and pruning")
        settings = metric_inputs(loaded, estimator_choice)
        scheme_column, count_column = st.columns(2)
        scheme = ui.scheme_input("tradeoff_scheme", FORM, scheme_column)
        most = 2 * loaded.n_blocks
        count = count_column.number_input("K units pruned", 1, most, **ui.remembered("tradeoff_count", 3, (1, most), FORM))
        pressed = ui.form_submit_button(FORM, "Run", type="primary")
    settings["options"]["half"] = "fit" if heldout else "all"
    return {**settings, "tasks": tasks, "heldout": heldout, "scheme": scheme, "count": int(count)}, pressed


def check(settings: dict) -> None:
    """Stop with one error sentence when the settings cannot make a trade-off."""
    if len(settings["tasks"]) < 2:
        ui.stop_with_error("Choose at least two tasks (e.g. Wikipedia and an MMLU category): a trade-off needs two.")
    if not settings["metrics"]:
        ui.stop_with_error("Pick at least one metric.")
    if not ranking_tasks(settings["tasks"]):
        ui.stop_with_error("Choose Wikipedia or an MMLU subset as well: metrics are computed on their data, while generative tasks are only evaluated.")
    ui.check_heldout(settings["heldout"], settings["tasks"])


def ranking_tasks(tasks: list[tuple[str, dict]]) -> list[str]:
    """The chosen tasks whose data metrics can be computed on: all but the generative ones, which are only evaluated."""
    return [name for name, _ in tasks if api.TaskSpec.parse(name).kind != "generative"]


def compute(loaded, settings: dict) -> dict:
    """The trade-off matrix and the rank correlations of every metric@task ranking, with progress bars."""
    check(settings)
    tasks = [Task(name, options) for name, options in settings["tasks"]]
    with ui.cancellable("tradeoff"), ui.ProgressBar("Ranking units") as ranking_progress, \
            ui.ProgressBar("Evaluating every ranking on every task") as progress:
        options = {**settings["options"], "progress": ranking_progress}
        # each metric is computed on each task's own data (the task name is also its dataset name); generative
        # tasks hold no text to score, so they are evaluated under every ranking but rank nothing
        rankings = [Ranking(metric, name, options) for metric in settings["metrics"] for name in ranking_tasks(settings["tasks"])]
        matrix = ui.run_or_stop(tradeoff_matrix, loaded, rankings, tasks, settings["scheme"], settings["count"], progress)
        correlation = ui.run_or_stop(ranking_correlation, loaded, rankings, settings["scheme"])
    return {"matrix": matrix, "correlation": correlation, "settings": settings, "model": loaded.fingerprint}


def show_result(result: dict) -> None:
    """The coloured matrix, its CSV, and the rank-correlation heatmap."""
    matrix, settings = result["matrix"], result["settings"]
    adaptive_on_mmlu = bool(ui.adaptive_metrics(settings["metrics"]))
    mmlu_evaluated = any(api.TaskSpec.parse(name).is_mmlu for name, _ in settings["tasks"])
    st.header(f"Pruning {settings['count']} {api.UNIT_SELECTIONS[settings['scheme']].label}")
    st.markdown(EXPLANATION)
    st.info(ui.heldout_note(settings["heldout"], adaptive_on_mmlu and mmlu_evaluated, mmlu_evaluated))
    st.dataframe(plots.tradeoff_styled(matrix), hide_index=True)
    st.download_button("Download CSV", matrix.to_csv(index=False), file_name="tradeoff_matrix.csv", mime="text/csv")
    ui.plotly_chart(plots.correlation_heatmap(result["correlation"], settings["scheme"]), "rank_correlation")
    st.caption("Spearman correlation of the unit orders: 1 = the two metrics prune in the same order, 0 = unrelated, −1 = reversed.")


model = ui.page(
    "Task trade-offs",
    "Task trade-offs",
    "Which units matter depends on the task. Compute metrics on each task's data, prune the K least "
    "important units by each, and evaluate every task (Siddiqui et al. 2024, §4: e.g. Wikipedia vs MMLU)."
)
chosen, pressed = settings_form(model)
if pressed:
    st.session_state[RESULT_KEY] = compute(model, chosen)
stored = ui.stored_result(RESULT_KEY, model)
if stored is not None:
    show_result(stored)
