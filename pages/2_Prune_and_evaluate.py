"""Build a pruning plan and compare the pruned model with the unpruned baseline.

The current plan is kept in ``st.session_state`` as its canonical string; the toggles, the plan text
box and the "prune the N least important" form all write it and are redrawn from it.
"""

import math

import streamlit as st

from pruneviz import api, plots, ui
from pruneviz.core.errors import PlanError
from pruneviz.core.formatting import format_bytes
from pruneviz.core.plan import SUBLAYERS, PruningPlan
from pruneviz.data.mmlu import CATEGORIES, SUBJECT_CATEGORY, SUBJECTS
from pruneviz.evaluation.mmlu import CLOZE_BELOW_PARAMS, FORMATS, default_format
from pruneviz.influence.static import STATIC_METRICS
from pruneviz.studies.generation import MAX_NEW_TOKENS, generate_side_by_side, plan_savings

PLAN_KEY = ui.PLAN_KEY
PLAN_TEXT_KEY = "plan_text"
PLAN_ERROR_KEY = "plan_error"
EVALUATION_KEY = "evaluation"
RANKING_FORM = "ranking"
GENERATION_KEY = "generation"
DEFAULT_PROMPT = "The capital of France is"
# tokens attended to when estimating the attention FLOPs a pruned sublayer saves
FLOPS_CONTEXT = 1024
# column groups (attn, mlp, block) of the toggle grid: at 1,024 px a third group cuts the labels to "1…"
TOGGLE_GROUPS = 2
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
    # Every run redraws the widgets from the shared plan (the callbacks have already folded the user's last
    # edit into it), unless the text box holds a rejected edit: widget state Streamlit dropped while the page
    # was not drawn (another page, a model switch) would otherwise come back from the browser stale or empty
    if PLAN_ERROR_KEY not in st.session_state or any(key not in st.session_state for key in widget_keys):
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
        with st.form(RANKING_FORM):
            left, middle, right = st.columns(3)
            metric = left.selectbox(
                "Metric", list(STATIC_METRICS), format_func=ui.metric_label, help=ui.metrics_help(),
                **ui.remembered("ranking_metric", list(STATIC_METRICS)[0], form=RANKING_FORM),
            )
            scheme = ui.scheme_input("ranking_scheme", RANKING_FORM, middle, help="Which kind of unit is ranked and pruned.")
            most = 2 * loaded.n_blocks
            count = right.number_input("N units to prune", 0, most, **ui.remembered("ranking_count", 4, (0, most), RANKING_FORM))
            data, samples, seq_len = ui.calibration_inputs(loaded, "ranking", form=RANKING_FORM)
            pressed = ui.form_submit_button(RANKING_FORM, "Build plan")
    if not pressed:
        return
    with ui.cancellable("ranking"), ui.ProgressBar(f"Ranking units by {metric}") as progress:
        table = ui.run_or_stop(api.influence, loaded, data, [metric], api.unit_selection(scheme).measured_as, samples, seq_len, progress=progress)
    plan = ui.run_or_stop(api.lowest_plan, table, metric, scheme, int(count), loaded.n_blocks)
    set_plan(plan, loaded.n_blocks)
    st.success(f"Plan: the {int(count)} {api.UNIT_SELECTIONS[scheme].label} with the lowest {metric} on {table['dataset'].iloc[0]}.")


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
        st.error(ui.rejected_plan_message(st.session_state[PLAN_ERROR_KEY], plan))
    st.caption(plan_summary(plan, loaded.info))
    with st.expander("Toggle units", expanded=True):
        rows = max(8, math.ceil(n_blocks / TOGGLE_GROUPS))
        groups = math.ceil(n_blocks / rows)
        columns = st.columns(3 * groups)
        for row in range(rows):
            for group in range(groups):
                layer = group * rows + row
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
    subset = st.radio("Subset", SUBSETS, horizontal=True, **ui.remembered("mmlu_subset", SUBSETS[0]))
    if subset == SUBSETS[1]:
        return f"mmlu:{st.selectbox('Category', CATEGORIES, **ui.remembered('mmlu_category', CATEGORIES[0]))}"
    if subset == SUBSETS[2]:
        chosen = st.multiselect(
            "Subjects", SUBJECTS, **ui.remembered("mmlu_subjects", []), format_func=lambda s: f"{s} ({SUBJECT_CATEGORY[s]})"
        )
        return "mmlu:" + ",".join(chosen) if chosen else None
    return "mmlu"


