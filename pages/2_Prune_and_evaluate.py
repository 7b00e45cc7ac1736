"""Build a pruning plan and compare the pruned model with the unpruned baseline.

The current plan is kept in ``st.session_state`` as its canonical string; the toggles, the plan text
box and the "prune the N least important" form all write it and are redrawn from it.
"""

import math

import streamlit as st

from pruneviz import api, plots, ui
from pruneviz.data.mmlu import CATEGORIES, SUBJECT_CATEGORY, SUBJECTS
from pruneviz.errors import PlanError
from pruneviz.evaluation.mmlu import CLOZE_BELOW_PARAMS, FORMATS, default_format
from pruneviz.plan import SUBLAYERS, PruningPlan
from pruneviz.static_metrics import STATIC_METRICS

PLAN_KEY = ui.PLAN_KEY
PLAN_TEXT_KEY = "plan_text"
PLAN_ERROR_KEY = "plan_error"
EVALUATION_KEY = "evaluation"
GROUP_ROWS = 10  # blocks per column group of the toggle grid
SCHEMES = ui.SCHEME_LABELS
SUBSETS = ("all subjects", "one category", "chosen subjects")


def toggle_key(layer: int, kind: str) -> str:
    """Session-state key of the toggle for unit ``layer`` / ``kind`` (``attn``, ``mlp`` or ``block``)."""
    return f"toggle_{layer}_{kind}"


def set_plan(plan: PruningPlan, n_blocks: int) -> None:
    """Make ``plan`` current and redraw the text box and toggles from it (before they are drawn)."""
    text = str(plan)
    st.session_state[PLAN_KEY] = text
    st.session_state[PLAN_TEXT_KEY] = text
    st.session_state.pop(PLAN_ERROR_KEY, None)
    for layer in range(n_blocks):
        pruned = {name: (layer, name) in plan for name in SUBLAYERS}
        for name in SUBLAYERS:
            st.session_state[toggle_key(layer, name)] = pruned[name]
        st.session_state[toggle_key(layer, "block")] = all(pruned.values())


def current_plan(n_blocks: int) -> PruningPlan:
    """The plan in session state, validated for this model (reset, with a warning, if it does not fit)."""
    text = st.session_state.get(PLAN_KEY, "")
    try:
        plan = PruningPlan.parse(text, n_blocks)
    except PlanError as error:
        st.warning(f"The previous plan does not fit this model and was cleared: {error}")
        plan = PruningPlan()
        set_plan(plan, n_blocks)
    widget_keys = [PLAN_TEXT_KEY] + [toggle_key(i, k) for i in range(n_blocks) for k in (*SUBLAYERS, "block")]
    # Streamlit forgets widget state while another page runs; redraw the widgets from the plan
    if any(key not in st.session_state for key in widget_keys):
        set_plan(plan, n_blocks)
    return plan


def on_toggle(layer: int, kind: str, n_blocks: int) -> None:
    """Callback of one toggle: prune or restore that unit (a block toggle sets both sublayers)."""
    pairs = set(PruningPlan.parse(st.session_state[PLAN_KEY]).pruned)
    names = SUBLAYERS if kind == "block" else (kind,)
    change = pairs.add if st.session_state[toggle_key(layer, kind)] else pairs.discard
    for name in names:
        change((layer, name))
    set_plan(PruningPlan(frozenset(pairs)), n_blocks)


def on_plan_text(n_blocks: int) -> None:
    """Callback of the plan text box: adopt a valid plan, or keep the text and remember the error."""
    try:
        plan = PruningPlan.parse(st.session_state[PLAN_TEXT_KEY], n_blocks)
    except PlanError as error:
        st.session_state[PLAN_ERROR_KEY] = str(error)
        return
    set_plan(plan, n_blocks)


def ranking_form(loaded) -> None:
    """'Prune the N least important units by metric X': builds a plan from static influences."""
    with st.expander("Prune the N least important units by a metric", expanded=False):
        with st.form("ranking"):
            left, middle, right = st.columns(3)
            metric = left.selectbox("Metric", list(STATIC_METRICS), format_func=ui.metric_label, help=ui.metrics_help())
            scheme = middle.selectbox("Scheme", list(SCHEMES), format_func=SCHEMES.get, help="Which kind of unit is ranked and pruned.")
            count = right.number_input("N units to prune", 0, 2 * loaded.n_blocks, 4)
            data, samples, seq_len = ui.calibration_inputs(loaded, "ranking")
            pressed = st.form_submit_button("Build plan")
    if not pressed:
        return
    granularity = "block" if scheme == "block" else "sublayer"
    with ui.ProgressBar(f"Ranking units by {metric}") as progress:
        table = ui.run_or_stop(api.influence, loaded, data, [metric], granularity, samples, seq_len, progress=progress)
    plan = ui.run_or_stop(api.lowest_plan, table, metric, scheme, int(count), loaded.n_blocks)
    set_plan(plan, loaded.n_blocks)
    st.success(f"Plan: the {int(count)} {SCHEMES[scheme]} with the lowest {metric} on {table['dataset'].iloc[0]}.")


