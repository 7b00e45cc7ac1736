"""Greedy pruning curves and task trade-offs (Siddiqui et al. 2024, §4, figures 2-4).

A curve sorts units by a metric (ascending influence = least important first), removes 0..K of them
one at a time and evaluates every step on every task. In iterative mode the metric is recomputed on
the pruned model after each removal, and the next unit is the least important of those left.

Under ``torchrun``/``accelerate launch`` (:mod:`pruneviz.core.distributed`) the rankings run data-parallel
(:func:`pruneviz.influence.shapley.adaptive_influence`) and the evaluations of the steps are split over the
processes; every process returns the same table as a single process.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ..core import distributed
from ..core.errors import SettingError
from ..core.plan import RANKED_SELECTIONS, PruningPlan, Unit, unit_selection
from ..core.progress import Progress
from ..evaluation.results import EvaluationResult
from ..evaluation.run import evaluate
from ..evaluation.statistics import difference_and_noise, within_noise
from ..influence.ranking import ranked_units
from ..influence.run import influence

CURVE_COLUMNS = ["ranking", "scheme", "step", "removed", "plan", "task", "metric", "value", "stderr", "n", "dtype"]


def check_removal_count(loaded, scheme: str, count: int, what: str) -> None:
    """Refuse to remove ``count`` units of ``scheme`` before any ranking is computed (rankings can take minutes).

    A scheme has one unit per block (``block``, ``attn``, ``mlp``) or two (``both``).

    Raises:
        SettingError: an unknown scheme, or ``count`` is below 1 or above the number of units of the scheme;
            ``what`` names the setting (e.g. ``"steps K"``) in the message.
    """
    units = len(unit_selection(scheme, RANKED_SELECTIONS).units(loaded.n_blocks))
    if not 1 <= count <= units:
        raise SettingError(
            f"Cannot remove {count} units: the {scheme} scheme of this model has {units}; choose {what} from 1 to {units}."
        )


@dataclass(frozen=True)
class Ranking:
    """How units are ordered for pruning: a metric computed on a dataset.

    Attributes:
        metric: a name from :data:`pruneviz.influence.registry.METRICS`.
        data: dataset the metric is computed on (``wiki``, ``mmlu:<subset>``, a file).
        options: further :func:`pruneviz.influence.run.influence` arguments (samples, seq_len, estimator, half ...).
    """

    metric: str
    data: str = "wiki"
    options: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``"metric@data"``, the name used in tables and legends."""
        return f"{self.metric}@{self.data}"

    def order(self, loaded, scheme: str, plan: PruningPlan = PruningPlan()) -> list[Unit]:
        """Units of ``scheme`` not already in ``plan``, least important first (measured under ``plan``)."""
        table = influence(
            loaded, self.data, [self.metric], unit_selection(scheme).measured_as, plan=plan, **self.options
        )
        return [u for u in ranked_units(table, self.metric, scheme) if not set(u.sublayers()) <= plan.pruned]


@dataclass(frozen=True)
class Task:
    """An evaluation: ``wiki`` / a text file (perplexity) or ``mmlu[:subset]`` with :func:`pruneviz.evaluation.run.evaluate` options."""

    name: str
    options: dict = field(default_factory=dict)


