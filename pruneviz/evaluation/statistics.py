"""When a difference between two scores is more than noise: confidence intervals and two-standard-error tests."""

from __future__ import annotations

import math

from ..core.errors import SettingError
from ..core.formatting import format_number
from .results import Z_95, EvaluationResult


def confidence_halfwidth(stderr: float, z: float = Z_95) -> float:
    """Half-width of the normal-approximation confidence interval, ``z × stderr`` (95 % by default; NaN where stderr is NaN).

    Source: the normal approximation lm-evaluation-harness uses for its reported standard errors.
    """
    return z * stderr


def difference_within_noise(a: float, se_a: float, b: float, se_b: float, sigmas: float = 2.0) -> bool:
    """Whether ``|a − b| < sigmas × sqrt(se_a² + se_b²)`` (``True`` when a standard error is NaN: no verdict possible).

    The two values usually come from the same questions or windows, so their errors are positively
    correlated and this test is conservative (it calls more differences noise than a paired test would).
    """
    combined = math.sqrt(se_a**2 + se_b**2)
    return math.isnan(combined) or abs(a - b) < sigmas * combined


def noise_metric(metric: str) -> str:
    """The metric on whose scale a difference in ``metric`` is judged against noise: ``nll`` for perplexity.

    Perplexity's standard error is the delta-method ``exp(nll) × se(nll)``, valid only for small
    changes; judging the difference of mean NLL (nats per token) holds at any size.
    """
    return "nll" if metric == "perplexity" else metric


def within_noise(first: EvaluationResult, second: EvaluationResult, metric: str, sigmas: float = 2.0) -> bool:
    """Whether two results of one metric differ by less than ``sigmas`` combined standard errors.

    Judged on :func:`noise_metric`'s scale (perplexity by its NLL); see :func:`difference_within_noise`.
    Without a standard error (fewer than two questions or windows) no difference can be told from
    noise, so the answer is ``True``.

    Raises:
        SettingError: ``metric`` is missing from either result.
    """
    if metric not in first.metrics or metric not in second.metrics:
        raise SettingError(f"Metric '{metric}' is not in both results; compare a metric both evaluations report.")
    judged = noise_metric(metric)
    if judged not in first.metrics or judged not in second.metrics:
        judged = metric
    return difference_within_noise(
        first.metrics[judged], first.stderr.get(judged, float("nan")),
        second.metrics[judged], second.stderr.get(judged, float("nan")), sigmas,
    )


def with_ci(value: float, stderr: float, scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
    """``"12.34 ± 1.10"``: ``value × scale`` and its 95 % CI half-width 1.96 × stderr × scale (no interval where
    the standard error is NaN). ``scale=100, unit=" %"`` writes a fraction as a percentage."""
    text = f"{format_number(value * scale, digits)}{unit}"
    if math.isnan(stderr):
        return text
    return f"{text} ± {format_number(confidence_halfwidth(stderr) * scale, digits)}{unit}"


def ci_caption(stderr: float) -> str:
    """``"95 % CI ± 1.10"`` (1.96 × stderr), or why there is no interval (a single window)."""
    if math.isnan(stderr):
        return "no confidence interval from a single window"
    return f"95 % CI ± {format_number(confidence_halfwidth(stderr))}"


def noise_verdict(baseline: EvaluationResult, pruned: EvaluationResult, metric: str, what: str) -> str | None:
    """A warning sentence when ``pruned`` and ``baseline`` differ in ``metric`` by less than two combined standard
    errors (judged on :func:`noise_metric`'s scale), else ``None``.

    Args:
        what: the items counted, plural (``"windows"``, ``"questions"``), for the sentence.
    """
    if not within_noise(baseline, pruned, metric):
        return None
    judged = noise_metric(metric)
    se = math.hypot(baseline.stderr.get(judged, math.nan), pruned.stderr.get(judged, math.nan))
    bound = f"no standard error with fewer than 2 {what}" if math.isnan(se) else f"less than 2 combined standard errors, {2 * se:.3g}"
    difference = abs(pruned.metrics[judged] - baseline.metrics[judged])
    if difference == 0:
        noise = (
            f"with {bound}, no noise level can be told" if math.isnan(se)
            else f"a difference smaller than the noise ({bound.removeprefix('less than ')}) would not show"
        )
        return f"The {judged} of the pruned and unpruned model is the same on these {what}; {noise}. Evaluate more {what} to see one."
    return (
        f"The {judged} of the pruned and unpruned model differ by {difference:.3g}: "
        f"within noise ({bound}). Evaluate more {what} before reading anything into it."
    )