def plan_summary(plan: PruningPlan, info) -> str:
    """How many sublayers the plan removes and what share of the parameters that is."""
    attn = sum(1 for _, name in plan.pruned if name == "attn")
    mlp = len(plan) - attn
    removed = attn * info.params_attn + mlp * info.params_mlp
    return (
        f"{attn} attn and {mlp} mlp sublayers pruned: {removed / 1e6:,.2f}M parameters "
        f"({removed / info.params_total:.1%} of the model)."
    )


def plan_editor(loaded) -> PruningPlan:
    """The plan as editable text plus a grid of toggles (per block: attn, mlp, whole block)."""
    n_blocks = loaded.n_blocks
    plan = current_plan(n_blocks)
    st.text_input(
        "Pruning plan", key=PLAN_TEXT_KEY, on_change=on_plan_text, args=(n_blocks,),
        placeholder="nothing pruned; e.g. 3.attn,7,12.mlp",
        help=f"Comma-separated units: a block index (0-{n_blocks - 1}) for the whole block, or '<i>.attn' / '<i>.mlp'. Press Enter to apply.",
    )
    if PLAN_ERROR_KEY in st.session_state:
        st.error(st.session_state[PLAN_ERROR_KEY])
    st.caption(plan_summary(plan, loaded.info))
    with st.expander("Toggle units", expanded=True):
        groups = math.ceil(n_blocks / GROUP_ROWS)
        columns = st.columns(3 * groups)
        for row in range(GROUP_ROWS):
            for group in range(groups):
                layer = group * GROUP_ROWS + row
                if layer >= n_blocks:
                    continue
                for offset, kind in enumerate((*SUBLAYERS, "block")):
                    columns[3 * group + offset].checkbox(
                        f"{layer}.{kind}" if kind != "block" else f"block {layer}",
                        key=toggle_key(layer, kind), on_change=on_toggle, args=(layer, kind, n_blocks),
                    )
    return plan


def mmlu_task_inputs() -> str | None:
    """Draw the MMLU subset picker; return the task (``mmlu``, ``mmlu:<category>``, ``mmlu:<s1>,<s2>``) or None."""
    subset = st.radio("Subset", SUBSETS, horizontal=True, key="mmlu_subset")
    if subset == SUBSETS[1]:
        return f"mmlu:{st.selectbox('Category', CATEGORIES, key='mmlu_category')}"
    if subset == SUBSETS[2]:
        chosen = st.multiselect(
            "Subjects", SUBJECTS, key="mmlu_subjects", format_func=lambda s: f"{s} ({SUBJECT_CATEGORY[s]})"
        )
        return "mmlu:" + ",".join(chosen) if chosen else None
    return "mmlu"


def format_input(params_total: int) -> str:
    """The MMLU format picker, preselected by model size, with the reason."""
    preset = default_format(params_total)
    fmt = st.radio("Format", FORMATS, index=FORMATS.index(preset), horizontal=True, key="mmlu_format")
    size = f"{params_total / 1e6:,.0f}M"
    if preset == "cloze":
        why = (
            f"Cloze is preselected because this model has {size} parameters: models under "
            f"{CLOZE_BELOW_PARAMS / 1e9:.0f}B parameters sit at chance (25 %) in letter format, while scoring "
            "each answer text's likelihood (acc, and length-normalised acc_norm) gives a usable signal."
        )
    else:
        why = f"Letter format (the lm-eval-harness MMLU prompt, scored on ' A'..' D') is preselected for {size} parameters."
    st.caption(why)
    return fmt


