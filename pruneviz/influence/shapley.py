"""Adaptive influence: Shapley values of units for a task objective (Siddiqui et al. 2024, §3.2).

A subnetwork is the model with a set ``S`` of units present and the rest pruned; its statistic
``v(S)`` is the mean objective (:mod:`pruneviz.influence.objectives`) on a dataset, lower = better. Estimators:

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
:func:`pruneviz.engine.incremental.decoder_states` with a store of the run's own: blocks before a plan's first
pruned unit (more generally, before the first block where it differs from a plan already evaluated on the
batch) are not recomputed.

Long runs resume and scale out (:func:`adaptive_influence` with ``use_cache=True``): every ``v(S)`` is
cached on its own as soon as it is complete (key: model fingerprint, a digest of the objective's data,
the objective, the batching and the subnetwork's plan), so a cancelled or restarted run recomputes only
the subnetworks it had not finished. Under ``torchrun``/``accelerate launch`` (:mod:`pruneviz.core.distributed`)
the subnetworks of each step are split over the processes and their values gathered; each value is
computed whole by one process, so the result equals a single process's exactly.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch

from ..core import distributed
from ..core.cache import cached, make_key
from ..core.digest import tensor_digest
from ..core.errors import SettingError
from ..core.gating import apply_plan
from ..core.plan import PruningPlan, Unit
from ..core.progress import Progress
from ..engine.hidden_store import HiddenStateStore
from ..engine.incremental import BlockWork, counting_blocks, decoder_states, private_store, using_store
from .objectives import ObjectiveData, objective_sum, scored_logits
from .static import CSV_COLUMNS

ESTIMATORS = ("loo", "subsample", "permutation")
# subnetworks evaluated together per pass over the data; with several batches each pass repeats the full
# model's reference forward, with one batch that forward is shared by every pass
CHECKPOINT_PLANS = 16


@dataclass(frozen=True)
class AdaptiveMetric:
    """An adaptive metric: influence = -Shapley value of a unit for a task objective.

    Attributes:
        name: registry key and CSV ``metric`` value.
        objective: ``"loss"`` or ``"logit"`` (see :mod:`pruneviz.influence.objectives`).
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
        subnetworks: distinct subnetworks the estimator used (computed now or read from the cache).
        count: block forwards run (``computed``; one block on one batch = 1) and skipped by prefix reuse
            (``reused``), summed over the processes of a data-parallel run; subnetworks read from the cache
            cost none. ``count.naive`` is what the same evaluations cost without prefix reuse.
        seconds: wall time.
        total_effect: ``v(all) - v(none)`` where it was computed (``permutation``), else NaN.
        resumed: of the ``subnetworks``, those already in the cache when the run started (left by an earlier,
            interrupted or overlapping run): the run resumed from them instead of computing them.
    """

    table: pd.DataFrame
    estimator: str
    subnetworks: int
    count: BlockWork
    seconds: float
    total_effect: float = float("nan")
    resumed: int = 0


def _plan_work(plan: PruningPlan, n_blocks: int, reuse_prefix: bool) -> int:
    """Work units of evaluating ``plan`` on one batch: the sublayers it computes (present ones from its
    first pruned block on; a pruned sublayer costs next to nothing) plus one for the output head."""
    start = plan.first_layer() if reuse_prefix else 0
    if start is None:
        return 1
    return 1 + 2 * (n_blocks - start) - sum(1 for layer, _ in plan.pruned if layer >= start)


def _evaluation_work(plans: list[PruningPlan], n_batches: int, n_blocks: int, reuse_prefix: bool) -> int:
    """Work units of :func:`_evaluate` on ``plans``: full reference passes plus every plan on every batch."""
    if not plans:
        return 0
    passes = 1 if n_batches == 1 else math.ceil(len(plans) / CHECKPOINT_PLANS) * n_batches
    return passes * (2 * n_blocks + 1) + n_batches * sum(_plan_work(p, n_blocks, reuse_prefix) for p in plans)


def _evaluate(
    loaded,
    data: ObjectiveData,
    objective: str,
    plans: list[PruningPlan],
    batch_size: int,
    store: HiddenStateStore | None,
    count: BlockWork,
    finished: Callable[[PruningPlan, float], None],
    ticked: Callable[[int], None],
) -> None:
    """Evaluate distinct ``plans`` in passes of :data:`CHECKPOINT_PLANS`; ``finished(plan, v)`` as soon as a
    plan's mean objective is complete, ``ticked(work)`` with the work units done so far (see
    :func:`_evaluation_work`) after every plan on every batch (either callback may raise).

    ``store`` keeps the block-boundary states between plans (``None``: every block of every plan is run).
    """
    batches = range(0, len(data), batch_size)
    shared = None  # with one batch, its reference logits serve every pass
    work = 0

    def final_hidden(part: ObjectiveData, plan: PruningPlan) -> torch.Tensor:
        # the unpruned states are where most plans resume: pinned, a long run's own states never evict them
        with torch.no_grad(), apply_plan(plan):
            return decoder_states(loaded, part.input_ids, part.attention_mask, pin=not plan)

    with using_store(store), counting_blocks(count):
        for first in range(0, len(plans), CHECKPOINT_PLANS):
            chunk = plans[first : first + CHECKPOINT_PLANS]
            sums = np.zeros(len(chunk))
            for number, start in enumerate(batches):
                if shared is None:
                    part = data.select(start, start + batch_size)
                    reference = scored_logits(loaded, final_hidden(part, PruningPlan()), part)
                    work += 2 * loaded.n_blocks + 1
                    if len(batches) == 1:
                        shared = part, reference
                else:
                    part, reference = shared
                for index, plan in enumerate(chunk):
                    hidden = final_hidden(part, plan)
                    sums[index] += objective_sum(objective, scored_logits(loaded, hidden, part), reference, part)
                    if number == len(batches) - 1:
                        finished(plan, float(sums[index] / len(data.rows)))
                    work += _plan_work(plan, loaded.n_blocks, store is not None)
                    ticked(work)


def subnetwork_values(
    loaded,
    data: ObjectiveData,
    objective: str,
    plans: list[PruningPlan],
    batch_size: int = 8,
    reuse_prefix: bool = True,
    count: BlockWork | None = None,
    progress: Progress | None = None,
) -> list[float]:
    """Mean objective of the model under each plan (nats for ``loss``; logit units for ``logit``).

    Nothing is cached here (see :func:`adaptive_influence` for the cached, data-parallel path).

    Args:
        data: dataset with scored positions.
        objective: ``"loss"`` or ``"logit"``.
        plans: subnetworks to evaluate (duplicates are evaluated once).
        batch_size: sequences per forward pass.
        reuse_prefix: resume each plan from the deepest block-boundary state it shares with a plan already
            evaluated on the batch, the unpruned model's at least (``False``: recompute every block).
        count: accumulates block forwards computed and reused.
        progress: ``progress(done, total)`` in work units (one attention or MLP sublayer, or the output
            head, on one batch: units of roughly equal cost); may raise ``Cancelled``.

    Returns:
        one value per plan, in order.
    """
    unique = list(dict.fromkeys(plans))
    count = count if count is not None else BlockWork()
    values: dict[PruningPlan, float] = {}
    total = _evaluation_work(unique, math.ceil(len(data) / batch_size), loaded.n_blocks, reuse_prefix)

    def ticked(work: int) -> None:
        if progress:
            progress(work, total)

    store = private_store() if reuse_prefix else None
    _evaluate(loaded, data, objective, unique, batch_size, store, count, values.__setitem__, ticked)
    return [values[plan] for plan in plans]


def data_digest(data: ObjectiveData) -> str:
    """Digest of everything in ``data`` an objective reads (tokens, mask, scored positions, targets), for cache keys."""
    tensors = {"input_ids": data.input_ids, "attention_mask": data.attention_mask, "rows": data.rows,
               "positions": data.positions, "targets": data.targets, "gold": data.gold}
    return tensor_digest([(name, t) for name, t in tensors.items() if t is not None], prefix=data.fingerprint)


class _NotCached(Exception):
    """Raised by a lookup's compute function: the value is not in the cache."""


