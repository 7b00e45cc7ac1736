"""When a difference between two scores is more than noise: confidence intervals and two-standard-error tests."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..core.errors import SettingError
from ..core.formatting import format_number
from ..data.mmlu import LETTERS
from .mmlu import MMLU_VALUE_COLUMNS
from .results import Z_95, EvaluationResult, proportion_interval


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


# the per-item column whose mean each metric is (MMLU: per question; perplexity: mean NLL per window)
ITEM_COLUMNS = {**MMLU_VALUE_COLUMNS["letter"], **MMLU_VALUE_COLUMNS["cloze"], "nll": "nll", "pass@1": "correct", "exact_match": "correct"}
# the columns that name an item, and the settings that fix the items, checked equal before two results are paired
ITEM_IDENTITY = ("subject", "answer", "item")
ITEM_SETTINGS = ("split", "windows", "seq_len", "data_fingerprint", "format", "shots", "per_subject", "half", "source",
                 "per_task", "prompt_format")


def same_items(first: EvaluationResult, second: EvaluationResult) -> bool:
    """Whether two results scored the same items in the same order: same task and settings that fix the items,
    same count, and the same subject and gold answer item by item (MMLU)."""
    a, b = first.items, second.items
    if first.task != second.task or len(a) != len(b) or any(first.settings.get(k) != second.settings.get(k) for k in ITEM_SETTINGS):
        return False
    identity = [name for name in ITEM_IDENTITY if name in a and name in b]
    return not identity or a[identity].reset_index(drop=True).equals(b[identity].reset_index(drop=True))


def paired_difference(first: EvaluationResult, second: EvaluationResult, metric: str) -> tuple[float, float] | None:
    """``(d, se)``: the mean per-item difference ``second − first`` of ``metric`` and its standard error
    ``sd(differences) / sqrt(n)``, where both results scored the same items; ``None`` where they did not.

    Two plans scored on the same questions or windows make correlated errors, so the paired standard error is
    much tighter than the combined ``sqrt(se_1² + se_2²)`` of two independent samples (a paired t-test's).
    Perplexity is paired on its per-window NLL (:func:`noise_metric`).
    """
    column = ITEM_COLUMNS.get(noise_metric(metric))
    a, b = first.items, second.items
    if column is None or column not in a or column not in b or len(a) < 2 or not same_items(first, second):
        return None
    differences = b[column].to_numpy(dtype=float) - a[column].to_numpy(dtype=float)
    return float(differences.mean()), float(differences.std(ddof=1) / math.sqrt(len(differences)))


def difference_and_noise(first: EvaluationResult, second: EvaluationResult, metric: str) -> tuple[str, float, float, bool]:
    """``(judged metric, difference second − first, its standard error, paired)``: paired where the two results
    scored the same items (:func:`paired_difference`), else from the two standard errors combined.

    Raises:
        SettingError: ``metric`` is missing from either result.
    """
    if metric not in first.metrics or metric not in second.metrics:
        raise SettingError(f"Metric '{metric}' is not in both results; compare a metric both evaluations report.")
    judged = noise_metric(metric)
    if judged not in first.metrics or judged not in second.metrics:
        judged = metric
    paired = paired_difference(first, second, judged)
    if paired is not None:
        return judged, paired[0], paired[1], True
    se = math.hypot(first.stderr.get(judged, math.nan), second.stderr.get(judged, math.nan))
    return judged, second.metrics[judged] - first.metrics[judged], se, False


def within_noise(first: EvaluationResult, second: EvaluationResult, metric: str, sigmas: float = 2.0) -> bool:
    """Whether two results of one metric differ by less than ``sigmas`` standard errors of their difference.

    The error is paired where both scored the same items, else combined (:func:`difference_and_noise`); it is
    judged on :func:`noise_metric`'s scale (perplexity by its NLL). Without a standard error (fewer than two
    questions or windows) no difference can be told from noise, and no difference at all is never a change,
    so the answer is then ``True``.

    Raises:
        SettingError: ``metric`` is missing from either result.
    """
    _, difference, se, _ = difference_and_noise(first, second, metric)
    return math.isnan(se) or difference == 0 or abs(difference) < sigmas * se


def perplexity_change(baseline: EvaluationResult, pruned: EvaluationResult) -> tuple[float, float, float]:
    """``(change, low, high)``: the relative change of perplexity from ``baseline`` to ``pruned`` and its 95 % CI, in %.

    Perplexity is ``exp(mean NLL)``, so its ratio is ``exp(d)`` for the NLL difference ``d`` (nats per token), and the
    interval is ``exp(d ± 1.96 se) − 1`` with ``se`` paired per window where both scored the same windows
    (:func:`difference_and_noise`). Without a standard error the interval is NaN.
    """
    _, difference, se, _ = difference_and_noise(baseline, pruned, "perplexity")
    halfwidth = confidence_halfwidth(se)
    return tuple(100 * math.expm1(difference + offset) for offset in (0.0, -halfwidth, halfwidth))


def with_ci(value: float, stderr: float, scale: float = 1.0, digits: int = 2, unit: str = "", n: int | None = None) -> str:
    """``"12.34 ± 1.10"``: ``value × scale`` and its 95 % CI half-width 1.96 × stderr × scale (no interval where
    the standard error is NaN). ``scale=100, unit=" %"`` writes a fraction as a percentage.

    ``n``: ``value`` is a share of ``n`` items. Where the normal interval would reach past 0 or 1 (or has no width,
    at 0/n and n/n) it is no interval at all, and Wilson's is written instead as a range:
    ``"0.0 % (95 % CI 0.0 to 16.1 %)"`` (:func:`~pruneviz.evaluation.results.proportion_interval`).
    """
    text = f"{format_number(value * scale, digits)}{unit}"
    if math.isnan(stderr):
        return text
    halfwidth = confidence_halfwidth(stderr)
    if n is not None and (halfwidth == 0 or value - halfwidth < 0 or value + halfwidth > 1):
        low, high = proportion_interval(value, n)
        return f"{text} (95 % CI {format_number(low * scale, digits)} to {format_number(high * scale, digits)}{unit})"
    return f"{text} ± {format_number(halfwidth * scale, digits)}{unit}"


def ci_caption(stderr: float) -> str:
    """``"95 % CI ± 1.10"`` (1.96 × stderr), or why there is no interval (a single window)."""
    if math.isnan(stderr):
        return "no confidence interval from a single window"
    return f"95 % CI ± {format_number(confidence_halfwidth(stderr))}"


def noise_verdict(baseline: EvaluationResult, pruned: EvaluationResult, metric: str, what: str) -> str | None:
    """A warning sentence when ``pruned`` and ``baseline`` differ in ``metric`` by less than two standard errors of
    their difference (:func:`within_noise`), else ``None``.

    Args:
        what: the items counted, plural (``"windows"``, ``"questions"``), for the sentence.
    """
    if not within_noise(baseline, pruned, metric):
        return None
    judged, difference, se, paired = difference_and_noise(baseline, pruned, metric)
    errors = f"standard errors of the paired per-{what.removesuffix('s')} differences" if paired else "combined standard errors"
    if math.isnan(se):
        bound = f"no standard error with fewer than 2 {what}"
        if difference == 0:
            return f"The {judged} of the pruned and unpruned model is the same on these {what}; with {bound}, no noise level can be told. Evaluate more {what} to see one."
        return f"The {judged} of the pruned and unpruned model differ by {abs(difference):.3g}: within noise ({bound}). Evaluate more {what} before reading anything into it."
    if difference == 0 and se == 0:
        return f"The pruned and unpruned model score each of these {what} alike ({judged} unchanged on every one); evaluate more {what} to see a difference."
    if difference == 0:
        return (f"The {judged} of the pruned and unpruned model is the same on these {what}; a difference smaller than the "
                f"noise (2 {errors}, {2 * se:.3g}) would not show. Evaluate more {what} to see one.")
    return (
        f"The {judged} of the pruned and unpruned model differ by {abs(difference):.3g}: within noise (less than 2 {errors}, "
        f"{2 * se:.3g}). Evaluate more {what} before reading anything into it."
    )



def answer_changes(baseline: EvaluationResult, pruned: EvaluationResult) -> tuple[dict[str, float], dict[str, float]] | None:
    """What pruning did to the answers themselves, beyond accuracy (Dutta et al. 2024, "Accuracy is not all you need").

    On MMLU or generative results that scored the same items (:func:`paired_difference`'s identity check):

    * ``flips``: the share of items whose answer changed (MMLU: the chosen letter; generative: the number, the
      brackets or the code written); ``flips_lost`` / ``flips_gained``: the share that went from right to wrong /
      wrong to right (the accuracy changes by ``gained − lost``);
    * ``kl`` (MMLU only): the mean over questions of KL(unpruned ‖ pruned) between the two models' distributions
      over the four answers (a softmax of the per-choice scores: letter log-probabilities or answer
      log-likelihoods), in nats.

    Returns:
        ``(metrics, stderr)``: the standard error of a share is ``sqrt(p (1 − p) / (n − 1))``, of ``kl`` the
        sample standard error of its mean; ``None`` for other results, or results of other items.
    """
    a, b = baseline.items, pruned.items
    scores = [f"score_{letter}" for letter in LETTERS]
    if any(column not in a or column not in b for column in ("pred", "correct")) or len(a) == 0 or not same_items(baseline, pruned):
        return None
    n = len(a)
    changed = a["pred"].to_numpy() != b["pred"].to_numpy()
    right_before, right_after = a["correct"].to_numpy() > 0, b["correct"].to_numpy() > 0
    shares = {
        "flips": float(changed.mean()),
        "flips_lost": float((right_before & ~right_after).mean()),
        "flips_gained": float((~right_before & right_after).mean()),
    }
    stderr = {name: math.sqrt(v * (1 - v) / (n - 1)) if n > 1 else math.nan for name, v in shares.items()}
    if any(column not in a or column not in b for column in scores):
        return shares, stderr
    p = torch.log_softmax(torch.tensor(a[scores].to_numpy(dtype=np.float64)), 1)
    q = torch.log_softmax(torch.tensor(b[scores].to_numpy(dtype=np.float64)), 1)
    kl = (p.exp() * (p - q)).sum(1).numpy()
    stderr["kl"] = float(kl.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return {**shares, "kl": float(kl.mean())}, stderr
