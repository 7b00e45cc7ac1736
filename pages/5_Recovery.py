"""Recovery: replace each pruned unit's update by a cheap stand-in and measure what it buys back.

Fits accumulate per plan, so several methods can be compared in one table; each fit is saved under
the cache directory and offered as a zip.
"""

import streamlit as st

from pruneviz import api, plots, ui
from pruneviz.studies.recovery import FITS, METHODS

RESULT_KEY = "recovery_comparison"
METHOD_LABELS = {
    "bias": "bias: add the mean update b (d parameters)",
    "lowrank": "lowrank: x·A·B + b, rank r (reduced-rank regression)",
    "linear": "linear: x·M, one d × d map (ReplaceMe-style)",
    "rescale": "rescale: x ⊙ s, per channel (LinearPatch-style)",
}
FIT_LABELS = {
    "emulate": "emulate: least squares on the unit's own activations (closed form)",
    "train": "train: then gradient descent on the end-to-end LM loss",
}
INPUT_LABELS = {
    "pruned": "pruned model (each stand-in sees the earlier ones)",
    "unpruned": "unpruned model",
}


def method_inputs(loaded) -> dict:
    """Method, rank, fit, inputs and (for training) steps and learning rate."""
    left, right = st.columns(2)
    method = left.selectbox("Method", METHODS, format_func=METHOD_LABELS.get, **ui.remembered("recovery_method", METHODS[0]))
    rank = 0
    if method == "lowrank":
        widest = loaded.info.hidden_size
        rank = right.number_input(
            "Rank r", 1, widest, help="Adds 2·d·r + d parameters per unit.", **ui.remembered("recovery_rank", min(8, widest), (1, widest))
        )
    left, right = st.columns(2)
    fit = left.radio("Fit", FITS, format_func=FIT_LABELS.get, **ui.remembered("recovery_fit", FITS[0]))
    inputs = right.radio("Inputs x taken from", tuple(INPUT_LABELS), format_func=INPUT_LABELS.get, **ui.remembered("recovery_inputs", "pruned"))
    steps, learning_rate = 20, 1e-3
    if fit == "train":
        left, right = st.columns(2)
        most = ui.cap("steps", 10_000)
        steps = left.number_input(
            "Training steps", 1, most, help="One batch each; early stopping on held-out documents.",
            **ui.remembered("recovery_steps", min(20, most), (1, most)),
        )
        learning_rate = right.number_input(
            "Learning rate", 1e-6, 1.0, step=1e-4, format="%.0e", **ui.remembered("recovery_lr", 1e-3, (1e-6, 1.0))
        )
    return {"method": method, "rank": int(rank), "fit": fit, "inputs": inputs, "steps": int(steps), "learning_rate": float(learning_rate)}


def settings_inputs(loaded) -> dict:
    """Everything one fit and its comparison need."""
    settings = method_inputs(loaded)
    data, samples, seq_len = ui.calibration_inputs(
        loaded, "recovery", samples=api.default_calibration_documents(loaded.info.hidden_size), seq_len=128,
        data_help="Stand-ins are fitted on calibration data, never on the evaluation half that perplexity uses.",
        samples_help="Calibration documents the stand-ins are fitted on (train also holds out a quarter more for early stopping).",
    )
    warning = api.too_few_calibration_tokens(settings["method"], samples * seq_len, loaded.info.hidden_size)
    if warning:
        st.warning(warning)
    st.subheader("Compared on")
    tasks, _ = ui.task_inputs(loaded, "recovery")
    return {**settings, "data": data, "samples": samples, "seq_len": seq_len, "tasks": tasks}


def fit(loaded, plan, settings: dict) -> ui.FittedRecovery:
    """Fit stand-ins with :func:`pruneviz.api.recover` (progress bar), save them under the cache dir."""
    options = {k: settings[k] for k in ("method", "rank", "fit", "inputs", "data", "samples", "seq_len", "steps", "learning_rate")}
    with ui.cancellable("recovery_fit"), ui.ProgressBar(f"Fitting {settings['method']} stand-ins") as progress:
        recovery = ui.run_or_stop(api.recover, loaded, plan, progress=progress, **options)
    if recovery.training_failed:
        st.warning(
            f"Training never improved the held-out loss ({recovery.history[0]:.3f} nats at the start, at best "
            f"{min(recovery.history[1:]):.3f} after): the stand-ins are the closed-form start. Try a smaller learning rate."
        )
    if recovery.resumed_from:
        st.info(f"Resumed: training went on from step {recovery.resumed_from} of {settings['steps']}, saved by an earlier run that stopped.")
    name = f"{recovery.label}, {settings['inputs']} inputs, {settings['samples']}×{settings['seq_len']} {settings['data']}"
    directory = ui.saved_copy(loaded, plan, recovery) or recovery.save(
        ui.output_directory("recoveries", loaded.name, str(plan) or "none", recovery.label)
    )
    return ui.FittedRecovery(name, recovery, directory)


