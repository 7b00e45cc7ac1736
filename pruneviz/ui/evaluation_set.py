"""The prune page's evaluation set (Wikipedia perplexity, one MMLU subset, generative tasks) and its evaluation
against the baseline."""

from __future__ import annotations

import math

import streamlit as st

from .. import api
from ..core.plan import PruningPlan
from ..data.mmlu import CATEGORIES, SUBJECT_CATEGORY, SUBJECTS
from ..evaluation.mmlu import CLOZE_BELOW_PARAMS, FORMATS, default_format
from .feedback import ProgressBar, cancellable, run_or_stop, stop_with_error
from .state import current_deployment, remembered

SUBSETS = ("all subjects", "one category", "chosen subjects")


def mmlu_task_inputs() -> str | None:
    """Draw the MMLU subset picker; return the task (``mmlu``, ``mmlu:<category>``, ``mmlu:<s1>,<s2>``) or None."""
    subset = st.radio("Subset", SUBSETS, horizontal=True, **remembered("mmlu_subset", SUBSETS[0]))
    if subset == SUBSETS[1]:
        return f"mmlu:{st.selectbox('Category', CATEGORIES, **remembered('mmlu_category', CATEGORIES[0]))}"
    if subset == SUBSETS[2]:
        chosen = st.multiselect(
            "Subjects", SUBJECTS, **remembered("mmlu_subjects", []), format_func=lambda s: f"{s} ({SUBJECT_CATEGORY[s]})"
        )
        return "mmlu:" + ",".join(chosen) if chosen else None
    return "mmlu"


def format_input(params_total: int) -> str:
    """The MMLU format picker, preselected by model size, with the reason."""
    preset = default_format(params_total)
    fmt = st.radio("Format", FORMATS, horizontal=True, **remembered("mmlu_format", preset))
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


def generative_inputs(loaded) -> dict | None:
    """Draw the generative-task pickers (HumanEval, arithmetic, brackets; items per task; prompt format); return
    ``{"tasks", "per_task", "prompt_format"}``, or ``None`` when no task is chosen."""
    deployment = current_deployment()
    st.markdown("**Generative tasks** (greedy decoding under the plan)")
    columns = st.columns(len(api.GENERATIVE_TASKS))
    chosen = [
        task for column, task in zip(columns, api.GENERATIVE_TASKS)
        if deployment.offers_dataset(task)
        and column.checkbox(f"{api.TASK_LABEL[task]} ({api.TASK_METRIC[task]})", **remembered(f"use_{task}", False))
    ]
    left, right = st.columns(2)
    most = deployment.cap("samples", 500)
    per_task = left.number_input("Items per task", 1, most, **remembered("generative_per_task", min(10, most), (1, most)),
                                 disabled=not chosen, help="The first N items of each task (HumanEval has 164).")
    fmt = right.radio("Prompt format", api.PROMPT_FORMATS, horizontal=True, **remembered("generative_prompt_format", "auto"),
                      disabled=not chosen)
    st.caption(
        "auto: the chat template for instruct models (those whose tokenizer has one), a plain prompt for base models; "
        "HumanEval completions run with their tests in a sandbox (a separate process without network, limited in time "
        "and memory). A few seconds to minutes per item on a CPU."
    )
    return {"tasks": chosen, "per_task": int(per_task), "prompt_format": fmt} if chosen else None


def evaluation_inputs(loaded) -> dict:
    """Draw the evaluation-set pickers (capped and limited to configured data in demo mode); return the chosen settings.

    Every choice is a remembered setting (:func:`pruneviz.ui.remembered`): it outlives a visit to another
    page or a model switch, as the plan does.
    """
    deployment = current_deployment()
    wiki_column, mmlu_column = st.columns(2)
    with wiki_column:
        wiki_offered = deployment.offers_dataset("wiki")
        use_wiki = st.checkbox(
            "Wikipedia perplexity", **remembered("use_wiki", wiki_offered), disabled=not wiki_offered
        ) and wiki_offered
        left, right = st.columns(2)
        most, longest = deployment.cap("samples", 512), deployment.cap("seq_len", loaded.max_length)
        windows = left.number_input(
            "Windows", 1, most, **remembered("wiki_windows", min(8, most), (1, most)), disabled=not use_wiki
        )
        seq_len = right.number_input(
            "Tokens per window", 2, longest, step=32, **remembered("wiki_seq_len", min(128, longest), (2, longest)),
            disabled=not use_wiki,
        )
        st.caption("Non-overlapping windows cut from the evaluation half of the embedded Wikipedia leads.")
    with mmlu_column:
        mmlu_offered = deployment.offers_dataset("mmlu")
        use_mmlu = st.checkbox(
            "MMLU", **remembered("use_mmlu", False), disabled=not mmlu_offered, help="About a second per question on a CPU."
        ) and mmlu_offered
        task, fmt, shots, per_subject = None, None, 0, 1
        if use_mmlu:
            task = mmlu_task_inputs()
            fmt = format_input(loaded.info.params_total)
            left, right = st.columns(2)
            most = deployment.cap("per_subject", 2000)
            per_subject = left.number_input("Questions per subject", 1, most, **remembered("mmlu_per_subject", 1, (1, most)))
            shots = right.number_input("Shots (k)", 0, 5, **remembered("mmlu_shots", 0, (0, 5)))
            st.caption("k-shot: the first k questions of each subject are held out as exemplars and are not scored.")
    generative = generative_inputs(loaded)
    return {
        "generative": generative,
        "wiki": {"task": "wiki", "windows": int(windows), "seq_len": int(seq_len)} if use_wiki else None,
        "mmlu": {"task": task, "fmt": fmt, "shots": int(shots), "per_subject": int(per_subject)} if use_mmlu else None,
        "mmlu_missing": use_mmlu and task is None,
    }


