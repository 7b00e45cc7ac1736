"""The prune page's results: each task (perplexity, MMLU, generative tasks) pruned against unpruned (value ± 95 % CI,
change, noise verdict), and plan cost."""

from __future__ import annotations

import streamlit as st

from .. import api, plots
from ..core.formatting import format_bytes, format_number
from ..core.plan import PruningPlan
from .cards import delta_style, short_count
from .sidebar import plotly_chart


def noise_warning(baseline, pruned, metric: str, what: str) -> None:
    """Warn when the pruned and unpruned values of ``metric`` are within noise (:func:`pruneviz.api.noise_verdict`:
    paired standard errors where both scored the same items)."""
    verdict = api.noise_verdict(baseline, pruned, metric, what)
    if verdict:
        st.warning(verdict)


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
    beyond = not api.within_noise(baseline, pruned, "perplexity")  # coloured better or worse only beyond noise
    # three cards a row leave no room for "± CI" in the value: it goes on a line below
    columns = st.columns(3)
    columns[0].metric(
        "Perplexity (pruned)", format_number(pruned.metrics["perplexity"]),
        delta=f"{change:+.2f}", **delta_style(change, lower_is_better=True, beyond_noise=beyond),
        help="exp(mean next-token NLL) over the windows; lower is better. Below it: ± 1.96 standard errors over "
        "windows (normal-approximation 95 % confidence interval).",
    )
    columns[0].caption(api.ci_caption(pruned.stderr["perplexity"]))
    columns[1].metric(
        "Perplexity (unpruned)", format_number(baseline.metrics["perplexity"]),
        help="The same windows without pruning. Below it: ± 1.96 standard errors (95 % CI).",
    )
    columns[1].caption(api.ci_caption(baseline.stderr["perplexity"]))
    columns[2].metric(
        "NLL, nats/token (pruned)", f"{pruned.metrics['nll']:.3f}",
        delta=f"{nll_change:+.3f}", **delta_style(nll_change, lower_is_better=True, beyond_noise=beyond),
        help="Mean next-token negative log-likelihood −log p(token | prefix), in nats; perplexity = exp(NLL).",
    )
    settings = pruned.settings
    if "kl" in pruned.metrics:
        st.caption(
            f"KL(unpruned ‖ pruned) of the next-token distribution over the whole vocabulary: "
            f"{api.with_ci(pruned.metrics['kl'], pruned.stderr['kl'], 1, 4)} nats per token (± 95 % CI over windows; "
            "Dutta et al. 2024): how far the pruned model's predictions moved, whether or not the loss moved."
        )
    st.caption(
        f"n = {pruned.n} windows × {settings['seq_len']} tokens of {settings['split']} "
        f"({int(pruned.metrics['tokens'])} predicted tokens), in {settings['dtype']}. {provenance(baseline, pruned)}"
    )
    noise_warning(baseline, pruned, "perplexity", "windows")


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
    interval = (f"± 1.96 standard errors over the n = {pruned.n} questions (normal-approximation 95 % CI; Wilson's interval, "
                "written as a range, where that one would reach past 0 or 100 %)")
    left.metric(
        f"{name} (pruned)", api.with_ci(pruned.metrics[name], pruned.stderr[name], scale, digits, unit, None if is_loss else pruned.n),
        delta=f"{change:+.3f}" if is_loss else f"{100 * change:+.1f} pp",
        **delta_style(change, lower_is_better=is_loss, beyond_noise=not api.within_noise(baseline, pruned, name)),
        help=f"{formula}. {interval}." + ("" if is_loss else " Chance is 25 %."),
    )
    right.metric(
        f"{name} (unpruned)", api.with_ci(baseline.metrics[name], baseline.stderr[name], scale, digits, unit, None if is_loss else baseline.n),
        help=f"{formula}. {interval}.",
    )


def answer_changes_text(pruned, noun: str = "questions") -> str:
    """One line on what changed in the answers (:func:`pruneviz.evaluation.statistics.answer_changes`), each ± 95 % CI;
    ``noun`` names the items (``questions``, ``items``)."""
    def share(name: str) -> str:
        return api.with_ci(pruned.metrics[name], pruned.stderr[name], 100, 1, " %", pruned.n)

    text = (f"Answers changed on {share('flips')} of the {pruned.n} {noun}: right to wrong {share('flips_lost')}, wrong to "
            f"right {share('flips_gained')}.")
    if "kl" not in pruned.metrics:
        return text + " (Dutta et al. 2024)"
    return text + (f" KL(unpruned ‖ pruned) over the four answers: {api.with_ci(pruned.metrics['kl'], pruned.stderr['kl'], 1, 4)} "
                   "nats per question (± 95 % CI; Dutta et al. 2024).")


