"""Build a pruning plan and compare the pruned model with the unpruned baseline.

The plan is the session's one plan (:mod:`pruneviz.ui.plan_editor`); the toggles, the plan text box and
the "prune the N least important" form all write it and are redrawn from it.
"""

import streamlit as st

from pruneviz import api, ui
from pruneviz.core.plan import PruningPlan
from pruneviz.influence.static import STATIC_METRICS
from pruneviz.studies.generation import MAX_NEW_TOKENS, generate_side_by_side

EVALUATION_KEY = "evaluation"
RANKING_FORM = "ranking"
GENERATION_KEY = "generation"
DEFAULT_PROMPT = "The capital of France is"


def ranking_form(loaded) -> None:
    """'Prune the N least important units by metric X': a static metric computed here, or any metric of the
    Influence page's last table (Shapley values included), without computing it again."""
    computed = ui.stored_result(ui.INFLUENCE_RESULT_KEY, loaded)
    table = computed["table"] if computed else None
    from_influence = list(dict.fromkeys(table["metric"])) if table is not None else []
    options = [*from_influence, *(m for m in STATIC_METRICS if m not in from_influence)]
    if st.session_state.get("ranking_metric") not in options:  # chosen from an influence table since replaced
        st.session_state.pop("ranking_metric", None)
    with st.expander("Prune the N least important units by a metric", expanded=False):
        with st.form(RANKING_FORM):
            left, middle, right = st.columns(3)
            metric = left.selectbox(
                "Metric", options, help=ui.metrics_help(adaptive=bool(from_influence)),
                format_func=lambda m: ui.metric_label(m) + (" (Influence page)" if m in from_influence else ""),
                **ui.remembered("ranking_metric", options[0], form=RANKING_FORM),
            )
            scheme = ui.scheme_input("ranking_scheme", RANKING_FORM, middle, help="Which kind of unit is ranked and pruned.")
            most = 2 * loaded.n_blocks
            count = right.number_input("N units to prune", 0, most, **ui.remembered("ranking_count", 4, (0, most), RANKING_FORM))
            data, samples, seq_len = ui.calibration_inputs(loaded, "ranking", form=RANKING_FORM)
            pressed = ui.form_submit_button(RANKING_FORM, "Build plan")
    if not pressed:
        return
    if metric not in from_influence:
        measured_as = api.unit_selection(scheme).measured_as
        with ui.cancellable("ranking"), ui.ProgressBar(f"Ranking units by {metric}") as progress:
            table = ui.run_or_stop(api.influence, loaded, data, [metric], measured_as, samples, seq_len, progress=progress)
    plan = ui.run_or_stop(api.lowest_plan, table, metric, scheme, int(count), loaded.n_blocks)
    replaced = st.session_state.get(ui.PLAN_KEY, "") or "nothing pruned"
    ui.adopt_plan(plan)
    source = table[table["metric"] == metric]["dataset"].iloc[0]
    st.success(
        f"Plan: the {int(count)} {api.UNIT_SELECTIONS[scheme].label} with the lowest {metric} on {source}"
        + (" (from the Influence page)" if metric in from_influence else "") + f"; it replaced '{replaced}'."
    )


def measured_speed(loaded, plan: PruningPlan) -> dict | None:
    """Tokens/s of the last side-by-side generation with this model and plan (None if there was none)."""
    stored = ui.stored_result(GENERATION_KEY, loaded)
    if stored is None or stored["plan"] != str(plan):
        return None
    return {name: g.tokens_per_second for name, g in stored["results"].items()}


def generation_section(loaded, plan: PruningPlan, recovery) -> None:
    """One prompt, greedy continuations of the unpruned, pruned and (if chosen) recovered model side by side."""
    st.header("Generate side by side")
    prompt = st.text_area("Prompt", DEFAULT_PROMPT, key="generate_prompt", max_chars=2000, height=80)
    most = ui.cap("new_tokens", MAX_NEW_TOKENS)
    count = st.number_input("New tokens", 1, most, min(24, most), key="generate_tokens", help="Greedy decoding stops early at the end-of-sequence token.")
    if st.button("Generate"):
        stand_ins = recovery.recovery.stand_ins if recovery else None
        with st.spinner("Generating with each model ..."):
            results = ui.run_or_stop(generate_side_by_side, loaded, prompt, plan, stand_ins, int(count))
        st.session_state[GENERATION_KEY] = {
            "model": loaded.fingerprint, "plan": str(plan), "recovery": recovery.name if recovery else None, "prompt": prompt, "results": results,
        }
    stored = ui.stored_result(GENERATION_KEY, loaded)
    if stored is None:
        return
    if stored["plan"] != str(plan):
        st.warning(f"This text is from the plan '{stored['plan'] or 'nothing pruned'}'; press Generate for the current plan.")
    columns = st.columns(len(stored["results"]))
    titles = {"unpruned": "Unpruned", "pruned": "Pruned", "recovered": f"Recovered ({stored['recovery']})"}
    for column, (name, generation) in zip(columns, stored["results"].items()):
        column.subheader(titles[name])
        column.text(stored["prompt"] + generation.text)
        column.caption(f"{generation.new_tokens} tokens at {generation.tokens_per_second:.1f} tokens/s (measured, with a KV cache).")


model = ui.page(
    "Prune and evaluate",
    "Prune and evaluate",
    "Switch blocks or sublayers off: a pruned sublayer adds nothing to the residual stream. Each change is evaluated "
    "at once against the unpruned model (computed in the background since the model loaded), task by task; the "
    "numbers refine as more questions are scored, and every one carries its n and 95 % CI."
)
ranking_form(model)
strip = st.container(border=True, key="live_results")  # the browser test finds it by this key
current = ui.plan_input(model, "prune", toggles=True)
recovery_choice = ui.recovery_input(
    model, current, ui.PRUNE_RECOVERY_KEY,
    help="Replace each pruned unit's update by the fitted stand-in (bias, low-rank adapter, ...).",
)
with st.expander("Evaluation set", expanded=False):
    tasks = ui.evaluation_inputs(model)
now = ui.evaluate_now(ui.signature(model, current, tasks, recovery_choice))
header, details = st.container(), st.container()
generation_section(model, current, recovery_choice)
if now:
    with header:
        ui.show_results_header({"plan": str(current), "recovery": recovery_choice.name if recovery_choice else None}, current, model,
                               measured_speed(model, current))
    st.session_state[EVALUATION_KEY] = ui.run_evaluations(model, current, tasks, recovery_choice, strip, details)
elif (stored := ui.stored_result(EVALUATION_KEY, model)) is not None:
    with header:
        ui.show_results_header(stored, current, model, measured_speed(model, PruningPlan.parse(stored["plan"])))
    ui.show_stored(stored, strip, details)
else:
    strip.caption("Automatic evaluation is off: press Run to evaluate the plan.")
