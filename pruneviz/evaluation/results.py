"""The value every evaluation returns, and the statistics shared by its aggregations."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import pandas as pd

# two-sided 95 % quantile of the standard normal distribution (confidence intervals are z × stderr)
Z_95 = 1.959963984540054
# metrics where a lower value is better (perplexity, NLL, MMLU loss, answers changed and the KL divergence from the
# unpruned model's answers); all others are accuracies
LOWER_IS_BETTER = frozenset({"perplexity", "nll", "loss", "flips", "flips_lost", "kl"})
# metrics that are never negative (their intervals are cut at 0)
NON_NEGATIVE = frozenset({"perplexity", "nll", "loss", "kl"})
# metrics that are shares of the n items (their intervals are Wilson's, :func:`proportion_interval`)
PROPORTIONS = frozenset({"acc", "acc_norm", "pass@1", "exact_match", "flips", "flips_lost", "flips_gained"})


@dataclass
class EvaluationResult:
    """One evaluation of a model under a plan.

    Attributes:
        task: ``"wiki"``, a text file, ``"mmlu[:subset]"`` or a generative task (``humaneval``, ``arithmetic``, ``parens``).
        n: questions scored (MMLU), windows (perplexity) or items (generative tasks).
        metrics: MMLU letter: ``acc`` (fraction), ``loss`` (4-way cross-entropy of the gold letter, nats);
            MMLU cloze: ``acc``, ``acc_norm``; perplexity: ``perplexity``, ``nll`` (nats/token), ``tokens``;
            HumanEval: ``pass@1``; arithmetic and brackets: ``exact_match`` (fractions). Under a plan, also the
            answer changes (``flips`` ...).
        stderr: standard error of each metric where defined (same keys).
        per_subject / per_category: MMLU tables (``subject``/``category``, ``n``, metric columns); empty otherwise.
        plan: canonical plan string (``""`` = unpruned); JSON ``prune``, as the CLI's ``--prune``.
        recovery: label of the recovery applied (``None`` = none); JSON ``recover``.
        seconds: wall time of the computation (not of a cache hit).
        settings: every parameter that defined the evaluation, plus notes (e.g. exemplar hold-out), the model's
            ``dtype``, and ``resumed``: the questions or windows read from checkpoints an earlier, unfinished run
            left (absent when none were; ``seconds`` then covers only the rest).
        items: per-question or per-window results.
        from_cache: whether this value was read from the result cache.
    """

    task: str
    n: int
    metrics: dict[str, float]
    stderr: dict[str, float]
    plan: str
    seconds: float
    settings: dict
    items: pd.DataFrame
    per_subject: pd.DataFrame = field(default_factory=pd.DataFrame)
    per_category: pd.DataFrame = field(default_factory=pd.DataFrame)
    recovery: str | None = None
    from_cache: bool = False

    @property
    def headline(self) -> str:
        """The metric the task is judged by: ``perplexity`` (text), ``pass@1`` (HumanEval), ``exact_match``
        (arithmetic, brackets) or ``acc`` (MMLU)."""
        return next((name for name in ("perplexity", "pass@1", "exact_match") if name in self.metrics), "acc")

    @property
    def accuracy_metrics(self) -> list[str]:
        """The accuracy columns of a result: ``acc``, and ``acc_norm`` in cloze format (MMLU), ``pass@1`` or
        ``exact_match`` (generative tasks); none for text."""
        return [name for name in ("acc", "acc_norm", "pass@1", "exact_match") if name in self.metrics]

    def confidence_interval(self, metric: str) -> tuple[float, float]:
        """The 95 % CI of ``metric``: Wilson's for a share of the n items (:data:`PROPORTIONS`, defined from one item
        on), else the normal approximation ``value ± 1.96 stderr``, cut at 0 for :data:`NON_NEGATIVE` metrics (NaN
        bounds where there is no standard error, e.g. one window)."""
        value, stderr = self.metrics[metric], self.stderr.get(metric, math.nan)
        if metric in PROPORTIONS:
            return proportion_interval(value, self.n)
        low = value - Z_95 * stderr
        return (max(low, 0.0) if metric in NON_NEGATIVE else low), value + Z_95 * stderr

    def to_json(self) -> dict:
        """The CLI's JSON document: ``task, n, metrics, stderr, ci95, per_subject, per_category, prune, recover,
        seconds``, and for a generative task ``items``: each item's completion, answer and outcome. ``ci95`` holds
        the 95 % CI (:meth:`confidence_interval`) of each metric that has a standard error (not ``tokens``, a count);
        ``null`` bounds where the normal approximation has no standard error (one window). A value that is not a number (the standard error of a
        single item) is ``null``, so that strict JSON readers accept the document."""
        document = {
            "task": self.task,
            "n": self.n,
            "metrics": self.metrics,
            "stderr": self.stderr,
            "ci95": {name: list(self.confidence_interval(name)) for name in self.metrics if name in self.stderr},
            "per_subject": _records(self.per_subject, "subject"),
            "per_category": _records(self.per_category, "category"),
            "prune": self.plan,
            "recover": self.recovery,
            "seconds": round(self.seconds, 3),
            "settings": self.settings,
            "from_cache": self.from_cache,
        }
        if "completion" in self.items:
            document["items"] = self.items.to_dict("records")
        return json_ready(document)


def json_ready(value):
    """``value`` with every float that is not finite (NaN, ±inf) replaced by ``None``, in nested dicts, lists and
    tuples: Python's ``json`` writes them as bare ``NaN``, which is not JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    return value


def _records(table: pd.DataFrame, key: str) -> dict:
    return {
        row[key]: {k: int(v) if k == "n" else float(v) for k, v in row.items() if k not in (key, "category")}
        for row in table.to_dict("records")
    }


def proportion_stderr(p: float, n: int) -> float:
    """Sample standard error of a proportion, ``sqrt(p (1 - p) / (n - 1))`` (as lm-eval-harness reports); NaN for n < 2."""
    return math.sqrt(p * (1 - p) / (n - 1)) if n > 1 else float("nan")


def proportion_interval(p: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a share ``p`` of ``n`` items (95 % by default); NaN bounds for n < 1.

    Unlike ``p ± z × stderr`` it has width at 0/n and n/n and stays inside [0, 1]: at 0 of 20 it is 0 to 16.1 %.
    Source: Wilson (1927), "Probable inference, the law of succession, and statistical inference"; Brown, Cai and
    DasGupta (2001) recommend it for small n.
    """
    if n < 1 or not math.isfinite(p):
        return math.nan, math.nan
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    spread = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - spread), min(1.0, centre + spread)


def mean_stderr(values: pd.Series) -> float:
    """Standard error of a mean, ``std / sqrt(n)`` (sample std); NaN for fewer than 2 values."""
    return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else float("nan")


def comparison_json(plan: str, recovery: str | None, pairs: dict[str, tuple[EvaluationResult, EvaluationResult]]) -> str:
    """The app's evaluation download: ``{"plan", "recovery", "tasks": {task: {"unpruned": ..., "pruned": ...}}}``.

    Each result is :meth:`EvaluationResult.to_json` (the document ``pruneviz evaluate --json`` writes).
    """
    document = {
        "plan": plan, "recovery": recovery,
        "tasks": {task: {"unpruned": base.to_json(), "pruned": pruned.to_json()} for task, (base, pruned) in pairs.items()},
    }
    return json.dumps(document, indent=2, default=str, allow_nan=False)  # each result is json_ready already