def format_input(params_total: int) -> str:
    """The MMLU format picker, preselected by model size, with the reason."""
    preset = default_format(params_total)
    fmt = st.radio("Format", FORMATS, horizontal=True, **ui.remembered("mmlu_format", preset))
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
    """Draw the evaluation-set pickers (capped and limited to configured data in demo mode); return the chosen settings.

    Every choice is a remembered setting (:func:`pruneviz.ui.remembered`): it outlives a visit to another
    page or a model switch, as the plan does.
    """
    deployment = ui.current_deployment()
    wiki_column, mmlu_column = st.columns(2)
    with wiki_column:
        wiki_offered = deployment.offers_dataset("wiki")
        use_wiki = st.checkbox(
            "Wikipedia perplexity", **ui.remembered("use_wiki", wiki_offered), disabled=not wiki_offered
        ) and wiki_offered
        left, right = st.columns(2)
        most, longest = deployment.cap("samples", 512), deployment.cap("seq_len", loaded.max_length)
        windows = left.number_input(
            "Windows", 1, most, **ui.remembered("wiki_windows", min(8, most), (1, most)), disabled=not use_wiki
        )
        seq_len = right.number_input(
            "Tokens per window", 2, longest, step=32, **ui.remembered("wiki_seq_len", min(128, longest), (2, longest)),
            disabled=not use_wiki,
        )
        st.caption("Non-overlapping windows cut from the evaluation half of the embedded Wikipedia leads.")
    with mmlu_column:
        mmlu_offered = deployment.offers_dataset("mmlu")
        use_mmlu = st.checkbox(
            "MMLU", **ui.remembered("use_mmlu", False), disabled=not mmlu_offered, help="About a second per question on a CPU."
        ) and mmlu_offered
        task, fmt, shots, per_subject = None, None, 0, 1
        if use_mmlu:
            task = mmlu_task_inputs()
            fmt = format_input(loaded.info.params_total)
            left, right = st.columns(2)
            most = deployment.cap("per_subject", 2000)
            per_subject = left.number_input("Questions per subject", 1, most, **ui.remembered("mmlu_per_subject", 1, (1, most)))
            shots = right.number_input("Shots (k)", 0, 5, **ui.remembered("mmlu_shots", 0, (0, 5)))
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
        "Recovery for the pruned units", ["none", *fitted], key=ui.PRUNE_RECOVERY_KEY,
        help="Replace each pruned unit's update by the fitted stand-in (bias, low-rank adapter, ...).",
    )
    return (None, None) if name == "none" else (name, fitted[name].recovery)


def headline(result) -> str:
    """The metric a task is judged by: ``perplexity`` (text) or ``acc`` (MMLU)."""
    return "perplexity" if "perplexity" in result.metrics else "acc"


def expected_count(settings: dict, progress: ui.ProgressBar) -> int:
    """How many windows or questions the running evaluation will score, from its settings and progress total.

    MMLU progress counts scoring requests: one per question in letter format, four in cloze.
    """
    if settings["task"] == "wiki":
        return settings["windows"]
    return progress.total // (4 if settings["fmt"] == "cloze" else 1)


def live_text(which: str, result, settings: dict, progress: ui.ProgressBar) -> str:
    """One line for a provisional result: its headline metric with a 95 % CI and how much is scored so far."""
    metric = headline(result)
    scale, digits, unit = (1, 2, "") if metric == "perplexity" else (100, 1, " %")
    noun = "windows" if settings["task"] == "wiki" else "questions"
    value = with_ci(result.metrics[metric], result.stderr.get(metric, math.nan), scale, digits, unit)
    return f"**{which}, so far**: {metric} {value}; n = {result.n} of {expected_count(settings, progress)} {noun}."


