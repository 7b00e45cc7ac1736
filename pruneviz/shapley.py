"""Adaptive influence: Shapley values of units for a task objective (Siddiqui et al. 2024, §3.2).

A subnetwork is the model with a set ``S`` of units present and the rest pruned; its statistic
``v(S)`` is the mean objective (:mod:`pruneviz.objectives`) on a dataset, lower = better. Estimators:

* ``loo`` - leave-one-out: ``Shapley_i ~ v(all) - v(all \\ {i})`` (the paper's default).
* ``subsample`` - random subnetworks that keep ``round(fraction * n)`` of the ``n`` units;
  ``Shapley_i = mean v(S) over S containing i - mean v(S) over S without i`` (as in the paper's
  official code), with a Welch standard error.
* ``permutation`` - Monte-Carlo permutation Shapley (Castro et al. 2009) with antithetic pairs
  (a permutation and its reverse): ``Shapley_i = E_pi[v(S_pi,i + i) - v(S_pi,i)]``, with a standard
  error per unit and a stopping rule on the largest one. Exact Shapley values satisfy
  ``sum_i Shapley_i = v(all) - v(none)``; each permutation's marginals sum to exactly that.

Influence = -Shapley (removing an important unit raises the objective), so ascending influence is the
pruning order, as for the static metrics. Subnetworks are evaluated batch by batch with
:class:`pruneviz.engine.PrefixRunner`: blocks before a plan's first pruned unit are never recomputed.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from .engine import ForwardCount, PrefixRunner
from .errors import SettingError
from .objectives import ObjectiveData, objective_sum, scored_logits
from .plan import PruningPlan, Unit
from .static_metrics import CSV_COLUMNS

ESTIMATORS = ("loo", "subsample", "permutation")
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class AdaptiveMetric:
    """An adaptive metric: influence = -Shapley value of a unit for a task objective.

    Attributes:
        name: registry key and CSV ``metric`` value.
        objective: ``"loss"`` or ``"logit"`` (see :mod:`pruneviz.objectives`).
        label: short axis label.
        formula: the definition (for tooltips).
        source: where the metric comes from.
    """

    name: str
    objective: str
    label: str
    formula: str
    source: str


ADAPTIVE_METRICS: dict[str, AdaptiveMetric] = {
    m.name: m
    for m in [
        AdaptiveMetric(
            "loss_shapley", "loss", "−Shapley value for the task loss",
            "influence = −Shapley value of the unit for the task loss (LM cross-entropy on text, cross-entropy "
            "of the gold letter on MMLU; nats); LOO: v(all∖i) − v(all), v = mean loss of a subnetwork",
            "Siddiqui et al. 2024, §3.2 (Shapley values of units for the loss)",
        ),
        AdaptiveMetric(
            "logit_shapley", "logit", "−Shapley value for the logit distance",
            "influence = −Shapley value of the unit for the mean L2 distance between the pruned and the full "
            "model's next-token logits; LOO: v(all∖i) − v(all), v = mean distance of a subnetwork",
            "Siddiqui et al. 2024, §3.2 (Shapley values of units for the logit distance)",
        ),
    ]
}


@dataclass
class AdaptiveResult:
    """Adaptive influences with their cost.

    Attributes:
        table: rows ``unit, layer, sublayer, metric, value, stderr, dataset`` (value = influence = -Shapley).
        estimator: ``loo``, ``subsample`` or ``permutation``.
        subnetworks: distinct subnetworks evaluated.
        count: block forwards actually run (one block on one batch = 1), with prefix reuse.
        naive_blocks: block forwards the same evaluations cost without prefix reuse.
        seconds: wall time.
        total_effect: ``v(all) - v(none)`` where it was computed (``permutation``), else NaN.
    """

    table: pd.DataFrame
    estimator: str
    subnetworks: int
    count: ForwardCount
    naive_blocks: int
    seconds: float
    total_effect: float = float("nan")


def subnetwork_values(
    loaded,
    data: ObjectiveData,
    objective: str,
    plans: list[PruningPlan],
    batch_size: int = 8,
    reuse_prefix: bool = True,
    count: ForwardCount | None = None,
    progress: Progress | None = None,
) -> list[float]:
    """Mean objective of the model under each plan (nats for ``loss``; logit units for ``logit``).

    Args:
        data: dataset with scored positions.
        objective: ``"loss"`` or ``"logit"``.
        plans: subnetworks to evaluate (duplicates are evaluated once).
        batch_size: sequences per forward pass.
        reuse_prefix: start each plan at its first pruned block (``False``: recompute every block).
        count: accumulates block forwards.
        progress: ``progress(done, total)`` over batches x plans; may raise ``Cancelled``.

    Returns:
        one value per plan, in order.
    """
    unique = list(dict.fromkeys(plans))
    sums = np.zeros(len(unique))
    count = count if count is not None else ForwardCount()
    batches = range(0, len(data), batch_size)
    total, done = len(batches) * len(unique), 0
    for start in batches:
        part = data.select(start, start + batch_size)
        runner = PrefixRunner(loaded, part.input_ids, part.attention_mask, count=count)
        reference = scored_logits(loaded, runner.final_hidden, part)
        for index, plan in enumerate(unique):
            hidden = runner.run(plan, start=None if reuse_prefix else 0)
            sums[index] += objective_sum(objective, scored_logits(loaded, hidden, part), reference, part)
            done += 1
            if progress:
                progress(done, total)
    values = dict(zip(unique, sums / len(data.rows)))
    return [float(values[plan]) for plan in plans]


def _plan_without(units: list[Unit], present: set[int]) -> PruningPlan:
    """The plan pruning every unit whose index is not in ``present``."""
    return PruningPlan.of([u for i, u in enumerate(units) if i not in present])


def _table(units: list[Unit], shapley: np.ndarray, stderr: np.ndarray, metric: str, dataset: str) -> pd.DataFrame:
    rows = [
        {"unit": str(u), "layer": u.layer, "sublayer": u.kind, "metric": metric,
         "value": -float(s), "stderr": float(e), "dataset": dataset}
        for u, s, e in zip(units, shapley, stderr)
    ]
    return pd.DataFrame(rows, columns=CSV_COLUMNS)


def adaptive_influence(
    loaded,
    data: ObjectiveData,
    units: list[Unit],
    objective: str = "loss",
    estimator: str = "loo",
    fraction: float = 0.5,
    budget: int = 64,
    tolerance: float = 0.0,
    seed: int = 0,
    base: PruningPlan = PruningPlan(),
    batch_size: int = 8,
    reuse_prefix: bool = True,
    progress: Progress | None = None,
) -> AdaptiveResult:
    """Shapley-value influence of ``units`` for ``objective`` on ``data``.

    Args:
        units: the players (blocks or sublayers); the rest of the model is always present.
        objective: ``"loss"`` or ``"logit"`` (see :mod:`pruneviz.objectives`).
        estimator: ``"loo"``, ``"subsample"`` or ``"permutation"``.
        fraction: ``subsample``: fraction of units kept in each random subnetwork (0 < f < 1).
        budget: ``subsample``: number of subnetworks; ``permutation``: most antithetic permutation pairs.
        tolerance: ``permutation``: stop once every unit's standard error is at most this (same unit as
            the objective); 0 = always use the whole budget.
        seed: random seed of the sampled subnetworks / permutations.
        base: units pruned in every subnetwork (iterative pruning: the game is played on the rest).
        reuse_prefix: skip blocks before each plan's first pruned unit (results are identical).

    Returns:
        :class:`AdaptiveResult`; metric name ``"<objective>_shapley"``.

    Raises:
        SettingError: unknown objective or estimator, fraction outside (0, 1), budget < 1, no units.
    """
    if objective not in ("loss", "logit"):
        raise SettingError(f"Objective '{objective}' is unknown; use loss or logit.")
    if estimator not in ESTIMATORS:
        raise SettingError(f"Estimator '{estimator}' is unknown; use one of {', '.join(ESTIMATORS)}.")
    if not units:
        raise SettingError("There are no units to score; choose a granularity with at least one unit.")
    if budget < 1 or not 0 < fraction < 1:
        raise SettingError(f"Need budget >= 1 and 0 < fraction < 1 (got budget={budget}, fraction={fraction}).")
    started = time.perf_counter()
    count = ForwardCount()
    evaluated: dict[PruningPlan, float] = {}

    def values(plans: list[PruningPlan]) -> list[float]:
        plans = [base | p for p in plans]
        missing = [p for p in dict.fromkeys(plans) if p not in evaluated]
        if missing:
            fresh = subnetwork_values(loaded, data, objective, missing, batch_size, reuse_prefix, count, progress)
            evaluated.update(zip(missing, fresh))
        return [evaluated[p] for p in plans]

    n = len(units)
    rng = random.Random(seed)
    total_effect = float("nan")
    if estimator == "loo":
        full, *without = values([PruningPlan()] + [PruningPlan.of([u]) for u in units])
        shapley, stderr = full - np.array(without), np.full(n, np.nan)
    elif estimator == "subsample":
        keep = max(1, min(n - 1, round(fraction * n)))
        masks = [set(rng.sample(range(n), keep)) for _ in range(budget)]
        stats = np.array(values([_plan_without(units, m) for m in masks]))
        present = np.array([[i in m for i in range(n)] for m in masks])  # [budget, n]
        shapley, stderr = _difference_of_means(stats, present)
    else:
        shapley, stderr, total_effect = _permutation_shapley(n, units, values, budget, tolerance, rng)
    naive = count.passes * loaded.n_blocks
    table = _table(units, shapley, stderr, f"{objective}_shapley", data.label)
    return AdaptiveResult(table, estimator, len(evaluated), count, naive, time.perf_counter() - started, total_effect)


def _difference_of_means(stats: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per unit: mean stat with the unit present minus mean stat without it, and its Welch standard error."""
    shapley, stderr = np.full(present.shape[1], np.nan), np.full(present.shape[1], np.nan)
    for i in range(present.shape[1]):
        with_i, without_i = stats[present[:, i]], stats[~present[:, i]]
        if len(with_i) and len(without_i):
            shapley[i] = with_i.mean() - without_i.mean()
            if len(with_i) > 1 and len(without_i) > 1:
                stderr[i] = math.sqrt(with_i.var(ddof=1) / len(with_i) + without_i.var(ddof=1) / len(without_i))
    return shapley, stderr


def _permutation_shapley(n, units, values, budget, tolerance, rng) -> tuple[np.ndarray, np.ndarray, float]:
    """Antithetic Monte-Carlo permutation Shapley; returns (shapley, stderr, v(all) - v(none))."""
    samples: list[np.ndarray] = []  # one row per antithetic pair: mean marginal of each unit
    stderr = np.full(n, np.nan)
    v_all, v_none = values([PruningPlan(), _plan_without(units, set())])
    while len(samples) < budget:
        order = list(range(n))
        rng.shuffle(order)
        pair = []
        for permutation in (order, order[::-1]):
            prefixes = [set(permutation[: k + 1]) for k in range(n)]
            stats = [v_none] + values([_plan_without(units, p) for p in prefixes])
            marginal = np.empty(n)
            for k, unit in enumerate(permutation):
                marginal[unit] = stats[k + 1] - stats[k]
            pair.append(marginal)
        samples.append((pair[0] + pair[1]) / 2)
        if len(samples) >= 2:
            stderr = np.stack(samples).std(axis=0, ddof=1) / math.sqrt(len(samples))
            if tolerance > 0 and stderr.max() <= tolerance:
                break
    return np.stack(samples).mean(axis=0), stderr, v_all - v_none