def evaluation_inputs(loaded) -> dict:
    """Draw the evaluation-set pickers; return the settings of the chosen tasks."""
    wiki_column, mmlu_column = st.columns(2)
    with wiki_column:
        use_wiki = st.checkbox("Wikipedia perplexity", value=True, key="use_wiki")
        left, right = st.columns(2)
        windows = left.number_input("Windows", 1, 512, 8, key="wiki_windows", disabled=not use_wiki)
        seq_len = right.number_input(
            "Tokens per window", 2, loaded.max_length, 128, step=32, key="wiki_seq_len", disabled=not use_wiki
        )
        st.caption("Non-overlapping windows cut from the evaluation half of the embedded Wikipedia leads.")
    with mmlu_column:
        use_mmlu = st.checkbox("MMLU", value=False, key="use_mmlu", help="About a second per question on a CPU.")
        task, fmt, shots, per_subject = None, None, 0, 1
        if use_mmlu:
            task = mmlu_task_inputs()
            fmt = format_input(loaded.info.params_total)
            left, right = st.columns(2)
            per_subject = left.number_input("Questions per subject", 1, 2000, 1, key="mmlu_per_subject")
            shots = right.number_input("Shots (k)", 0, 5, 0, key="mmlu_shots")
            st.caption("k-shot: the first k questions of each subject are held out as exemplars and are not scored.")
    return {
        "wiki": {"task": "wiki", "windows": int(windows), "seq_len": int(seq_len)} if use_wiki else None,
        "mmlu": {"task": task, "fmt": fmt, "shots": int(shots), "per_subject": int(per_subject)} if use_mmlu else None,
        "mmlu_missing": use_mmlu and task is None,
    }


def recovery_input(loaded, plan: PruningPlan):
    """The recovery toggle: stand-ins fitted for this plan on the Recovery page, or none."""
    fitted = ui.fitted_recoveries(loaded, plan)
    if not fitted:
        st.caption("Recovery: none fitted for this plan yet; fit stand-ins on the Recovery page to apply them here.")
        return None, None
    name = st.selectbox(
        "Recovery for the pruned units", ["none", *fitted], key="prune_recovery",
        help="Replace each pruned unit's update by the fitted stand-in (bias, low-rank adapter, ...).",
    )
    return (None, None) if name == "none" else (name, fitted[name].recovery)


def evaluate_pair(loaded, plan: PruningPlan, settings: dict, name: str, recovery=None) -> tuple:
    """Evaluate the unpruned baseline and ``plan`` (with ``recovery``) on one task, each with a progress bar."""
    results = []
    for which, each, stand_ins in (("unpruned", PruningPlan(), None), ("pruned", plan, recovery)):
        with ui.ProgressBar(f"{name}, {which}") as progress:
            results.append(ui.run_or_stop(api.evaluate, loaded, each, recovery=stand_ins, progress=progress, **settings))
    return tuple(results)


def run_evaluations(loaded, plan: PruningPlan, chosen: dict, recovery: tuple) -> dict:
    """Evaluate every chosen task; return what the results section shows."""
    if chosen["mmlu_missing"]:
        st.error("Choose at least one MMLU subject, or another subset.")
        st.stop()
    if not chosen["wiki"] and not chosen["mmlu"]:
        st.error("Choose Wikipedia perplexity, MMLU or both.")
        st.stop()
    recovery_name, fitted = recovery
    pairs = {}
    if chosen["wiki"]:
        pairs["wiki"] = evaluate_pair(loaded, plan, chosen["wiki"], "Wikipedia perplexity", fitted)
    if chosen["mmlu"]:
        pairs["mmlu"] = evaluate_pair(loaded, plan, chosen["mmlu"], "MMLU", fitted)
    return {"plan": str(plan), "model": loaded.fingerprint, "pairs": pairs, "recovery": recovery_name}


