"""Pickers for what a computation reads: calibration data and evaluation tasks (the plan: :mod:`.plan_editor`)."""

from __future__ import annotations

import streamlit as st

from ..core.loading import LoadedModel
from ..data.generative import GENERATIVE_TASKS, TASK_LABEL, TASK_METRIC
from ..data.mmlu import CATEGORIES, SUBJECT_CATEGORY, SUBJECTS
from ..data.tasks import TaskSpec
from ..evaluation.mmlu import FORMATS, default_format
from .feedback import stop_with_error
from .state import cap, current_deployment, remembered

CALIBRATION_DATA = ("wiki", "mmlu", *(f"mmlu:{c}" for c in CATEGORIES))
MMLU_TASKS = ("mmlu", *(f"mmlu:{c}" for c in CATEGORIES), *(f"mmlu:{s}" for s in SUBJECTS))


def calibration_data_options() -> list[str]:
    """Calibration datasets offered: :data:`CALIBRATION_DATA`; in demo mode only the configured ones (and their MMLU categories)."""
    deployment = current_deployment()
    if not deployment.demo:
        return list(CALIBRATION_DATA)
    extra = [d for d in deployment.datasets if d not in CALIBRATION_DATA]
    return [d for d in CALIBRATION_DATA if deployment.offers_dataset(d)] + extra


def dataset_label(data: str) -> str:
    """Human name of a calibration dataset option, e.g. ``"MMLU STEM prompts"`` (a text file: its name)."""
    spec = TaskSpec.parse(data)
    return f"{spec.label} prompts (0-shot, letter format)" if spec.is_mmlu else f"{spec.label} (calibration half)"


def calibration_inputs(
    loaded: LoadedModel,
    key: str,
    samples: int = 8,
    seq_len: int = 128,
    data_help: str = "Static metrics are computed on the calibration half of Wikipedia, never on the evaluation "
    "half that perplexity is measured on.",
    samples_help: str = "Number of calibration sequences N.",
    data_label: str = "Calibration data",
    form: str | None = None,
) -> tuple[str, int, int]:
    """Draw the calibration-data pickers used by metrics and recovery fits, as :func:`remembered` settings.

    Args:
        loaded: the model (its context length bounds the sequence length).
        key: prefix of the settings ``<key>_data``, ``<key>_samples`` and ``<key>_seq_len``.
        samples, seq_len: defaults, small so that a CPU answers in seconds.
        data_help, samples_help: tooltips of the dataset and sample-count pickers.
        data_label: label of the dataset picker.
        form: the key of the ``st.form`` the pickers are drawn in, if any.

    Returns:
        ``(data, samples, seq_len)`` for :func:`pruneviz.api.influence`.
    """
    options = calibration_data_options()
    data = st.selectbox(
        data_label, options, format_func=dataset_label, help=data_help, **remembered(f"{key}_data", options[0], form=form)
    )
    left, right = st.columns(2)
    most, longest = cap("samples", 1024), cap("seq_len", loaded.max_length)
    count = left.number_input(
        "Sequences", 1, most, help=samples_help, **remembered(f"{key}_samples", min(samples, most), (1, most), form)
    )
    length = right.number_input(
        "Tokens per sequence", 2, longest, step=32, help="Each sequence is truncated to this many tokens T.",
        **remembered(f"{key}_seq_len", min(seq_len, longest), (2, longest), form),
    )
    return data, int(count), int(length)


def mmlu_task_label(task: str) -> str:
    """Picker label of an MMLU task: ``"all subjects"``, ``"STEM (category)"`` or ``"anatomy (STEM)"``."""
    subset = TaskSpec.parse(task).subset
    if not subset:
        return "all subjects"
    return f"{subset} (category)" if subset in CATEGORIES else f"{subset} ({SUBJECT_CATEGORY[subset]})"