def compare(loaded, plan, tasks: list[tuple[str, dict]]) -> dict:
    """Evaluate the unpruned model, the plan, and every recovery fitted for it (progress bar)."""
    fitted = list(ui.fitted_recoveries(loaded, plan).values())
    with ui.cancellable("recovery_compare"), ui.ProgressBar("Evaluating every variant") as progress:
        table = ui.run_or_stop(api.compare_recoveries, loaded, plan, [f.recovery for f in fitted], tasks, progress)
    return {"table": plots.recovery_comparison(table, [f.name for f in fitted]), "plan": str(plan), "model": loaded.fingerprint}


def show_comparison(result: dict) -> None:
    """The side-by-side table (values with 95 % confidence intervals), noise warnings, and a bar chart."""
    table = result["table"]
    st.dataframe(
        plots.with_confidence_columns(table, api.STDERR_SUFFIX), hide_index=True,
        column_config={"% of removed": st.column_config.NumberColumn(help="Parameters added, as % of the parameters the plan removes.")},
    )
    for variant, column, value, without in api.recoveries_worse_than_none(table):
        st.error(
            f"{column}: **{variant}** is worse than no stand-in beyond noise ({value:.4g} against {without:.4g}, more than "
            "two combined standard errors apart). Try more calibration data (sequences × tokens), another method "
            "(a bias is the most robust), or the 'train' fit; or leave these units pruned without a stand-in."
        )
    for variant, other, column in api.recoveries_within_noise(table):
        st.warning(
            f"{column}: **{variant}** and **{other}** differ by less than two combined standard errors, "
            "within noise on this evaluation set; evaluate on more questions or windows to separate them."
        )
    columns = [c for c in table.columns if c not in ("variant", "dtype", "params added", "% of removed") and not c.endswith(api.STDERR_SUFFIX)]
    chart_metric = st.selectbox("Chart", columns, key="recovery_chart")
    ui.plotly_chart(plots.variant_bars(table, chart_metric, api.STDERR_SUFFIX), f"recovery_{chart_metric}")


def show_downloads(loaded, plan) -> None:
    """Where each fitted recovery was saved, with a zip download of it."""
    for fitted in ui.fitted_recoveries(loaded, plan).values():
        recovery = fitted.recovery
        left, right = st.columns([3, 1], vertical_alignment="center")
        left.markdown(
            f"**{fitted.name}**: {recovery.added_params:,} parameters ({recovery.added_percent:.2f} % of the "
            f"{recovery.removed_params:,} removed), fitted on {recovery.calibration} in {recovery.seconds:.1f} s. "
            f"Saved in `{fitted.directory}`."
        )
        right.download_button(
            "Download zip", data=lambda directory=fitted.directory: ui.zip_directory(directory),
            file_name=f"{fitted.directory.name}.zip", mime="application/zip", on_click="ignore",
            key=f"recovery_zip_{fitted.directory.name}",
        )


model = ui.page(
    "Recovery",
    "Recovery",
    "Replace each pruned unit's update f(x) by a cheap function of its residual-stream input x, fitted on "
    "calibration text, and compare the unpruned model, the pruned one and every recovery side by side "
    "(Siddiqui et al. 2024, §5). Fit several methods one after another: each joins the table."
)
current = ui.plan_input(model, "recovery")
if not len(current):
    st.info("The plan prunes nothing, so there is nothing to recover: type units above or build a plan on the Prune and evaluate page.")
    st.stop()
st.header("Fit a recovery")
chosen = settings_inputs(model)
# a fifth of the width cut the button label at 1,024 pixels
fit_column, forget_column = st.columns([1, 2])
if fit_column.button("Fit and compare", type="primary"):
    if not chosen["tasks"]:
        ui.stop_with_error("Choose Wikipedia perplexity, an MMLU subset or both to compare the variants on.")
    ui.remember_recovery(model, current, fit(model, current, chosen))
    st.session_state[RESULT_KEY] = compare(model, current, chosen["tasks"])
if ui.fitted_recoveries(model, current) and forget_column.button("Forget the fitted recoveries"):
    ui.forget_recoveries(model, current)
    st.session_state.pop(RESULT_KEY, None)
stored = ui.stored_result(RESULT_KEY, model)
if stored is not None and stored["plan"] == str(current):
    st.header("Comparison")
    show_comparison(stored)
    st.subheader("Fitted stand-ins")
    show_downloads(model, current)
