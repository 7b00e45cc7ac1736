"""Static and adaptive influence of every block and sublayer, as a heatmap, a table and a CSV file."""

import math

import streamlit as st

from pruneviz import api, plots, ui

GRANULARITIES = ("sublayer", "block", "all")
RESULT_KEY = ui.INFLUENCE_RESULT_KEY
FORM = "influence_settings"
ONE, ALL = "one metric", "all metrics, normalised"


def settings_form(loaded) -> tuple[dict, bool]:
    """Draw the settings; return them and whether Compute was pressed."""
    estimator_choice = ui.estimator_choice("influence")
    with st.form(FORM):
        data, samples, seq_len = ui.calibration_inputs(
            loaded, "influence",
            samples_help="Text: calibration documents. MMLU: static metrics use this many prompts in all, "
            "adaptive metrics this many questions per subject.",
            form=FORM,
        )
        left, right = st.columns([2, 1])
        with left:
            metrics = ui.metric_inputs("influence_metrics", form=FORM)
            st.caption("loss_shapley and logit_shapley are adaptive: far slower than the static metrics (see the estimator settings).")
        granularity = right.radio(
            "Granularity", GRANULARITIES, format_func=lambda name: api.UNIT_SELECTIONS[name].label, horizontal=True,
            **ui.remembered("influence_granularity", "sublayer", form=FORM),
        )
        with st.expander("Adaptive metrics: Shapley estimator"):
            estimator = ui.estimator_inputs("influence", estimator_choice, form=FORM)
            st.caption(ui.ADAPTIVE_COST_NOTE)
        pressed = ui.form_submit_button(FORM, "Compute influence", type="primary")
    settings = {"data": data, "metrics": metrics, "granularity": granularity, "samples": samples, "seq_len": seq_len, **estimator}
    return settings, pressed


def compute(loaded, settings: dict) -> dict:
    """Run :func:`pruneviz.api.influence` with a progress bar; return what the page shows."""
    if not settings["metrics"]:
        ui.stop_with_error("Pick at least one metric.")
    label = "Subnetworks evaluated" if ui.adaptive_metrics(settings["metrics"]) else "Forward passes over the calibration data"
    with ui.cancellable("influence"), ui.ProgressBar(label) as progress:
        table = ui.run_or_stop(api.influence, loaded, progress=progress, **settings)
    return {"table": table, "settings": settings, "model": loaded.fingerprint}


def show_heatmap(table, metrics: list[str], granularity: str) -> None:
    """One metric (raw values) or all metrics side by side (normalised), with the pruning order."""
    left, middle, right = st.columns([2, 2, 1], vertical_alignment="bottom")
    view = left.radio("Show", [ONE, ALL], horizontal=True, disabled=len(metrics) < 2, key="influence_view")
    log_colour = right.checkbox(
        "Log colour scale", key="influence_log",
        help="Keeps one large value (often block 0) from flattening the rest. Values ≤ 0 (possible for "
        "Shapley metrics) share the lowest colour.",
    )
    if view == ALL and len(metrics) > 1:
        ui.plotly_chart(plots.normalised_heatmaps(table, metrics, log_colour), "influence_all_metrics")
        st.caption("Each metric is scaled to [0, 1] over all its units (min-max), so colours compare orderings, not magnitudes.")
        return
    metric = middle.selectbox("Metric", metrics, format_func=ui.metric_label, key="influence_metric")
    ui.plotly_chart(plots.influence_heatmap(table, metric, log_colour), f"influence_{metric}")
    st.caption(ui.metric_caption(metric))
    order = api.ranked_units(table, metric, api.unit_selection(granularity).measured_as)
    st.markdown(f"Pruned first by {metric}: `{', '.join(str(u) for u in order[:8])}` ...")


def cost_caption(cost: dict) -> str:
    """What the adaptive metrics cost: subnetworks, block forwards (with and without prefix reuse), seconds."""
    return "Adaptive cost: " + "; ".join(api.cost_summary(name, entry) for name, entry in cost.items()) + "."


def show_result(result: dict) -> None:
    """Heatmap, table and CSV download of an influence table."""
    table, settings = result["table"], result["settings"]
    dataset = ", ".join(sorted(set(table["dataset"])))
    st.info(
        f"Computed on **{dataset}** ({settings['samples']} samples of up to {settings['seq_len']} tokens) "
        f"in {', '.join(sorted(set(table['dtype'])))}. "
        "Perplexity on the *Prune and evaluate* page is measured on the evaluation half of Wikipedia, "
        "so no text is used both to rank units and to judge the pruned model."
    )
    if table.attrs.get("cost"):
        st.caption(cost_caption(table.attrs["cost"]))
    if any(math.isfinite(v) for v in table["stderr"]):
        st.caption("Shapley estimates carry a standard error (hover a cell, or see the stderr columns of the table).")
    heatmap, data = st.tabs(["Heatmap", "Table"])
    with heatmap:
        show_heatmap(table, settings["metrics"], settings["granularity"])
    with data:
        st.dataframe(plots.influence_wide(table), hide_index=True)
        st.download_button(
            "Download CSV", table.to_csv(index=False), file_name="influence.csv", mime="text/csv",
            help="Columns unit, layer, sublayer, metric, value, stderr, dataset, dtype (as `pruneviz influence` writes).",
        )


model = ui.page(
    "Influence",
    "Influence of blocks and sublayers",
    "Static metrics measure how much each unit changes the residual stream in one forward pass over "
    "calibration text: for input `x` and output `y = x + f(x)` of a unit, averaged over tokens. Adaptive "
    "metrics (`loss_shapley`, `logit_shapley`) measure what each unit is worth to a task objective by "
    "evaluating subnetworks without it: more faithful to the task, and much slower. "
    "Higher = more important; ascending order is the pruning order."
)
chosen, pressed = settings_form(model)
# compute on the first visit too, so the page never opens empty (repeats come from the cache), but never
# start adaptive metrics unasked: remembered settings may hold a Shapley run of many minutes
if pressed or (ui.stored_result(RESULT_KEY, model) is None and not ui.adaptive_metrics(chosen["metrics"])):
    st.session_state[RESULT_KEY] = compute(model, chosen)
if ui.stored_result(RESULT_KEY, model) is None:
    st.info("Adaptive metrics can take minutes: press **Compute influence** to start.")
else:
    show_result(st.session_state[RESULT_KEY])
