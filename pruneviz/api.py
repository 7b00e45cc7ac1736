"""The programmatic entry points that the CLI and the app call: influence, evaluation (generative tasks included),
rankings, recovery.

A facade: each name lives in the layer that owns it (see docs/ARCHITECTURE.md) and is re-exported here,
so that callers above the library (the CLI, the app's pages) have one module to import. Every call
that computes is cached on disk under a key that covers the model fingerprint (weights, dtype,
device type), the data fingerprint, the plan and every parameter, so repeating it is instant.
"""

from __future__ import annotations

from .core.cost import FLOPS_CONTEXT, PlanCost, plan_cost
from .core.plan import MEASURED_SELECTIONS, RANKED_SELECTIONS, UNIT_SELECTIONS, unit_selection
from .data.generative import GENERATIVE_TASKS, PROMPT_FORMATS, TASK_LABEL, TASK_METRIC
from .data.tasks import TaskSpec
from .engine.decoding import GenerationRequest, generate_requests
from .engine.incremental import shared_store
from .evaluation.background import cancel_baselines, start_baselines
from .evaluation.results import Z_95, EvaluationResult, comparison_json, proportion_interval
from .evaluation.run import BACKENDS, check_task, evaluate, lm_eval_draws_progress
from .evaluation.statistics import (
    ci_caption,
    confidence_halfwidth,
    difference_and_noise,
    difference_within_noise,
    noise_metric,
    noise_verdict,
    perplexity_change,
    with_ci,
    within_noise,
)
from .influence.calibration import calibration_batch
from .influence.ranking import lowest_plan, ranked_units
from .influence.registry import METRIC_REGISTRY, METRICS, check_metrics
from .influence.run import cost_summary, influence
from .influence.static import CSV_COLUMNS
from .studies.recovery import default_calibration_documents, too_few_calibration_tokens
from .studies.recovery_report import (
    STDERR_SUFFIX,
    compare_recoveries,
    recover,
    recoveries_within_noise,
    recoveries_worse_than_none,
)


def hidden_store_usage() -> dict[str, int]:
    """Bytes held by the process-wide block-boundary state store per tier (``gpu``, ``cpu``, ``disk``) and ``entries``.

    See :mod:`pruneviz.engine.incremental`; budgets come from ``$PRUNEVIZ_STATE_{GPU,CPU,DISK}_MB``.
    """
    return shared_store().usage()


__all__ = [
    "BACKENDS", "CSV_COLUMNS", "FLOPS_CONTEXT", "GENERATIVE_TASKS", "MEASURED_SELECTIONS", "METRICS",
    "METRIC_REGISTRY", "PROMPT_FORMATS", "RANKED_SELECTIONS", "STDERR_SUFFIX", "TASK_LABEL", "TASK_METRIC",
    "UNIT_SELECTIONS", "Z_95",
    "EvaluationResult", "GenerationRequest", "PlanCost", "TaskSpec",
    "calibration_batch", "cancel_baselines", "check_metrics", "check_task", "ci_caption", "compare_recoveries", "comparison_json",
    "confidence_halfwidth", "cost_summary", "default_calibration_documents", "difference_and_noise",
    "difference_within_noise", "evaluate", "generate_requests", "hidden_store_usage", "influence",
    "lm_eval_draws_progress", "lowest_plan", "noise_metric", "noise_verdict", "perplexity_change", "plan_cost",
    "proportion_interval",
    "ranked_units", "recover", "recoveries_within_noise", "recoveries_worse_than_none", "start_baselines",
    "too_few_calibration_tokens", "unit_selection", "with_ci", "within_noise",
]