def evaluate_pair(loaded, plan: PruningPlan, settings: dict, name: str, recovery=None) -> tuple:
    """Evaluate the unpruned baseline and ``plan`` (with ``recovery``) on one task, each with a progress bar.

    Where :func:`pruneviz.api.evaluate` reports provisional results, they are shown live (value ± 95 % CI,
    n of N) while the evaluation runs.
    """
    results = []
    for which, each, stand_ins in (("unpruned", PruningPlan(), None), ("pruned", plan, recovery)):
        live = st.empty()
        with ui.ProgressBar(f"{name}, {which}") as progress:
            show = lambda result, which=which, bar=progress: live.markdown(live_text(which, result, settings, bar))  # noqa: E731
            results.append(ui.run_or_stop(api.evaluate, loaded, each, recovery=stand_ins, progress=progress, partial=show, **settings))
        live.empty()
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
    with ui.cancellable("evaluate"):
        if chosen["wiki"]:
            pairs["wiki"] = evaluate_pair(loaded, plan, chosen["wiki"], "Wikipedia perplexity", fitted)
        if chosen["mmlu"]:
            pairs["mmlu"] = evaluate_pair(loaded, plan, chosen["mmlu"], "MMLU", fitted)
    return {"plan": str(plan), "model": loaded.fingerprint, "pairs": pairs, "recovery": recovery_name}


def number(x: float, digits: int = 2) -> str:
    """``x`` with ``digits`` decimals, or 3 significant digits from a million on (a perplexity of 1e45, every
    block pruned, would otherwise print 46 digits)."""
    return f"{x:.{digits}f}" if abs(x) < 1e6 else f"{x:.3g}"