def expected_count(settings: dict, progress: ProgressBar) -> int:
    """How many windows or questions the running evaluation will score, from its settings and progress total.

    MMLU progress counts scoring requests: one per question in letter format, four in cloze.
    """
    if settings["task"] == "wiki":
        return settings["windows"]
    return progress.total // (4 if settings.get("fmt") == "cloze" else 1)


def live_text(which: str, result, settings: dict, progress: ProgressBar) -> str:
    """One line for a provisional result: its headline metric with a 95 % CI and how much is scored so far."""
    metric = result.headline
    scale, digits, unit = (1, 2, "") if metric == "perplexity" else (100, 1, " %")
    noun = "windows" if settings["task"] == "wiki" else "questions"
    value = api.with_ci(result.metrics[metric], result.stderr.get(metric, math.nan), scale, digits, unit)
    return f"**{which}, so far**: {metric} {value}; n = {result.n} of {expected_count(settings, progress)} {noun}."


def evaluate_pair(loaded, plan: PruningPlan, settings: dict, name: str, recovery=None) -> tuple:
    """Evaluate the unpruned baseline and ``plan`` (with ``recovery``) on one task, each with a progress bar.

    Where :func:`pruneviz.api.evaluate` reports provisional results, they are shown live (value ± 95 % CI,
    n of N) while the evaluation runs.
    """
    results = []
    for which, each, stand_ins in (("unpruned", PruningPlan(), None), ("pruned", plan, recovery)):
        live = st.empty()
        with ProgressBar(f"{name}, {which}") as progress:
            show = lambda result, which=which, bar=progress: live.markdown(live_text(which, result, settings, bar))  # noqa: E731
            results.append(run_or_stop(api.evaluate, loaded, each, recovery=stand_ins, progress=progress, partial=show, **settings))
        live.empty()
    return tuple(results)


def run_evaluations(loaded, plan: PruningPlan, chosen: dict, recovery) -> dict:
    """Evaluate every chosen task, unpruned and under ``plan`` (with ``recovery``, a
    :class:`~pruneviz.ui.recoveries.FittedRecovery` or ``None``); return what the results section shows.

    ``chosen`` is what :func:`evaluation_inputs` returned; a choice that names no task stops the page with one error.
    """
    if chosen["mmlu_missing"]:
        stop_with_error("Choose at least one MMLU subject, or another subset.")
    if not chosen["wiki"] and not chosen["mmlu"] and not chosen["generative"]:
        stop_with_error("Choose Wikipedia perplexity, MMLU or a generative task.")
    stand_ins = recovery.recovery if recovery else None
    pairs = {}
    with cancellable("evaluate"):
        if chosen["wiki"]:
            pairs["wiki"] = evaluate_pair(loaded, plan, chosen["wiki"], "Wikipedia perplexity", stand_ins)
        if chosen["mmlu"]:
            pairs["mmlu"] = evaluate_pair(loaded, plan, chosen["mmlu"], "MMLU", stand_ins)
        generative = chosen["generative"] or {"tasks": []}
        for task in generative["tasks"]:
            settings = {"task": task, "per_task": generative["per_task"], "prompt_format": generative["prompt_format"]}
            pairs[task] = evaluate_pair(loaded, plan, settings, api.TASK_LABEL[task], stand_ins)
    return {"plan": str(plan), "model": loaded.fingerprint, "pairs": pairs, "recovery": recovery.name if recovery else None}