def show_mmlu(baseline, pruned) -> None:
    """MMLU accuracy (± standard error) against the baseline, per category and per subject."""
    settings = pruned.settings
    questions = f"{pruned.n} question" + ("s" if pruned.n != 1 else "")
    st.subheader(f"MMLU ({settings['format']} format, {settings['shots']}-shot, {questions}, {settings['dtype']})")
    names = pruned.accuracy_metrics
    for name in [*names, *(["loss"] if "loss" in pruned.metrics else [])]:
        show_mmlu_metric(baseline, pruned, name)
    if "flips" in pruned.metrics:
        st.caption(answer_changes_text(pruned))
    notes = [provenance(baseline, pruned)] + ([settings["note"].capitalize() + "."] if settings.get("note") else [])
    st.caption(" ".join(notes))
    noise_warning(baseline, pruned, "acc", "questions")
    metric = st.radio("Per-category chart", names, horizontal=True, key="mmlu_chart_metric")
    plotly_chart(plots.mmlu_category_bars([baseline, pruned], metric), f"mmlu_{metric}_per_category")
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


def show_generative(baseline, pruned) -> None:
    """A generative task's rate (pass@1 or exact_match ± 95 % CI) pruned against unpruned, the answer changes, and
    each item's completions side by side."""
    metric, settings = pruned.headline, pruned.settings
    label = api.TaskSpec.parse(pruned.task).label
    st.subheader(f"{label} ({metric}, {pruned.n} items, {settings['prompt_format']} prompt, {settings['dtype']})")
    change = pruned.metrics[metric] - baseline.metrics[metric]
    meaning = ("the share of problems whose one greedy completion passes its tests, run in a sandbox" if metric == "pass@1"
               else "the share of items whose answer is exactly the right one")
    interval = (f"± 1.96 × sqrt(p (1 − p) / (n − 1)) over the n = {pruned.n} items (95 % CI; Wilson's interval, written as a "
                "range, where that one would reach past 0 or 100 %)")
    left, right = st.columns(2)
    left.metric(
        f"{metric} (pruned)", api.with_ci(pruned.metrics[metric], pruned.stderr[metric], 100, 1, " %", pruned.n), delta=f"{100 * change:+.1f} pp",
        **delta_style(change, lower_is_better=False, beyond_noise=not api.within_noise(baseline, pruned, metric)),
        help=f"{metric}: {meaning}. {interval}.",
    )
    right.metric(f"{metric} (unpruned)", api.with_ci(baseline.metrics[metric], baseline.stderr[metric], 100, 1, " %", baseline.n),
                 help=f"{metric}: {meaning}. {interval}.")
    if "flips" in pruned.metrics:
        st.caption(answer_changes_text(pruned, "items"))
    st.caption(provenance(baseline, pruned))
    noise_warning(baseline, pruned, metric, "items")
    table = baseline.items[["item", "completion", "correct"]].rename(columns={"completion": "unpruned", "correct": "unpruned right"})
    table["pruned"], table["pruned right"] = pruned.items["completion"].to_numpy(), pruned.items["correct"].to_numpy()
    st.dataframe(table, hide_index=True)


def show_savings(loaded, plan: PruningPlan, speed: dict | None) -> None:
    """What the plan saves: parameters, KV-cache bytes and FLOPs per token, and the measured tokens/s.

    Each card holds a short label and value (exact counts in its tooltip) with the unit or the share of
    the model in grey below: a card cuts longer text off.

    Args:
        speed: ``{"unpruned": tokens/s, "pruned": tokens/s}`` of a generation with this plan, or ``None``.
    """
    savings = api.plan_cost(loaded.info, plan, loaded.dtype.itemsize)
    columns = st.columns(4)
    columns[0].metric(
        "Params removed", short_count(savings.params_removed),
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
        "FLOPs saved", short_count(savings.flops_per_token),
        delta=f"per token ({savings.flops_percent:.1f} %)", delta_color="off", delta_arrow="off",
        help=f"{savings.flops_per_token:,} FLOPs per token, {savings.flops_percent:.1f} % of the full model's. Estimate: "
        "2 FLOPs per weight of each pruned sublayer (one multiply-add) plus, per pruned attention sublayer, 4 × heads × "
        f"head dim × context for QKᵀ and AV, at a context of {savings.context} tokens (Kaplan et al. 2020, §2.1).",
    )
    if speed is None:
        columns[3].caption("Tokens/s: generate text with this plan above to measure the pruned model's speed.")
        return
    change = speed["pruned"] - speed["unpruned"]
    columns[3].metric(
        "Tokens/s (pruned)", f"{speed['pruned']:.1f}", delta=f"{change:+.1f} vs unpruned",
        **delta_style(change, lower_is_better=False),
        help="Generated tokens / wall seconds of the greedy generation above (KV-cached, this machine); "
        "one short run, so expect a few % of timing noise.",
    )