def _absent():
    raise _NotCached


class _Subnetworks:
    """``v(S)`` for one adaptive-influence run: cached subnetwork by subnetwork, split over processes,
    with progress over the whole run.

    ``calls`` are the plan lists the estimator will ask for, in order (for the progress total and to
    look every planned subnetwork up in the cache once, up front).
    """

    def __init__(self, loaded, data, objective, base, batch_size, reuse_prefix, use_cache, progress, calls):
        self.loaded, self.data, self.objective, self.base = loaded, data, objective, base
        self.batch_size, self.reuse_prefix, self.use_cache, self.progress = batch_size, reuse_prefix, use_cache, progress
        self.n_batches = math.ceil(len(data) / batch_size)
        self.key_parts = ("subnetwork", loaded.fingerprint, data_digest(data), objective, batch_size, reuse_prefix)
        self.count = BlockWork()
        self.store = private_store() if reuse_prefix else None
        self.known: dict[PruningPlan, float] = {}
        self.used: set[PruningPlan] = set()
        planned = list(dict.fromkeys(base | p for call in calls for p in call))
        found = {}
        for plan in distributed.shard(planned) if use_cache else []:
            try:
                found[plan] = cached(self._key(plan), _absent)[0]
            except _NotCached:
                pass
        # every process must agree on what is known, or their shares of the missing plans would differ
        for share in distributed.gather(found):
            self.known.update(share)
        self.found_at_start = set(self.known)
        self.done, self.total = 0, self._run_cost(calls)
        self._report(self.done)

    def _key(self, plan: PruningPlan) -> str:
        return make_key(*self.key_parts, str(plan))

    def _cost(self, plans: list[PruningPlan]) -> int:
        return _evaluation_work(plans, self.n_batches, self.loaded.n_blocks, self.reuse_prefix)

    def _missing(self, plans: list[PruningPlan], known) -> list[PruningPlan]:
        return [p for p in dict.fromkeys(plans) if p not in known]

    def _call_cost(self, missing: list[PruningPlan]) -> int:
        """Work units of evaluating ``missing``, summed over every process's share."""
        size = distributed.world().size
        return sum(self._cost(missing[rank::size]) for rank in range(size))

    def _run_cost(self, calls) -> int:
        known, total = set(self.known), 0
        for call in calls:
            missing = self._missing([self.base | p for p in call], known)
            total += self._call_cost(missing)
            known.update(missing)
        return total

    def _report(self, done: int) -> None:
        if self.progress:
            self.progress(min(done, self.total), self.total)

    def __call__(self, plans: list[PruningPlan]) -> list[float]:
        plans = [self.base | p for p in plans]
        self.used.update(plans)
        missing = self._missing(plans, self.known)
        mine = distributed.shard(missing)
        call_cost, my_cost = self._call_cost(missing), self._cost(mine)
        fresh: dict[PruningPlan, float] = {}

        def finished(plan: PruningPlan, value: float) -> None:
            fresh[plan] = value
            if self.use_cache:
                cached(self._key(plan), lambda: value)

        def ticked(work: int) -> None:
            # this process's share done, scaled to the whole step (the other processes run alongside)
            self._report(self.done + work * call_cost // max(my_cost, 1))

        _evaluate(self.loaded, self.data, self.objective, mine, self.batch_size, self.store, self.count, finished, ticked)
        for share in distributed.gather(fresh):
            self.known.update(share)
        self.done += call_cost
        self._report(self.done)
        return [self.known[p] for p in plans]

    def finish(self) -> BlockWork:
        """Report the run complete (an early stop skips planned work) and return the block forwards computed and
        reused by all processes."""
        self.done = self.total
        self._report(self.done)
        counts = distributed.gather((self.count.computed, self.count.reused))
        return BlockWork(sum(c[0] for c in counts), sum(c[1] for c in counts))


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
    use_cache: bool = False,
) -> AdaptiveResult:
    """Shapley-value influence of ``units`` for ``objective`` on ``data``.

    Runs data-parallel when :func:`pruneviz.core.distributed.init` has joined a process group: every process
    must call it with the same arguments; all of them return the same result.

    Args:
        units: the players (blocks or sublayers); the rest of the model is always present.
        objective: ``"loss"`` or ``"logit"`` (see :mod:`pruneviz.influence.objectives`).
        estimator: ``"loo"``, ``"subsample"`` or ``"permutation"``.
        fraction: ``subsample``: fraction of units kept in each random subnetwork (0 < f < 1).
        budget: ``subsample``: number of subnetworks; ``permutation``: most antithetic permutation pairs.
        tolerance: ``permutation``: stop once every unit's standard error is at most this (same unit as
            the objective); 0 = always use the whole budget.
        seed: random seed of the sampled subnetworks / permutations.
        base: units pruned in every subnetwork (iterative pruning: the game is played on the rest).
        reuse_prefix: resume each plan from the deepest block-boundary state it shares with a plan already
            evaluated on the batch, the unpruned model's at least (results are identical).
        progress: ``progress(done, total)`` over the whole run, in work units of roughly equal cost (one
            attention or MLP sublayer, or the output head, on one batch), so that elapsed / done estimates
            the time left; subnetworks found in the cache are left out of the total. It may raise
            ``Cancelled``; a rerun with ``use_cache`` then resumes from the subnetworks already computed.
        use_cache: read and write every subnetwork's value in the result cache (:mod:`pruneviz.core.cache`).

    Returns:
        :class:`AdaptiveResult`; metric name ``"<objective>_shapley"``.

    Raises:
        SettingError: unknown objective or estimator, fraction outside (0, 1), budget < 1, a negative tolerance, no units.
    """
    if objective not in ("loss", "logit"):
        raise SettingError(f"Objective '{objective}' is unknown; use loss or logit.")
    if estimator not in ESTIMATORS:
        raise SettingError(f"Estimator '{estimator}' is unknown; use one of {', '.join(ESTIMATORS)}.")
    if not units:
        raise SettingError("There are no units to score; choose a granularity with at least one unit.")
    if budget < 1 or not 0 < fraction < 1:
        raise SettingError(f"Need budget >= 1 and 0 < fraction < 1 (got budget={budget}, fraction={fraction}).")
    if not tolerance >= 0:
        raise SettingError(f"The tolerance is a standard error, so it cannot be negative (got {tolerance}); use 0 to spend the whole budget.")
    started = time.perf_counter()
    n = len(units)
    rng = random.Random(seed)
    total_effect = float("nan")
    if estimator == "loo":
        calls = [[PruningPlan()] + [PruningPlan.of([u]) for u in units]]
    elif estimator == "subsample":
        keep = max(1, min(n - 1, round(fraction * n)))
        masks = [set(rng.sample(range(n), keep)) for _ in range(budget)]
        calls = [[_plan_without(units, m) for m in masks]]
    else:
        orders = []
        for _ in range(budget):
            order = list(range(n))
            rng.shuffle(order)
            orders.append(order)
        calls = [[PruningPlan(), _plan_without(units, set())]] + [_pair_plans(units, order) for order in orders]
    values = _Subnetworks(loaded, data, objective, base, batch_size, reuse_prefix, use_cache, progress, calls)
    try:
        if estimator == "loo":
            full, *without = values(calls[0])
            shapley, stderr = full - np.array(without), np.full(n, np.nan)
        elif estimator == "subsample":
            stats = np.array(values(calls[0]))
            present = np.array([[i in m for i in range(n)] for m in masks])  # [budget, n]
            shapley, stderr = _difference_of_means(stats, present)
        else:
            shapley, stderr, total_effect = _permutation_shapley(n, units, values, orders, tolerance)
    finally:
        if values.store is not None:
            values.store.clear()  # a cancelled run frees its states now, not when its traceback is collected
    count = values.finish()
    table = _table(units, shapley, stderr, f"{objective}_shapley", data.label)
    resumed = len(values.used & values.found_at_start)
    return AdaptiveResult(table, estimator, len(values.used), count, time.perf_counter() - started, total_effect, resumed)


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


