"""Evaluate a model under a plan on a task (Wikipedia or text perplexity, MMLU, generative tasks, lm-eval tasks), cached on disk."""

from __future__ import annotations

from typing import Callable, Protocol

from ..core.cache import cached_call
from ..core.errors import DataError, SettingError
from ..core.formatting import shown
from ..core.plan import PruningPlan
from ..core.progress import Progress
from ..data.generative import task_fingerprint
from ..data.mmlu import mmlu_fingerprint
from ..data.tasks import TaskSpec
from ..data.text import did_you_mean_task, load_corpus
from .generative import evaluate_generative
from .mmlu import default_format, evaluate_mmlu
from .perplexity import evaluate_perplexity
from .results import EvaluationResult
from .statistics import answer_changes

BACKENDS = ("pruneviz", "lm-eval")


class Recovery(Protocol):
    """What an evaluation reads of fitted stand-ins (:class:`pruneviz.studies.recovery.Recovery`)."""

    plan: PruningPlan
    stand_ins: dict
    label: str


def lm_eval_draws_progress(task: str, backend: str) -> bool:
    """Whether ``backend`` runs ``task`` as an lm-eval task (MMLU, a task name or YAML), which draws its own
    progress bars; a ``progress`` callback then hears only the start and the end. lm-eval's perplexity path
    (``wiki``, text files) reports each batch to the callback instead.
    """
    return backend == "lm-eval" and TaskSpec.parse(task).kind != "text"


def check_task(task: str, backend: str = "pruneviz") -> TaskSpec:
    """The parsed ``task``, where ``backend`` can evaluate it: everything :func:`evaluate` can judge without a
    model, checked before one loads (a text file is read and split here, and cached for the evaluation).

    Raises:
        SettingError: an unknown backend, or a generative task with the lm-eval backend.
        DataError: an empty or malformed spec; a text file that is missing, malformed or has an empty evaluation
            half; with the pruneviz backend, a name that is neither a built-in task nor a file (with a did-you-mean).
    """
    if backend not in BACKENDS:
        raise SettingError(f"Backend '{backend}' is unknown; use {' or '.join(BACKENDS)}.")
    spec = TaskSpec.parse(task)
    if spec.kind == "generative" and backend != "pruneviz":
        tools = "its own decoder and sandbox" if spec.spec == "humaneval" else "its own decoder"
        raise SettingError(f"{spec.label} runs on the pruneviz backend only ({tools}); drop --backend lm-eval.")
    if spec.kind == "text" or spec.kind == "lm-eval" and backend == "pruneviz" and "/" in spec.spec:
        load_corpus(spec.spec, "evaluation")  # a path names a file: its own sentence (missing, unreadable, too long)
    if spec.kind == "lm-eval" and backend == "pruneviz":
        raise DataError(
            f"'{shown(spec.spec)}' is neither a task pruneviz scores (wiki, mmlu, mmlu:<subject or category>, humaneval, "
            f"arithmetic, parens) nor an existing text file{did_you_mean_task(spec.spec)}; an lm-evaluation-harness task "
            "runs with the lm-eval backend (evaluate --backend lm-eval)."
        )
    return spec


