"""Recovery as the CLI and the app run it: stand-ins fitted on calibration text (cached), and the before/after table."""

from __future__ import annotations

import pandas as pd

from ..core.cache import cached, call_key, make_key
from ..core.errors import TooFewSamplesError
from ..core.plan import PruningPlan
from ..core.progress import Progress
from ..evaluation.results import LOWER_IS_BETTER
from ..evaluation.run import evaluate
from ..evaluation.statistics import difference_within_noise
from ..influence.calibration import calibration_batch
from .recovery import Recovery, fit_recovery

# suffix of the standard-error columns of a recovery comparison
STDERR_SUFFIX = "stderr"


def recover(
    loaded,
    plan: PruningPlan,
    method: str = "lowrank",
    rank: int = 8,
    fit: str = "emulate",
    inputs: str = "pruned",
    data: str = "wiki",
    samples: int = 32,
    seq_len: int = 128,
    steps: int = 100,
    learning_rate: float = 1e-3,
    progress: Progress | None = None,
    use_cache: bool = True,
) -> Recovery:
    """Fit recovery stand-ins for ``plan``'s units on calibration text (cached).

    The first ``samples`` calibration documents fit the stand-ins; for ``fit="train"`` the next
    ``max(2, samples // 4)`` documents are the held-out split for early stopping (other fits read no more).

    Raises:
        SettingError, PlanError, DataError: see :func:`pruneviz.studies.recovery.fit_recovery` and :func:`calibration_batch`;
            a too-small corpus for ``train`` names the held-out documents it needs beyond ``samples``.
    """
    plan.validate(loaded.n_blocks)
    heldout_count = max(2, samples // 4) if fit == "train" else 0
    try:
        batch, label, fingerprint = calibration_batch(loaded, data, samples + heldout_count, seq_len)
    except TooFewSamplesError as error:
        if not heldout_count:
            raise
        raise TooFewSamplesError(
            f"{error} (fit 'train' holds out {heldout_count} samples beyond the {samples} it fits on, for early stopping)"
        ) from None
    fit_part = {k: v[:samples] for k, v in batch.items()}
    heldout = {k: v[samples:] for k, v in batch.items()}
    args = (loaded, plan, fit_part, method, rank, fit, inputs, f"{label}, {samples} documents x {seq_len} tokens")
    kwargs = dict(heldout=heldout, steps=steps, learning_rate=learning_rate, progress=progress)
    key = call_key(fit_recovery, args, kwargs, ignore=("progress", "checkpoint"), content=fingerprint)
    recovery, hit = cached(key, lambda: fit_recovery(*args, **kwargs, checkpoint=make_key("recover-partial", key) if use_cache else None), use_cache)
    if hit:
        recovery.resumed_from = 0  # this call trained nothing: the fit that made it may have resumed, this one did not
    recovery.stand_ins = {k: v.to(loaded.device) for k, v in recovery.stand_ins.items()}
    return recovery


def compare_recoveries(
    loaded, plan: PruningPlan, recoveries: list[Recovery], tasks: list[tuple[str, dict]], progress: Progress | None = None
) -> pd.DataFrame:
    """Before/after table: the unpruned model, the plan without recovery, and each recovery, on every task.

    Args:
        tasks: ``(task, evaluate options)`` pairs, e.g. ``[("wiki", {"windows": 8})]``.

    Returns:
        one row per variant: ``variant``, ``dtype`` (the model's), ``params added``, ``% of removed``, then ``"<task> <metric>"`` columns,
        each followed by its standard error ``"<task> <metric> stderr"`` where the metric has one.
    """
    variants = [("unpruned", PruningPlan(), None), ("pruned", plan, None)] + [(r.label, plan, r) for r in recoveries]
    rows, done = [], 0
    for label, variant_plan, recovery in variants:
        row = {
            "variant": label,
            "dtype": loaded.dtype_name,
            "params added": recovery.added_params if recovery else 0,
            "% of removed": round(recovery.added_percent, 3) if recovery else 0.0,
        }
        for task, options in tasks:
            result = evaluate(loaded, variant_plan, task, recovery=recovery, **options)
            for metric, value in result.metrics.items():
                if metric != "tokens":
                    row[f"{result.task} {metric}"] = value
                    if metric in result.stderr:
                        row[f"{result.task} {metric} {STDERR_SUFFIX}"] = result.stderr[metric]
            done += 1
            if progress:
                progress(done, len(variants) * len(tasks))
        rows.append(row)
    return pd.DataFrame(rows)


def _judged_columns(table: pd.DataFrame) -> list[str]:
    """The metric columns of a :func:`compare_recoveries` table that have a standard error, without ``nll`` where
    ``perplexity`` (its exponential, with the same verdict) is there."""
    return [
        c for c in table.columns
        if f"{c} {STDERR_SUFFIX}" in table.columns and not (c.endswith(" nll") and c.removesuffix(" nll") + " perplexity" in table.columns)
    ]


def recoveries_within_noise(table: pd.DataFrame, sigmas: float = 2.0) -> list[tuple[str, str, str]]:
    """Pairs of variants of a :func:`compare_recoveries` table whose difference is within noise.

    Each recovery is compared with the plan without recovery (``pruned``) and with every other recovery,
    on every metric that has a standard error (see :func:`difference_within_noise`); ``nll`` is left out
    where ``perplexity`` (its exponential, with the same verdict) is there.

    Returns:
        ``(variant, other variant, metric column)`` triples.
    """
    recovered = list(table["variant"].iloc[2:])
    pairs = [("pruned", name) for name in recovered]
    pairs += [(a, b) for i, a in enumerate(recovered) for b in recovered[i + 1 :]]
    rows = table.set_index("variant")
    columns = _judged_columns(table)
    return [
        (b, a, column)
        for a, b in pairs
        for column in columns
        if difference_within_noise(
            rows.at[a, column], rows.at[a, f"{column} {STDERR_SUFFIX}"], rows.at[b, column], rows.at[b, f"{column} {STDERR_SUFFIX}"], sigmas
        )
    ]


def recoveries_worse_than_none(table: pd.DataFrame, sigmas: float = 2.0) -> list[tuple[str, str, float, float]]:
    """Recoveries of a :func:`compare_recoveries` table that score worse than the plan without stand-ins (``pruned``)
    by more than ``sigmas`` combined standard errors, on a metric that has them.

    Combined errors are conservative here (the variants were scored on the same items, whose errors correlate):
    what this reports is worse beyond doubt. "Worse" follows each metric's direction (:data:`LOWER_IS_BETTER`).

    Returns:
        ``(variant, metric column, its value, the pruned model's value)`` for each such case.
    """
    rows = table.set_index("variant")
    # answers won back (flips_gained) are not better the more there are: restoring the unpruned answers lowers them
    columns = [c for c in _judged_columns(table) if not c.endswith(" flips_gained")]
    found = []
    for variant in table["variant"].iloc[2:]:
        for column in columns:
            mine, theirs = rows.at[variant, column], rows.at["pruned", column]
            worse = mine > theirs if column.rsplit(" ", 1)[-1] in LOWER_IS_BETTER else mine < theirs
            noisy = difference_within_noise(
                mine, rows.at[variant, f"{column} {STDERR_SUFFIX}"], theirs, rows.at["pruned", f"{column} {STDERR_SUFFIX}"], sigmas
            )
            if worse and not noisy:
                found.append((variant, column, float(mine), float(theirs)))
    return found