def _pair_plans(units: list[Unit], order: list[int]) -> list[PruningPlan]:
    """The subnetworks along a permutation and along its reverse: units present = each prefix (n + n plans)."""
    return [_plan_without(units, set(p[: k + 1])) for p in (order, order[::-1]) for k in range(len(order))]


def _permutation_shapley(n, units, values, orders, tolerance) -> tuple[np.ndarray, np.ndarray, float]:
    """Antithetic Monte-Carlo permutation Shapley over ``orders``; returns (shapley, stderr, v(all) - v(none))."""
    samples: list[np.ndarray] = []  # one row per antithetic pair: mean marginal of each unit
    stderr = np.full(n, np.nan)
    v_all, v_none = values([PruningPlan(), _plan_without(units, set())])
    for order in orders:
        stats = values(_pair_plans(units, order))
        pair = []
        for half, permutation in enumerate((order, order[::-1])):
            path = [v_none] + stats[half * n : (half + 1) * n]
            marginal = np.empty(n)
            for k, unit in enumerate(permutation):
                marginal[unit] = path[k + 1] - path[k]
            pair.append(marginal)
        samples.append((pair[0] + pair[1]) / 2)
        if len(samples) >= 2:
            stderr = np.stack(samples).std(axis=0, ddof=1) / math.sqrt(len(samples))
            if tolerance > 0 and stderr.max() <= tolerance:
                break
    return np.stack(samples).mean(axis=0), stderr, v_all - v_none
