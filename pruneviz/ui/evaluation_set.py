"""The prune page's evaluation set (Wikipedia perplexity, one MMLU subset, generative tasks): its pickers, its
defaults, and the unpruned baseline of the chosen set, started in the background when a model loads."""

from __future__ import annotations

import streamlit as st

from .. import api
from ..data.mmlu import CATEGORIES, SUBJECT_CATEGORY, SUBJECTS
from ..evaluation.evaluation_set import default_evaluation_set
from ..evaluation.mmlu import CLOZE_BELOW_PARAMS, FORMATS, default_format, default_questions_per_subject
from .state import AUTO_EVALUATE_KEY, current_deployment, remembered

SUBSETS = ("all subjects", "one category", "chosen subjects")


def mmlu_task_inputs() -> str | None:
    """Draw the MMLU subset picker; return the task (``mmlu``, ``mmlu:<category>``, ``mmlu:<s1>,<s2>``) or None."""
    subset = st.radio("Subset", SUBSETS, horizontal=True, **remembered("mmlu_subset", SUBSETS[0]))
    category = st.selectbox("Category", CATEGORIES, **remembered("mmlu_category", CATEGORIES[0])) if subset == SUBSETS[1] else ""
    subjects = st.multiselect(
        "Subjects", SUBJECTS, **remembered("mmlu_subjects", []), format_func=lambda s: f"{s} ({SUBJECT_CATEGORY[s]})"
    ) if subset == SUBSETS[2] else []
    return _mmlu_task(subset, category, subjects)


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


def _defaults(loaded, fmt: str | None = None) -> dict:
    """The evaluation set shown while the user has chosen nothing: Wikipedia and MMLU (where offered), in the
    format preselected for the model's size and its default number of questions (for ``fmt`` where given)."""
    deployment = current_deployment()
    wiki, mmlu = default_evaluation_set(loaded.info.params_total)
    fmt = fmt or mmlu["fmt"]
    return {
        "use_wiki": deployment.offers_dataset("wiki"), "wiki_windows": min(wiki["windows"], deployment.cap("samples", 512)),
        "wiki_seq_len": min(wiki["seq_len"], deployment.cap("seq_len", loaded.max_length)),
        "use_mmlu": deployment.offers_dataset("mmlu"), "mmlu_subset": SUBSETS[0], "mmlu_category": CATEGORIES[0],
        "mmlu_subjects": [], "mmlu_format": fmt, "mmlu_shots": 0,
        "mmlu_per_subject": min(default_questions_per_subject(fmt), deployment.cap("per_subject", 2000)),
    }


def _bounds(loaded) -> dict:
    """``(lowest, highest)`` of each number setting, as its widget offers it."""
    deployment = current_deployment()
    return {
        "wiki_windows": (1, deployment.cap("samples", 512)), "wiki_seq_len": (2, deployment.cap("seq_len", loaded.max_length)),
        "mmlu_per_subject": (1, deployment.cap("per_subject", 2000)), "mmlu_shots": (0, 5),
    }


def _mmlu_task(subset: str, category: str, subjects: list[str]) -> str | None:
    """The MMLU task of a subset choice: ``mmlu``, ``mmlu:<category>``, ``mmlu:<s1>,<s2>``, or None (no subject chosen)."""
    if subset == SUBSETS[1]:
        return f"mmlu:{category}"
    if subset == SUBSETS[2]:
        return "mmlu:" + ",".join(subjects) if subjects else None
    return "mmlu"


def chosen_evaluation_set(loaded) -> dict:
    """The evaluation set as chosen so far (each remembered setting, else its default), without drawing anything.

    Returns:
        ``{"wiki": evaluate() keyword arguments or None, "mmlu": ... or None, "mmlu_missing": bool, "generative":
        {"tasks", "per_task", "prompt_format"} or None}``; the sidebar starts the unpruned baseline of its Wikipedia and
        MMLU tasks in the background when a model loads (generative tasks, slower and chosen on purpose, wait for a
        change of plan).
    """
    fmt = st.session_state.get("mmlu_format", default_format(loaded.info.params_total))
    defaults, bounds = _defaults(loaded, fmt), _bounds(loaded)

    def setting(name: str):
        value = st.session_state.get(name, defaults[name])
        if name in bounds:
            value = int(min(max(value, bounds[name][0]), bounds[name][1]))
        return value

    deployment = current_deployment()
    use_wiki = setting("use_wiki") and deployment.offers_dataset("wiki")
    use_mmlu = setting("use_mmlu") and deployment.offers_dataset("mmlu")
    task = _mmlu_task(setting("mmlu_subset"), setting("mmlu_category"), setting("mmlu_subjects")) if use_mmlu else None
    generative = [task for task in api.GENERATIVE_TASKS if st.session_state.get(f"use_{task}") and deployment.offers_dataset(task)]
    per_task = int(min(max(st.session_state.get("generative_per_task", 10), 1), deployment.cap("samples", 500)))
    prompt_format = st.session_state.get("generative_prompt_format", "auto")
    return {
        "wiki": {"task": "wiki", "windows": setting("wiki_windows"), "seq_len": setting("wiki_seq_len")} if use_wiki else None,
        "mmlu": {"task": task, "fmt": fmt, "shots": setting("mmlu_shots"), "per_subject": setting("mmlu_per_subject")}
        if task else None,
        "mmlu_missing": bool(use_mmlu and task is None),
        "generative": {"tasks": generative, "per_task": per_task, "prompt_format": prompt_format} if generative else None,
    }


