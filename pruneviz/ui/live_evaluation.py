"""The prune page's core loop: a changed plan is evaluated at once, task by task, with provisional numbers.

Each change of a toggle, the plan box or the evaluation set starts a new run of the page. Where automatic
evaluation is on (the default) that run evaluates the plan. A newer change cancels it: Streamlit stops
a running page at its next drawing call (every progress report is one) to start the new run, and the
evaluation resumes from its finished batches when it is asked for again. A short pause before a new plan is
evaluated lets a burst of toggles start one evaluation, not one each (the debounce).

For every task the unpruned baseline comes first (from the cache, or from the background job the sidebar
started when the model loaded, waited for with its progress shown), then the plan: its provisional value
± CI and "n of N" refine in the strip above the toggles, and its card and details appear as soon as that
task is done.
"""

from __future__ import annotations

import json
import math
import time

import streamlit as st

from .. import api
from ..core.plan import PruningPlan
from .comparison import download_json, show_task, task_headline
from .evaluation_set import evaluation_tasks
from .feedback import ProgressBar, cancellable, run_or_stop
from .state import AUTO_EVALUATE_KEY, remembered

# st.session_state keys: the signature of the last evaluation started, of the last one finished, and of one cancelled
STARTED_KEY, FINISHED_KEY, CANCELLED_KEY = "_evaluation_started", "_evaluation_finished", "_evaluation_cancelled"
DEBOUNCE_SECONDS = 0.4
DEBOUNCE_STEPS = 4


def signature(loaded, plan: PruningPlan, chosen: dict, recovery) -> str:
    """What an evaluation depends on: the model, the plan, the evaluation set and the recovery's name."""
    return json.dumps([loaded.fingerprint, str(plan), chosen, recovery.name if recovery else None], sort_keys=True, default=str)


def _cancel_evaluation() -> None:
    """The Cancel button's callback: automatic evaluation leaves this plan alone until it changes or Run is pressed.

    It runs at the start of the page run the click starts, after Streamlit has stopped the running evaluation.
    """
    st.session_state[CANCELLED_KEY] = st.session_state.get(STARTED_KEY)


def evaluate_now(current: str) -> bool:
    """Draw the automatic-evaluation switch and the Run button; return whether to evaluate the ``current`` signature now.

    With the switch on, every change is evaluated, except one whose evaluation the user cancelled (Run resumes it)
    and one already evaluated in this session (a rerun started by another widget shows the stored results).
    """
    left, right = st.columns([3, 1])
    auto = left.toggle(
        "Evaluate every change automatically", **remembered(AUTO_EVALUATE_KEY, True),
        help="Each toggle or edit re-evaluates the plan at once (a newer change cancels the running evaluation). "
        "Off: press Run.",
    )
    pressed = right.button("Run", type="primary", help="Evaluate the current plan on the evaluation set now.")
    if pressed:
        st.session_state.pop(CANCELLED_KEY, None)
        return True
    cancelled = st.session_state.get(CANCELLED_KEY) == current
    if auto and cancelled:
        st.info("Automatic evaluation is paused for this plan because its evaluation was cancelled: press Run to resume "
                "it (finished batches are cached), or change the plan.")
    return auto and not cancelled and st.session_state.get(FINISHED_KEY) != current


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
    noun = {"wiki": "windows", "mmlu": "questions"}.get(settings["task"].partition(":")[0], "items")
    value = api.with_ci(result.metrics[metric], result.stderr.get(metric, math.nan), scale, digits, unit,
                        None if metric == "perplexity" else result.n)
    order = result.settings.get("provisional_order")
    caveat = f" ({order}: not a random sample)" if order else ""
    return f"**{which}, so far**: {metric} {value}; n = {result.n} of {expected_count(settings, progress)} {noun}{caveat}."


def evaluate_pair(loaded, plan: PruningPlan, settings: dict, title: str, recovery=None) -> tuple:
    """Evaluate the unpruned baseline and ``plan`` (with ``recovery``) on one task, each with a progress bar and
    its provisional value (± CI, n of N) drawn live where the caller's container is."""
    results = []
    for which, each, stand_ins in (("unpruned", PruningPlan(), None), ("pruned", plan, recovery)):
        live = st.empty()
        with ProgressBar(f"{title}, {which}") as progress:
            show = lambda result, which=which, bar=progress: live.markdown(live_text(which, result, settings, bar))  # noqa: E731
            results.append(run_or_stop(api.evaluate, loaded, each, recovery=stand_ins, progress=progress, partial=show, **settings))
        live.empty()
    return tuple(results)


def _debounce(slot) -> None:
    """Wait a moment before evaluating a new plan; a change meanwhile stops this run at one of the drawing calls."""
    for step in range(DEBOUNCE_STEPS):
        slot.caption("Evaluating the new plan" + " ." * (step + 1))
        time.sleep(DEBOUNCE_SECONDS / DEBOUNCE_STEPS)
    slot.empty()


def run_evaluations(loaded, plan: PruningPlan, chosen: dict, recovery, strip, details) -> dict | None:
    """Evaluate every chosen task, unpruned and under ``plan`` (with ``recovery``, a
    :class:`~pruneviz.ui.recoveries.FittedRecovery` or ``None``), task by task: each task's card appears in its
    column of ``strip`` and its details in ``details`` as soon as that task is done.

    Args:
        chosen: what :func:`pruneviz.ui.evaluation_set.evaluation_inputs` returned.
        strip, details: Streamlit containers (the strip sits above the toggles, the details below).

    Returns:
        ``{"plan", "model", "pairs": {task: (unpruned, pruned)}, "recovery"}``, or ``None`` when the set names no
        task (one error in the strip says what to choose).
    """
    if chosen["mmlu_missing"]:
        strip.error("Choose at least one MMLU subject, or another subset, in the evaluation set.")
        return None
    tasks = evaluation_tasks(chosen)
    if not tasks:
        strip.error("Choose Wikipedia perplexity, MMLU or a generative task in the evaluation set.")
        return None
    current = signature(loaded, plan, chosen, recovery)
    columns = strip.columns(len(tasks))
    if st.session_state.get(FINISHED_KEY) != current:
        with columns[0]:
            _debounce(st.empty())
    stand_ins = recovery.recovery if recovery else None
    evaluation = {"plan": str(plan), "model": loaded.fingerprint, "pairs": {}, "recovery": recovery.name if recovery else None}
    st.session_state[STARTED_KEY] = current
    # the Cancel button sits in the strip, under the numbers it stops; each task draws in its own column and details
    with strip, cancellable("evaluate", on_cancel=_cancel_evaluation):
        for (name, settings, title), column in zip(tasks, columns):
            with column:
                pair = evaluate_pair(loaded, plan, settings, title, stand_ins)
                task_headline(name, *pair)
            evaluation["pairs"][name] = pair
            with details:
                show_task(name, *pair)
    st.session_state[FINISHED_KEY] = current
    with details:
        download_json(evaluation)
    return evaluation


def show_stored(evaluation: dict, strip, details) -> None:
    """Draw a stored evaluation as :func:`run_evaluations` drew it: a card per task in ``strip``, details below."""
    for (name, pair), column in zip(evaluation["pairs"].items(), strip.columns(len(evaluation["pairs"]) or 1)):
        with column:
            task_headline(name, *pair)
        with details:
            show_task(name, *pair)
    if evaluation["pairs"]:
        with details:
            download_json(evaluation)