def task_inputs(
    loaded: LoadedModel,
    key: str,
    wiki: bool = True,
    mmlu: tuple[str, ...] = (),
    per_subject: int = 1,
    offer_heldout: bool = False,
    form: str | None = None,
) -> tuple[list[tuple[str, dict]], bool]:
    """Draw the evaluation-task pickers: Wikipedia perplexity, any number of MMLU subsets and generative tasks.

    Every choice is a :func:`remembered` setting named ``<key>_<choice>``, so it outlives other pages and
    model switches; the page's permalink restores all but the MMLU subsets
    (:func:`pruneviz.ui.permalinks.task_params`).

    Args:
        loaded: the model (its size preselects the MMLU format).
        key: prefix of the settings.
        wiki, mmlu, per_subject: defaults (Wikipedia on, MMLU subsets from :data:`MMLU_TASKS`).
        offer_heldout: also draw the "held out" checkbox (on by default): MMLU is then evaluated on the
            ``test`` half of each subject, and metrics should be computed on the ``fit`` half.
        form: the key of the ``st.form`` the pickers are drawn in, if any.

    Returns:
        ``(tasks, heldout)``: ``(task, options)`` pairs for :func:`pruneviz.api.evaluate` (and
        :class:`pruneviz.studies.curves.Task`), and whether the held-out protocol was chosen.
    """
    def seeded(name: str, default, bounds: tuple[int, int] | None = None) -> dict:
        return remembered(f"{key}_{name}", default, bounds, form)

    left, right = st.columns(2)
    with left:
        wiki_offered = current_deployment().offers_dataset("wiki")
        use_wiki = st.checkbox(
            "Wikipedia perplexity", **seeded("wiki", wiki and wiki_offered), disabled=not wiki_offered
        ) and wiki_offered
        windows_column, length_column = st.columns(2)
        most, longest = cap("samples", 512), cap("seq_len", loaded.max_length)
        windows = windows_column.number_input("Windows", 1, most, **seeded("windows", min(4, most), (1, most)))
        window_len = length_column.number_input(
            "Tokens per window", 2, longest, step=32, **seeded("window_len", min(64, longest), (2, longest))
        )
        st.caption("Windows of the evaluation half of Wikipedia, never the calibration half that metrics and fits use.")
    with right:
        offered = MMLU_TASKS if current_deployment().offers_dataset("mmlu") else ()
        subsets = st.multiselect(
            "MMLU", offered, format_func=mmlu_task_label, **seeded("mmlu", [t for t in mmlu if t in offered]),
            help="Each chosen subset (all subjects, a category or one subject) is a separate task. About a "
            "second per question on a CPU: a category has 12-18 subjects.",
        )
        format_column, count_column = st.columns(2)
        fmt = format_column.radio(
            "Format", FORMATS, horizontal=True, **seeded("format", default_format(loaded.info.params_total)),
            help="letter: the lm-eval-harness prompt scored on ' A'..' D' (acc, MMLU loss). cloze: the "
            "likelihood of each answer text (acc, acc_norm); preselected under 1B parameters, where letter "
            "format sits at chance.",
        )
        most = cap("per_subject", 2000)
        count = count_column.number_input(
            "Questions per subject", 1, most, **seeded("per_subject", min(per_subject, most), (1, most))
        )
        heldout = offer_heldout and st.checkbox(
            "Held-out MMLU questions", **seeded("heldout", True),
            help="Adaptive MMLU metrics never see the evaluated questions: they use the even-numbered questions of each subject and MMLU is "
            "evaluated on the odd-numbered ones. Off: the metrics are computed on the evaluated questions "
            "themselves (optimistic: it flatters them on their own task).",
        )
    generative_column, items_column = st.columns(2)
    chosen = generative_column.multiselect(
        "Generative tasks", [t for t in GENERATIVE_TASKS if current_deployment().offers_dataset(t)], **seeded("generative", []),
        format_func=lambda task: f"{TASK_LABEL[task]} ({TASK_METRIC[task]})",
        help="Greedy decoding under each plan (the chat template for instruct models, a plain prompt for base models); "
        "HumanEval's completions run with their tests in a sandbox. Seconds to minutes per item on a CPU.",
    )
    most = cap("samples", 500)
    items = items_column.number_input("Items per generative task", 1, most, **seeded("per_task", min(5, most), (1, most)))
    tasks = [("wiki", {"windows": int(windows), "seq_len": int(window_len)})] if use_wiki else []
    tasks += [(task, {"fmt": fmt, "per_subject": int(count), "half": "test" if heldout else "all"}) for task in subsets]
    tasks += [(task, {"per_task": int(items)}) for task in chosen]
    return tasks, heldout


def check_heldout(heldout: bool, tasks: list[tuple[str, dict]]) -> None:
    """Stop with one error sentence when held-out MMLU cannot split a subject's questions into two halves."""
    if heldout and any(options.get("per_subject") == 1 for _, options in tasks):
        stop_with_error("Held-out MMLU needs at least 2 questions per subject: one half ranks, the other is evaluated.")


def heldout_note(heldout: bool, adaptive_on_mmlu: bool, mmlu_evaluated: bool) -> str:
    """One sentence saying which MMLU questions ranked the units and which were evaluated.

    Args:
        heldout: whether metrics used the ``fit`` half and MMLU was evaluated on the ``test`` half.
        adaptive_on_mmlu: whether an adaptive metric was computed on MMLU data.
        mmlu_evaluated: whether any MMLU task was evaluated.
    """
    if not mmlu_evaluated:
        return ("Wikipedia perplexity uses the evaluation half of Wikipedia and generative tasks score their own items, so "
                "no text both ranks units and judges them.")
    if heldout and adaptive_on_mmlu:
        return (
            "**Held out**: adaptive MMLU metrics used the even-numbered questions of each subject; MMLU is "
            "evaluated on the odd-numbered ones."
        )
    if heldout:
        return "MMLU is evaluated on the held-out half (the odd-numbered questions of each subject)."
    if adaptive_on_mmlu:
        return "Adaptive MMLU metrics were **computed on the evaluated questions (optimistic)**."
    return "MMLU is evaluated on all chosen questions; static metrics read the prompts but never the answers."