def evaluate(
    loaded,
    plan: PruningPlan,
    task: str = "wiki",
    fmt: str = "auto",
    shots: int = 0,
    per_subject: int | None = None,
    windows: int = 16,
    seq_len: int = 256,
    mmlu_source: str = "mmlu",
    half: str = "all",
    recovery: Recovery | None = None,
    progress: Progress | None = None,
    use_cache: bool = True,
    backend: str = "pruneviz",
    partial: Callable[[EvaluationResult], None] | None = None,
    compare: bool = True,
    per_task: int | None = None,
    prompt_format: str = "auto",
) -> EvaluationResult:
    """Evaluate ``loaded`` under ``plan`` on a task (cached).

    Args:
        task: ``"wiki"`` or a text file (perplexity), ``"mmlu"`` or ``"mmlu:<subject|category>"``, a generative task
            (``"humaneval"``, ``"arithmetic"``, ``"parens"``, pruneviz backend only); with the ``lm-eval`` backend
            also any lm-eval task name or task YAML file (``per_subject`` = its ``limit``).
        fmt: MMLU format, ``"letter"``, ``"cloze"`` or ``"auto"`` (cloze under 1B parameters).
        shots, per_subject, mmlu_source, half: see :func:`pruneviz.evaluation.mmlu.evaluate_mmlu`.
        windows, seq_len: see :func:`pruneviz.evaluation.perplexity.evaluate_perplexity`.
        recovery: fitted stand-ins (:mod:`pruneviz.studies.recovery`) applied to the plan's pruned units.
        backend: ``"pruneviz"`` (its own fast evaluators) or ``"lm-eval"`` (lm-evaluation-harness on the
            same model, see :mod:`pruneviz.evaluation.lm_eval_backend`).
        partial: (pruneviz backend) called with provisional results while the evaluation runs.
        use_cache: read and write the result cache and, with the pruneviz backend, per-batch checkpoints
            (an interrupted evaluation resumes from its finished batches).
        compare: under a plan or a recovery (pruneviz backend), measure what changed against the unpruned model: on
            MMLU or a generative task also evaluate it on the same items (cached) and add ``flips``, ``flips_lost``,
            ``flips_gained`` (shares of items) and, on MMLU, ``kl`` (nats, over the four letters) to ``metrics`` and
            ``stderr`` (see :func:`pruneviz.evaluation.statistics.answer_changes`); on text, add ``kl``: KL(unpruned ‖
            pruned) of the next-token distribution over the whole vocabulary, nats per token, averaged per window.
        per_task, prompt_format: (generative tasks) the first N items, and ``auto``, ``plain`` or ``chat``, see
            :func:`pruneviz.evaluation.generative.evaluate_generative`.

    Raises:
        PlanError, DataError, SettingError, TokenizationError: as the evaluators and :func:`check_task`.
    """
    plan.validate(loaded.n_blocks)
    if recovery is not None and recovery.plan != plan:
        raise SettingError(
            f"This recovery was fitted for the plan '{recovery.plan}', not '{plan}'; evaluate it with that plan "
            "(--prune) or fit one for this plan."
        )
    spec = check_task(task, backend)
    stand_ins = recovery.stand_ins if recovery else None
    mmlu_evaluator, perplexity_evaluator = evaluate_mmlu, evaluate_perplexity
    if backend == "lm-eval":
        # imported on demand: lm-eval takes seconds to import and most sessions never use it
        from . import lm_eval_backend

        mmlu_evaluator, perplexity_evaluator = lm_eval_backend.evaluate_mmlu, lm_eval_backend.evaluate_perplexity
    if spec.is_mmlu:
        subset = spec.subset
        fmt = default_format(loaded.info.params_total) if fmt == "auto" else fmt
        engine_options = {} if backend == "lm-eval" else {"partial": partial, "checkpoint": use_cache}
        call = (mmlu_evaluator, (loaded, plan, subset, fmt, shots, per_subject, mmlu_source, half),
                dict(progress=progress, stand_ins=stand_ins, **engine_options), mmlu_fingerprint(mmlu_source))
    elif spec.kind == "generative":
        call = (evaluate_generative, (loaded, plan, spec.spec, per_task, prompt_format),
                dict(progress=progress, stand_ins=stand_ins, checkpoint=use_cache, partial=partial), task_fingerprint(spec.spec))
    elif backend == "lm-eval" and spec.kind == "lm-eval":
        call = (lm_eval_backend.evaluate_task, (loaded, plan, task, shots, per_subject),
                dict(progress=progress, stand_ins=stand_ins), lm_eval_backend.task_fingerprint(task))
    else:
        engine_options = {} if backend == "lm-eval" else {
            "checkpoint": use_cache, "partial": partial, "kl": compare and bool(plan or recovery is not None),
        }
        call = (perplexity_evaluator, (loaded, plan, spec.spec, windows, seq_len),
                dict(progress=progress, stand_ins=stand_ins, **engine_options), load_corpus(spec.spec, "evaluation").fingerprint)
    function, args, kwargs, content = call
    result, hit = cached_call(function, args, kwargs, use_cache, ignore=("progress", "partial", "checkpoint"), content=content)
    result.from_cache = hit
    result.recovery = recovery.label if recovery else None
    result.settings.setdefault("backend", backend)
    result.settings["dtype"] = loaded.dtype_name
    # lm-eval's items hold no per-choice scores to compare
    if compare and backend == "pruneviz" and spec.kind in ("mmlu", "generative") and (plan or recovery is not None):
        unpruned = evaluate(
            loaded, PruningPlan(), task, fmt, shots, per_subject, windows, seq_len, mmlu_source, half,
            progress=progress, use_cache=use_cache, backend=backend, compare=False, per_task=per_task, prompt_format=prompt_format,
        )
        changes = answer_changes(unpruned, result)
        if changes is not None:
            result.metrics.update(changes[0])
            result.stderr.update(changes[1])
    return result
