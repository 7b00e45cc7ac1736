"""Influence of every unit by static and adaptive metrics, cached on disk."""

from __future__ import annotations

import pandas as pd

from ..core.cache import cached_call
from ..core.plan import MEASURED_SELECTIONS, PruningPlan, unit_selection, units_of
from ..core.progress import Progress
from .calibration import calibration_batch
from .objectives import objective_data
from .registry import check_metrics
from .shapley import ADAPTIVE_METRICS, adaptive_influence
from .static import STATIC_METRICS, static_influence


def influence(
    loaded,
    data: str = "wiki",
    metrics: list[str] | tuple[str, ...] = ("cosine",),
    granularity: str = "sublayer",
    samples: int = 32,
    seq_len: int = 128,
    plan: PruningPlan = PruningPlan(),
    estimator: str = "loo",
    fraction: float = 0.5,
    budget: int = 64,
    tolerance: float = 0.0,
    seed: int = 0,
    half: str = "all",
    progress: Progress | None = None,
    use_cache: bool = True,
) -> pd.DataFrame:
    """Influence of every unit by static and adaptive metrics (cached).

    Args:
        data: ``wiki``, a text file, ``mmlu`` or ``mmlu:<subject|category>``.
        metrics: names from :data:`METRICS`: static ones (:mod:`pruneviz.influence.static`) and
            ``loss_shapley`` / ``logit_shapley`` (:mod:`pruneviz.influence.shapley`).
        granularity: ``"block"``, ``"sublayer"`` (attn and mlp) or ``"all"`` (both; adaptive metrics
            then play two separate games, one over blocks and one over sublayers).
        samples: text: calibration documents; MMLU static: questions in all; MMLU adaptive: questions per subject.
        seq_len: tokens per text document.
        plan: measure the model with this plan applied (adaptive metrics: these units stay pruned in
            every subnetwork, as in iterative pruning).
        estimator, fraction, budget, tolerance, seed: adaptive metrics, see :func:`pruneviz.influence.shapley.adaptive_influence`.
        half: adaptive MMLU metrics: ``"all"`` (computed on the questions that are evaluated: the
            paper's optimistic setting) or ``"fit"`` (held out: evaluate on ``"test"``).
        progress: ``progress(done, total)`` in forward passes or subnetworks; ``(1, 1)`` when every
            table came from the cache.

    Returns:
        DataFrame ``unit, layer, sublayer, metric, value, stderr, dataset, dtype`` (the model's dtype);
        ascending value = pruning order.
        ``table.attrs["cost"]`` holds, per adaptive metric, block forwards with and without prefix
        reuse, subnetworks evaluated, those resumed from an earlier run, seconds, and whether the whole
        result came from the cache (:func:`cost_summary` says it in one line).

    Raises:
        SettingError: unknown metric, granularity or estimator setting; plus :func:`calibration_batch`'s errors.
    """
    check_metrics(metrics)
    selection = unit_selection(granularity, MEASURED_SELECTIONS)
    plan.validate(loaded.n_blocks)
    static = [m for m in metrics if m in STATIC_METRICS]
    adaptive = [m for m in metrics if m in ADAPTIVE_METRICS]
    tables, cost, hits = [], {}, []
    if static:
        batch, label, fingerprint = calibration_batch(loaded, data, samples, seq_len)
        table, hit = cached_call(
            static_influence, (loaded, batch, sorted(static), list(selection.kinds), label, plan), dict(progress=progress),
            use_cache, ignore=("progress",), content=fingerprint,
        )
        tables.append(table)
        hits.append(hit)
    if adaptive:
        data_for_objective = objective_data(loaded, data, samples, seq_len, half)
        for metric in adaptive:
            for kind in ("block", "sublayer") if granularity == "all" else (granularity,):
                settings = dict(objective=ADAPTIVE_METRICS[metric].objective, estimator=estimator, fraction=fraction,
                                budget=budget, tolerance=tolerance, seed=seed, base=plan)
                result, hit = cached_call(
                    adaptive_influence, (loaded, data_for_objective, units_of(loaded.n_blocks, kind)),
                    dict(progress=progress, use_cache=use_cache, **settings), use_cache, ignore=("progress", "use_cache"),
                )
                tables.append(result.table)
                hits.append(hit)
                cost[f"{metric}/{kind}"] = {
                    "estimator": result.estimator, "subnetworks": result.subnetworks, "resumed": result.resumed, "from_cache": hit,
                    "block_forwards": result.count.computed, "naive_block_forwards": result.count.naive,
                    "seconds": round(result.seconds, 3),
                }
    if progress and all(hits):  # nothing was computed: say it is done, or a progress bar would stay empty
        progress(1, 1)
    table = pd.concat(tables, ignore_index=True).assign(dtype=loaded.dtype_name)
    table.attrs["cost"] = cost
    return table


def cost_summary(name: str, cost: dict) -> str:
    """One line on what an adaptive metric cost (an entry of ``influence(...).attrs["cost"]``): subnetworks, block
    forwards with and without prefix reuse, seconds, and whether it resumed an earlier run or came from the cache."""
    naive = cost["naive_block_forwards"]
    saved = 1 - cost["block_forwards"] / naive if naive else 0.0
    text = (
        f"{name}: {cost['estimator']}, {cost['subnetworks']} subnetworks, {cost['block_forwards']:,} block forwards "
        f"(naive: {naive:,}, {saved:.0%} saved by prefix reuse), {cost['seconds']:.1f} s"
    )
    if cost.get("from_cache"):
        return text + " (read from the result cache: these are the first run's numbers)"
    if cost.get("resumed"):
        return text + f"; resumed: {cost['resumed']} of the {cost['subnetworks']} subnetworks were read from an earlier run"
    return text