def evaluation_tasks(chosen: dict) -> list[tuple[str, dict, str]]:
    """``(name, evaluate() keyword arguments, title)`` of every task of a chosen set, in the order they are evaluated:
    Wikipedia, MMLU, then each generative task."""
    tasks = [(name, chosen[name], title) for name, title in (("wiki", "Wikipedia perplexity"), ("mmlu", "MMLU")) if chosen[name]]
    generative = chosen["generative"] or {"tasks": []}
    for task in generative["tasks"]:
        settings = {"task": task, "per_task": generative["per_task"], "prompt_format": generative["prompt_format"]}
        tasks.append((task, settings, api.TASK_LABEL[task]))
    return tasks


def start_background_baselines(loaded) -> None:
    """Start the unpruned baseline of the chosen evaluation set in the background (:mod:`pruneviz.evaluation.background`),
    unless automatic evaluation is switched off (then nothing is computed before the user asks)."""
    if not st.session_state.get(AUTO_EVALUATE_KEY, True):
        return
    chosen = chosen_evaluation_set(loaded)
    api.start_baselines(loaded, [settings for settings in (chosen["wiki"], chosen["mmlu"]) if settings])


def generative_inputs(loaded) -> dict | None:
    """Draw the generative-task pickers (HumanEval, arithmetic, brackets; items per task; prompt format); return
    ``{"tasks", "per_task", "prompt_format"}``, or ``None`` when no task is chosen."""
    deployment = current_deployment()
    st.markdown("**Generative tasks** (greedy decoding under the plan)")
    # the tasks one under another: side by side, "Balanced brackets (exact_match)" is cut off at 1,024 pixels
    left, right = st.columns(2)
    chosen = [
        task for task in api.GENERATIVE_TASKS
        if deployment.offers_dataset(task)
        and left.checkbox(f"{api.TASK_LABEL[task]} ({api.TASK_METRIC[task]})", **remembered(f"use_{task}", False))
    ]
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
    """Draw the evaluation-set pickers (capped and limited to configured data in demo mode); return the chosen set,
    as :func:`chosen_evaluation_set`.

    Every choice is a remembered setting (:func:`pruneviz.ui.remembered`): it outlives a visit to another
    page or a model switch, as the plan does.
    """
    fmt_chosen = st.session_state.get("mmlu_format")
    defaults, bounds = _defaults(loaded, fmt_chosen), _bounds(loaded)
    deployment = current_deployment()
    wiki_column, mmlu_column = st.columns(2)
    with wiki_column:
        wiki_offered = deployment.offers_dataset("wiki")
        use_wiki = st.checkbox(
            "Wikipedia perplexity", **remembered("use_wiki", defaults["use_wiki"]), disabled=not wiki_offered
        ) and wiki_offered
        left, right = st.columns(2)
        left.number_input(
            "Windows", *bounds["wiki_windows"], **remembered("wiki_windows", defaults["wiki_windows"], bounds["wiki_windows"]),
            disabled=not use_wiki,
        )
        right.number_input(
            "Tokens per window", *bounds["wiki_seq_len"], step=32,
            **remembered("wiki_seq_len", defaults["wiki_seq_len"], bounds["wiki_seq_len"]), disabled=not use_wiki,
        )
        st.caption("Non-overlapping windows cut from the evaluation half of the embedded Wikipedia leads.")
    with mmlu_column:
        mmlu_offered = deployment.offers_dataset("mmlu")
        use_mmlu = st.checkbox(
            "MMLU", **remembered("use_mmlu", defaults["use_mmlu"]), disabled=not mmlu_offered,
            help="0-shot by default; on a CPU about a second per question for a 1.5B model, less for smaller ones.",
        ) and mmlu_offered
        if use_mmlu:
            mmlu_task_inputs()
            fmt = format_input(loaded.info.params_total)
            per_subject_default = min(default_questions_per_subject(fmt), bounds["mmlu_per_subject"][1])
            left, right = st.columns(2)
            left.number_input(
                "Questions per subject", *bounds["mmlu_per_subject"],
                **remembered("mmlu_per_subject", per_subject_default, bounds["mmlu_per_subject"]),
                help=f"{default_questions_per_subject('letter')} by default in letter format ({57 * default_questions_per_subject('letter')} "
                f"questions: a 95 % CI of about ± 6 pp on accuracy, and much tighter on a pruned-minus-unpruned difference, "
                f"which is paired per question); {default_questions_per_subject('cloze')} in cloze format.",
            )
            right.number_input("Shots (k)", *bounds["mmlu_shots"], **remembered("mmlu_shots", 0, bounds["mmlu_shots"]))
            st.caption("k-shot: the first k questions of each subject are held out as exemplars and are not scored.")
    generative_inputs(loaded)
    return chosen_evaluation_set(loaded)