def with_stderr(value: float, stderr: float, scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
    """``"12.34 ± 0.56"`` (the ± part only where a standard error is defined)."""
    text = f"{value * scale:.{digits}f}{unit}"
    return text if math.isnan(stderr) else f"{text} ± {stderr * scale:.{digits}f}{unit}"


def provenance(baseline, pruned) -> str:
    """Where each number came from: the result cache or a fresh computation (with its time)."""
    def one(result, which):
        return f"{which} from cache" if result.from_cache else f"{which} computed in {result.seconds:.1f} s"
    return f"{one(baseline, 'Unpruned')}; {one(pruned, 'pruned')}."


def delta_colour(change: float, lower_is_better: bool) -> str:
    """Streamlit's delta colour: red for a change for the worse, grey for none.

    A text delta such as "+0.0 pp" would otherwise count as an improvement.
    """
    if change == 0:
        return "off"
    return "inverse" if lower_is_better else "normal"


def show_perplexity(baseline, pruned) -> None:
    """Perplexity and NLL of the pruned model against the baseline."""
    st.subheader("Wikipedia perplexity")
    change = pruned.metrics["perplexity"] - baseline.metrics["perplexity"]
    nll_change = pruned.metrics["nll"] - baseline.metrics["nll"]
    columns = st.columns(3)
    columns[0].metric(
        "Perplexity (pruned)", with_stderr(pruned.metrics["perplexity"], pruned.stderr["perplexity"]),
        delta=f"{change:+.2f}", delta_color=delta_colour(change, lower_is_better=True),
        help="exp(mean next-token NLL); lower is better. ± one standard error over windows.",
    )
    columns[1].metric("Perplexity (unpruned)", with_stderr(baseline.metrics["perplexity"], baseline.stderr["perplexity"]))
    columns[2].metric(
        "NLL, nats/token (pruned)", f"{pruned.metrics['nll']:.3f}",
        delta=f"{nll_change:+.3f}", delta_color=delta_colour(nll_change, lower_is_better=True),
    )
    settings = pruned.settings
    st.caption(
        f"{settings['windows']} windows × {settings['seq_len']} tokens of {settings['split']} "
        f"({int(pruned.metrics['tokens'])} predicted tokens). {provenance(baseline, pruned)}"
    )


def accuracy_metrics(result) -> list[str]:
    """The accuracy columns of an MMLU result (``acc``, and ``acc_norm`` in cloze format)."""
    return [name for name in ("acc", "acc_norm") if name in result.metrics]


def show_mmlu_metric(baseline, pruned, name: str) -> None:
    """One MMLU metric, pruned (with its change) beside unpruned, ± one standard error."""
    is_loss = name == "loss"
    scale, digits, unit = (1, 3, "") if is_loss else (100, 1, " %")
    change = pruned.metrics[name] - baseline.metrics[name]
    left, right = st.columns(2)
    left.metric(
        f"{name} (pruned)", with_stderr(pruned.metrics[name], pruned.stderr[name], scale, digits, unit),
        delta=f"{change:+.3f}" if is_loss else f"{100 * change:+.1f} pp",
        delta_color=delta_colour(change, lower_is_better=is_loss),
        help="MMLU loss: cross-entropy of the gold letter over the four letter logits (nats)." if is_loss
        else "± one standard error over questions; chance is 25 %.",
    )
    right.metric(f"{name} (unpruned)", with_stderr(baseline.metrics[name], baseline.stderr[name], scale, digits, unit))


def show_mmlu(baseline, pruned) -> None:
    """MMLU accuracy (± standard error) against the baseline, per category and per subject."""
    settings = pruned.settings
    questions = f"{pruned.n} question" + ("s" if pruned.n != 1 else "")
    st.subheader(f"MMLU ({settings['format']} format, {settings['shots']}-shot, {questions})")
    names = accuracy_metrics(pruned)
    for name in [*names, *(["loss"] if "loss" in pruned.metrics else [])]:
        show_mmlu_metric(baseline, pruned, name)
    notes = [provenance(baseline, pruned)] + ([settings["note"].capitalize() + "."] if settings.get("note") else [])
    st.caption(" ".join(notes))
    metric = st.radio("Per-category chart", names, horizontal=True, key="mmlu_chart_metric")
    st.plotly_chart(plots.mmlu_category_bars([baseline, pruned], metric))
    table = plots.comparison_table(baseline.per_subject, pruned.per_subject, "subject", names)
    percent = {c: st.column_config.NumberColumn(format="percent") for c in table.columns if c not in ("subject", "category", "n")}
    st.dataframe(table, hide_index=True, column_config=percent)


def show_results(evaluation: dict, plan: PruningPlan) -> None:
    """Every evaluated task, pruned against unpruned."""
    st.header("Results")
    if evaluation["plan"] != str(plan):
        st.warning(f"These results are for the plan '{evaluation['plan'] or 'nothing pruned'}'; press Run to evaluate the current plan.")
    elif not evaluation["plan"]:
        st.info("The plan is empty, so the 'pruned' model is the unpruned baseline.")
    if evaluation["recovery"]:
        st.info(f"'Pruned' is the plan with the recovery {evaluation['recovery']} applied.")
    if "wiki" in evaluation["pairs"]:
        show_perplexity(*evaluation["pairs"]["wiki"])
    if "mmlu" in evaluation["pairs"]:
        show_mmlu(*evaluation["pairs"]["mmlu"])


st.set_page_config(page_title="Prune and evaluate · pruneviz", page_icon="✂️", layout="wide")
model = ui.sidebar()
st.title("Prune and evaluate")
st.markdown(
    "Choose units to prune: a pruned sublayer adds nothing to the residual stream. Then compare the pruned "
    "model with the unpruned baseline; every evaluation is cached, so repeating one is instant."
)
ranking_form(model)
current = plan_editor(model)
st.header("Evaluation set")
tasks = evaluation_inputs(model)
recovery_choice = recovery_input(model, current)
if st.button("Run", type="primary"):
    st.session_state[EVALUATION_KEY] = run_evaluations(model, current, tasks, recovery_choice)
stored = st.session_state.get(EVALUATION_KEY)
if stored is not None and stored["model"] == model.fingerprint:
    show_results(stored, current)