def pruning_curve(
    loaded,
    ranking: Ranking,
    scheme: str,
    steps: int,
    tasks: list[Task],
    iterative: bool = False,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Evaluate the greedy removal of ``steps`` units.

    Args:
        ranking: the metric (and its dataset) that orders units.
        scheme: ``block``, ``attn``, ``mlp`` or ``both`` (attn and mlp sublayers in one ranking).
        steps: K, the most units removed; the curve has K + 1 points (step 0 = unpruned).
        tasks: evaluations at every step.
        iterative: recompute the ranking on the pruned model after every removal.
        progress: ``progress(done, total)`` in evaluations (one task at one step, of similar cost), counted
            from the start of the evaluation phase, after every ranking is computed (a ranking reports
            through its own ``progress`` option); in a data-parallel run, over this process's share.

    Returns:
        long table :data:`CURVE_COLUMNS`: one row per step, task and task metric (e.g. ``perplexity``,
        ``acc``, ``loss``), ``removed`` = the unit removed at that step (empty at step 0), ``n`` = the windows,
        questions or problems the value is over.

    Raises:
        SettingError: ``steps`` is below 1 or exceeds the number of units of the scheme
            (:func:`check_removal_count`).
    """
    check_removal_count(loaded, scheme, steps, "steps K")
    order = ranking.order(loaded, scheme)
    path = [(PruningPlan(), "")]  # (plan, unit removed) at every step
    for step in range(1, steps + 1):
        if iterative and step > 1:
            order = ranking.order(loaded, scheme, path[-1][0])
        unit = order[0] if iterative else order[step - 1]
        path.append((path[-1][0] | PruningPlan.of([unit]), str(unit)))
    label = ranking.label + (" (iterative)" if iterative else "")
    mine = distributed.shard([(step, task) for step in range(steps + 1) for task in tasks])
    if progress:
        progress(0, len(mine))
    evaluated = []
    for done, (step, task) in enumerate(mine, start=1):
        plan, removed = path[step]
        result = evaluate(loaded, plan, task.name, **task.options)
        evaluated.append([
            {"ranking": label, "scheme": scheme, "step": step, "removed": removed, "plan": str(plan), "task": result.task,
             "metric": metric, "value": value, "stderr": result.stderr.get(metric, float("nan")),
             "n": result.n, "dtype": loaded.dtype_name}
            for metric, value in result.metrics.items() if metric != "tokens"
        ])
        if progress:
            progress(done, len(mine))
    rows = [row for evaluation in distributed.unshard(distributed.gather(evaluated)) for row in evaluation]
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def tradeoff_matrix(
    loaded,
    rankings: list[Ranking],
    tasks: list[Task],
    scheme: str,
    count: int,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Prune ``count`` units by each ranking and evaluate every task (the paper's trade-off view).

    Returns:
        one row per ranking (``ranking`` = ``metric@data``, ``plan``, ``dtype`` = the model's), per task
        ``"<task> n"`` (questions or windows), and per task metric ``"<task> <metric>"`` (pruned),
        ``"<task> <metric> Δ"`` (pruned - unpruned), ``"<task> <metric> Δ stderr"`` (the standard error of that
        difference, paired over the items both scored, :func:`pruneviz.evaluation.statistics.difference_and_noise`;
        NaN for perplexity, which is judged by its NLL's row) and ``"<task> <metric> Δ beyond noise"`` (whether the
        difference exceeds two of those standard errors, :func:`pruneviz.evaluation.statistics.within_noise`). A
        first row ``"unpruned"`` holds the baseline.

    Raises:
        SettingError: ``count`` is below 1 or exceeds the number of units of the scheme
            (:func:`check_removal_count`).
    """
    check_removal_count(loaded, scheme, count, "K units pruned")
    entries = [("unpruned", PruningPlan())]
    entries += [(ranking.label, PruningPlan.of(ranking.order(loaded, scheme)[:count])) for ranking in rankings]
    rows, total, done = [], len(entries) * len(tasks), 0
    baseline: dict[str, EvaluationResult] = {}
    for label, plan in entries:
        row = {"ranking": label, "plan": str(plan), "dtype": loaded.dtype_name}
        for task in tasks:
            result = evaluate(loaded, plan, task.name, **task.options)
            unpruned = baseline.setdefault(task.name, result)
            row[f"{result.task} n"] = result.n
            for metric, value in result.metrics.items():
                if metric == "tokens":
                    continue
                column = f"{result.task} {metric}"
                row[column] = value
                if metric not in unpruned.metrics:  # answer changes exist for pruned plans only: no difference
                    continue
                row[f"{column} Δ"] = value - unpruned.metrics[metric]
                judged, _, se, _ = difference_and_noise(unpruned, result, metric)
                row[f"{column} Δ stderr"] = se if judged == metric and result is not unpruned else float("nan")
                row[f"{column} Δ beyond noise"] = result is not unpruned and not within_noise(unpruned, result, metric)
            done += 1
            if progress:
                progress(done, total)
        rows.append(row)
    return pd.DataFrame(rows)


def ranking_correlation(loaded, rankings: list[Ranking], scheme: str) -> pd.DataFrame:
    """Spearman rank correlation between the unit rankings of several metrics.

    Returns:
        square DataFrame indexed and labelled by ``metric@data``, values in [-1, 1].
    """
    positions = {}
    for ranking in rankings:
        order = ranking.order(loaded, scheme)
        positions[ranking.label] = pd.Series({str(u): rank for rank, u in enumerate(order)})
    return pd.DataFrame(positions).corr(method="spearman")