def with_ci(value: float, stderr: float, scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
    """``"12.34 ± 1.10"``: the value and its 95 % CI half-width 1.96 × stderr (only where a standard error is defined).

    The metric's tooltip says it is a 95 % interval; the card has no room for the words.
    """
    text = f"{number(value * scale, digits)}{unit}"
    if math.isnan(stderr):
        return text
    return f"{text} ± {number(api.confidence_halfwidth(stderr) * scale, digits)}{unit}"


def ci_caption(stderr: float) -> str:
    """The line under a card too narrow for its interval: ``"95 % CI ± 1.10"`` (1.96 × stderr), or why there is none."""
    if math.isnan(stderr):
        return "no confidence interval from a single window"
    return f"95 % CI ± {number(api.confidence_halfwidth(stderr))}"


def noise_warning(baseline, pruned, metric: str, what: str) -> None:
    """Warn when the pruned and unpruned values of ``metric`` differ by less than two combined standard errors."""
    if not api.within_noise(baseline, pruned, metric):
        return
    judged = api.noise_metric(metric)
    se = math.hypot(baseline.stderr.get(judged, math.nan), pruned.stderr.get(judged, math.nan))
    bound = f"no standard error with fewer than 2 {what}" if math.isnan(se) else f"less than 2 combined standard errors, {2 * se:.3g}"
    difference = abs(pruned.metrics[judged] - baseline.metrics[judged])
    if difference == 0:
        noise = f"with {bound}, no noise level can be told" if math.isnan(se) else f"a difference smaller than the noise ({bound.removeprefix('less than ')}) would not show"
        st.warning(f"The {judged} of the pruned and unpruned model is the same on these {what}; {noise}. Evaluate more {what} to see one.")
        return
    st.warning(
        f"The {judged} of the pruned and unpruned model differ by {difference:.3g}: "
        f"within noise ({bound}). Evaluate more {what} before reading anything into it."
    )


def provenance(baseline, pruned) -> str:
    """Where each number came from: the result cache or a fresh computation (with its time, and what it resumed)."""
    def one(result, which):
        if result.from_cache:
            return f"{which} from cache"
        resumed = result.settings.get("resumed")
        return f"{which} computed in {result.seconds:.1f} s" + (f", resuming {resumed} of {result.n} from an earlier run" if resumed else "")
    return f"{one(baseline, 'Unpruned')}; {one(pruned, 'pruned')}."


def show_perplexity(baseline, pruned) -> None:
    """Perplexity and NLL of the pruned model against the baseline."""
    st.subheader("Wikipedia perplexity")
    change = pruned.metrics["perplexity"] - baseline.metrics["perplexity"]
    nll_change = pruned.metrics["nll"] - baseline.metrics["nll"]
    # three cards a row leave no room for "± CI" in the value: it goes on a line below
    columns = st.columns(3)
    columns[0].metric(
        "Perplexity (pruned)", number(pruned.metrics["perplexity"]),
        delta=f"{change:+.2f}", **ui.delta_style(change, lower_is_better=True),
        help="exp(mean next-token NLL) over the windows; lower is better. Below it: ± 1.96 standard errors over "
        "windows (normal-approximation 95 % confidence interval).",
    )
    columns[0].caption(ci_caption(pruned.stderr["perplexity"]))
    columns[1].metric(
        "Perplexity (unpruned)", number(baseline.metrics["perplexity"]),
        help="The same windows without pruning. Below it: ± 1.96 standard errors (95 % CI).",
    )
    columns[1].caption(ci_caption(baseline.stderr["perplexity"]))
    columns[2].metric(
        "NLL, nats/token (pruned)", f"{pruned.metrics['nll']:.3f}",
        delta=f"{nll_change:+.3f}", **ui.delta_style(nll_change, lower_is_better=True),
        help="Mean next-token negative log-likelihood −log p(token | prefix), in nats; perplexity = exp(NLL).",
    )
    settings = pruned.settings
    st.caption(
        f"n = {pruned.n} windows × {settings['seq_len']} tokens of {settings['split']} "
        f"({int(pruned.metrics['tokens'])} predicted tokens), in {settings['dtype']}. {provenance(baseline, pruned)}"
    )
    noise_warning(baseline, pruned, "perplexity", "windows")


def accuracy_metrics(result) -> list[str]:
    """The accuracy columns of an MMLU result (``acc``, and ``acc_norm`` in cloze format)."""
    return [name for name in ("acc", "acc_norm") if name in result.metrics]


def show_mmlu_metric(baseline, pruned, name: str) -> None:
    """One MMLU metric, pruned (with its change) beside unpruned, each ± its 95 % confidence half-width."""
    is_loss = name == "loss"
    scale, digits, unit = (1, 3, "") if is_loss else (100, 1, " %")
    change = pruned.metrics[name] - baseline.metrics[name]
    left, right = st.columns(2)
    formula = {
        "loss": "MMLU loss: −log softmax over the four letter logits at the gold letter, in nats (Siddiqui et al. 2024, §3.1)",
        "acc": "acc: fraction of questions whose highest-scoring answer is the gold one (lm-evaluation-harness)",
        "acc_norm": "acc_norm: acc with each answer's log-likelihood divided by its length in characters (lm-evaluation-harness)",
    }[name]
    interval = f"± 1.96 standard errors over the n = {pruned.n} questions (normal-approximation 95 % CI)"
    left.metric(
        f"{name} (pruned)", with_ci(pruned.metrics[name], pruned.stderr[name], scale, digits, unit),
        delta=f"{change:+.3f}" if is_loss else f"{100 * change:+.1f} pp",
        **ui.delta_style(change, lower_is_better=is_loss),
        help=f"{formula}. {interval}." + ("" if is_loss else " Chance is 25 %."),
    )
    right.metric(
        f"{name} (unpruned)", with_ci(baseline.metrics[name], baseline.stderr[name], scale, digits, unit),
        help=f"{formula}. {interval}.",
    )


def show_mmlu(baseline, pruned) -> None:
    """MMLU accuracy (± standard error) against the baseline, per category and per subject."""
    settings = pruned.settings
    questions = f"{pruned.n} question" + ("s" if pruned.n != 1 else "")
    st.subheader(f"MMLU ({settings['format']} format, {settings['shots']}-shot, {questions}, {settings['dtype']})")
    names = accuracy_metrics(pruned)
    for name in [*names, *(["loss"] if "loss" in pruned.metrics else [])]:
        show_mmlu_metric(baseline, pruned, name)
    notes = [provenance(baseline, pruned)] + ([settings["note"].capitalize() + "."] if settings.get("note") else [])
    st.caption(" ".join(notes))
    noise_warning(baseline, pruned, "acc", "questions")
    metric = st.radio("Per-category chart", names, horizontal=True, key="mmlu_chart_metric")
    ui.plotly_chart(plots.mmlu_category_bars([baseline, pruned], metric), f"mmlu_{metric}_per_category")
    table = plots.comparison_table(baseline.per_subject, pruned.per_subject, "subject", names, confidence=True)
    intervals = [c for c in table.columns if c.startswith("± ")]
    note = "± is the half-width of the pruned accuracy's 95 % CI, 1.96 × sqrt(p (1 − p) / (n − 1))."
    if intervals and table[intervals].isna().all().all():
        # one question per subject: an interval needs two, and a column of blanks says nothing
        table = table.drop(columns=intervals)
        note = "no confidence interval with one question per subject (it needs n ≥ 2)."
    percent = {c: st.column_config.NumberColumn(format="percent") for c in table.columns if c not in ("subject", "category", "n")}
    percent["n"] = st.column_config.NumberColumn(help="Questions scored in this subject.")
    st.dataframe(table, hide_index=True, column_config=percent)
    st.caption(f"Per subject: n questions; {note}")


def measured_speed(loaded, plan: PruningPlan) -> dict | None:
    """Tokens/s of the last side-by-side generation with this model and plan (None if there was none)."""
    stored = ui.stored_result(GENERATION_KEY, loaded)
    if stored is None or stored["plan"] != str(plan):
        return None
    return {name: g.tokens_per_second for name, g in stored["results"].items()}


def show_savings(loaded, plan: PruningPlan) -> None:
    """What the plan saves: parameters, KV-cache bytes and FLOPs per token, and the measured tokens/s.

    Each card holds a short label and value (exact counts in its tooltip) with the unit or the share of
    the model in grey below: a card cuts longer text off.
    """
    savings = plan_savings(loaded.info, plan, FLOPS_CONTEXT, loaded.dtype.itemsize)
    columns = st.columns(4)
    columns[0].metric(
        "Params removed", ui.short_count(savings.params_removed),
        delta=f"{savings.params_removed_percent:.1f} % of the model", delta_color="off", delta_arrow="off",
        help=f"{savings.params_removed:,} parameters: the sum over the pruned sublayers, each with its pre-norm: "
        "attn = q, k, v, o projections; mlp = gate, up, down projections (counted from the loaded weights).",
    )
    columns[1].metric(
        "KV cache saved", format_bytes(savings.kv_bytes_per_token), delta="per token", delta_color="off", delta_arrow="off",
        help=f"{savings.kv_bytes_per_token:,} bytes per token. Per pruned attention sublayer: 2 (K and V) × KV heads × "
        f"head dim × {loaded.dtype.itemsize} bytes ({loaded.dtype_name}, the loaded dtype) no "
        "longer stored for each token of the context.",
    )
    columns[2].metric(
        "FLOPs saved", ui.short_count(savings.flops_per_token),
        delta=f"per token ({savings.flops_percent:.1f} %)", delta_color="off", delta_arrow="off",
        help=f"{savings.flops_per_token:,} FLOPs per token, {savings.flops_percent:.1f} % of the full model's. Estimate: "
        "2 FLOPs per weight of each pruned sublayer (one multiply-add) plus, per pruned attention sublayer, 4 × heads × "
        f"head dim × context for QKᵀ and AV, at a context of {FLOPS_CONTEXT} tokens (Kaplan et al. 2020, §2.1).",
    )
    speed = measured_speed(loaded, plan)
    if speed is None:
        columns[3].caption("Tokens/s: generate text with this plan above to measure the pruned model's speed.")
        return
    change = speed["pruned"] - speed["unpruned"]
    columns[3].metric(
        "Tokens/s (pruned)", f"{speed['pruned']:.1f}", delta=f"{change:+.1f} vs unpruned",
        **ui.delta_style(change, lower_is_better=False),
        help="Generated tokens / wall seconds of the greedy generation above (no KV cache, this machine); "
        "one short run, so expect a few % of timing noise.",
    )


def show_results(evaluation: dict, plan: PruningPlan, loaded) -> None:
    """Every evaluated task, pruned against unpruned, with what the plan saves and a JSON download."""
    st.header("Results")
    if evaluation["plan"] != str(plan):
        st.warning(f"These results are for the plan '{evaluation['plan'] or 'nothing pruned'}'; press Run to evaluate the current plan.")
    elif not evaluation["plan"]:
        st.info("The plan is empty, so the 'pruned' model is the unpruned baseline.")
    if evaluation["recovery"]:
        st.info(f"'Pruned' is the plan with the recovery {evaluation['recovery']} applied.")
    show_savings(loaded, PruningPlan.parse(evaluation["plan"]))
    if "wiki" in evaluation["pairs"]:
        show_perplexity(*evaluation["pairs"]["wiki"])
    if "mmlu" in evaluation["pairs"]:
        show_mmlu(*evaluation["pairs"]["mmlu"])
    st.download_button(
        "Download JSON", api.comparison_json(evaluation["plan"], evaluation["recovery"], evaluation["pairs"]),
        file_name="evaluation.json", mime="application/json",
        help="Every result as `pruneviz evaluate --json` writes it (task, n, metrics, stderr, per subject and category, plan).",
    )


def generation_section(loaded, plan: PruningPlan, recovery: tuple) -> None:
    """One prompt, greedy continuations of the unpruned, pruned and (if chosen) recovered model side by side."""
    st.header("Generate side by side")
    prompt = st.text_area("Prompt", DEFAULT_PROMPT, key="generate_prompt", max_chars=2000, height=80)
    most = ui.cap("new_tokens", MAX_NEW_TOKENS)
    count = st.number_input("New tokens", 1, most, min(24, most), key="generate_tokens", help="Greedy decoding stops early at the end-of-sequence token.")
    recovery_name, fitted = recovery
    if st.button("Generate"):
        stand_ins = fitted.stand_ins if fitted else None
        with st.spinner("Generating with each model ..."):
            results = ui.run_or_stop(generate_side_by_side, loaded, prompt, plan, stand_ins, int(count))
        st.session_state[GENERATION_KEY] = {
            "model": loaded.fingerprint, "plan": str(plan), "recovery": recovery_name, "prompt": prompt, "results": results,
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
        column.caption(f"{generation.new_tokens} tokens at {generation.tokens_per_second:.1f} tokens/s (measured, no KV cache).")


model = ui.page(
    "Prune and evaluate",
    "Prune and evaluate",
    "Choose units to prune: a pruned sublayer adds nothing to the residual stream. Then compare the pruned "
    "model with the unpruned baseline; every evaluation is cached, so repeating one is instant."
)
ranking_form(model)
current = plan_editor(model)
recovery_choice = recovery_input(model, current)
generation_section(model, current, recovery_choice)
st.header("Evaluation set")
tasks = evaluation_inputs(model)
if st.button("Run", type="primary"):
    st.session_state[EVALUATION_KEY] = run_evaluations(model, current, tasks, recovery_choice)
stored = ui.stored_result(EVALUATION_KEY, model)
if stored is not None:
    show_results(stored, current, model)