def task_headline(name: str, baseline, pruned) -> None:
    """One task's card in the live strip: the pruned value ± 95 % CI and its change against the unpruned model
    (relative for perplexity, in pp for accuracy), coloured only beyond noise, with n and the unpruned value.

    The change's interval is paired per window or question where both scored the same items
    (:func:`pruneviz.api.difference_and_noise`), which is much tighter than the two values' own intervals.
    """
    if name == "wiki":
        change, low, high = api.perplexity_change(baseline, pruned)
        beyond = not api.within_noise(baseline, pruned, "perplexity")
        st.metric(
            "Wikipedia perplexity", api.with_ci(pruned.metrics["perplexity"], pruned.stderr["perplexity"]),
            delta=f"{change:+.1f} %", **delta_style(change, lower_is_better=True, beyond_noise=beyond),
            help="Pruned perplexity ± 1.96 standard errors over windows; the change is relative to the unpruned model.",
        )
        interval = "" if low != low else f" (95 % CI {low:+.1f} to {high:+.1f} %, paired per window)"
        kl = f" KL(unpruned ‖ pruned) {api.with_ci(pruned.metrics['kl'], pruned.stderr['kl'], 1, 4)} nats/token." if "kl" in pruned.metrics else ""
        st.caption(
            f"Unpruned {api.with_ci(baseline.metrics['perplexity'], baseline.stderr['perplexity'])}. Change {change:+.1f} %"
            f"{interval}: {'beyond' if beyond else 'within'} noise. n = {pruned.n} windows × {pruned.settings['seq_len']} tokens.{kl}"
        )
        return
    metric = pruned.headline
    generative = name in api.GENERATIVE_TASKS
    noun = "items" if generative else "questions"
    _, difference, se, paired = api.difference_and_noise(baseline, pruned, metric)
    beyond = not api.within_noise(baseline, pruned, metric)
    st.metric(
        f"{api.TaskSpec.parse(pruned.task).label if generative else 'MMLU'} {metric}",
        api.with_ci(pruned.metrics[metric], pruned.stderr[metric], 100, 1, " %", pruned.n),
        delta=f"{100 * difference:+.1f} pp", **delta_style(difference, lower_is_better=False, beyond_noise=beyond),
        help=f"Pruned {metric} ± 1.96 standard errors over {noun}; the change is against the unpruned model, in percentage points.",
    )
    flips = f" Answers changed on {100 * pruned.metrics['flips']:.1f} % of {noun}." if "flips" in pruned.metrics else ""
    interval = "" if se != se else f" ± {100 * api.confidence_halfwidth(se):.1f} pp (95 %{f', paired per {noun[:-1]}' if paired else ''})"
    how = f"{pruned.settings['prompt_format']} prompt" if generative else f"{pruned.settings['format']} format"
    st.caption(
        f"Unpruned {api.with_ci(baseline.metrics[metric], baseline.stderr[metric], 100, 1, ' %', baseline.n)}. Change {100 * difference:+.1f} pp"
        f"{interval}: {'beyond' if beyond else 'within'} noise. n = {pruned.n} {noun}, {how}.{flips}"
    )


def show_task(name: str, baseline, pruned) -> None:
    """One task's detailed comparison: perplexity cards, MMLU metrics with per-category and per-subject tables, or a
    generative task's rate with each item's completions."""
    show = show_perplexity if name == "wiki" else show_mmlu if name == "mmlu" else show_generative
    show(baseline, pruned)


def show_results_header(evaluation: dict, plan: PruningPlan, loaded, speed: dict | None) -> None:
    """The results section's heading: which plan (and recovery) the results are of, and what the plan saves.

    Args:
        evaluation: what :func:`pruneviz.ui.live_evaluation.run_evaluations` returns (its ``plan`` and ``recovery``).
        plan: the plan in force now (the results may be of an earlier one: then a warning says so).
        speed: as :func:`show_savings`.
    """
    st.header("Results")
    if evaluation["plan"] != str(plan):
        st.warning(f"These results are for the plan '{evaluation['plan'] or 'nothing pruned'}'; press Run to evaluate the current plan.")
    elif not evaluation["plan"]:
        st.info("The plan is empty, so the 'pruned' model is the unpruned baseline.")
    if evaluation["recovery"]:
        st.info(f"'Pruned' is the plan with the recovery {evaluation['recovery']} applied.")
    show_savings(loaded, PruningPlan.parse(evaluation["plan"]), speed)


def download_json(evaluation: dict) -> None:
    """The download button of every result of ``evaluation`` as ``pruneviz evaluate --json`` writes it."""
    st.download_button(
        "Download JSON", api.comparison_json(evaluation["plan"], evaluation["recovery"], evaluation["pairs"]),
        file_name="evaluation.json", mime="application/json",
        help="Every result as `pruneviz evaluate --json` writes it (task, n, metrics, stderr, per subject and category, plan).",
    )
