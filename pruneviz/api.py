"""The programmatic entry points that the CLI and the app call: influence, evaluation, rankings.

Each call is cached on disk under a key that covers the model fingerprint, the data fingerprint,
the plan and every parameter, so repeating it is instant.
"""

from __future__ import annotations

import json
import math
from typing import Callable

import pandas as pd

from .cache import cached, make_key
from .data.mmlu import is_mmlu, load_mmlu, mmlu_fingerprint, mmlu_subset, select_subjects, split_exemplars
from .data.text import document_batch, load_corpus
from .errors import PlanError, SettingError, TooFewSamplesError
from .evaluation.mmlu import build_prompt, default_format, evaluate_mmlu
from .evaluation.perplexity import evaluate_perplexity
from .evaluation.results import Z_95, EvaluationResult
from .incremental import shared_store
from .objectives import objective_data
from .plan import PruningPlan, Unit, units_of
from .recovery import Recovery, fit_recovery
from .shapley import ADAPTIVE_METRICS, adaptive_influence
from .static_metrics import CSV_COLUMNS, STATIC_METRICS, static_influence

Progress = Callable[[int, int], None]
GRANULARITY_KINDS = {"block": ["block"], "sublayer": ["attn", "mlp"], "all": ["block", "attn", "mlp"]}
SCHEMES = ("block", "attn", "mlp", "both")
BACKENDS = ("pruneviz", "lm-eval")
# suffix of the standard-error columns of a recovery comparison
STDERR_SUFFIX = "stderr"


def calibration_batch(loaded, data: str, samples: int, seq_len: int):
    """Calibration tokens for static metrics.

    Args:
        data: ``"wiki"`` (calibration half), a text file (its calibration half), ``"mmlu"`` or
            ``"mmlu:<subject|category>"`` (0-shot letter-format prompts, first ``samples`` questions
            spread round-robin over the chosen subjects).
        samples: number of sequences N.
        seq_len: truncation length T (tokens).

    Returns:
        ``(batch, label, fingerprint)``: ``{"input_ids": [N, T'], "attention_mask": [N, T']}``, the
        dataset label for reports, and a digest for cache keys.

    Raises:
        SettingError: ``seq_len`` or ``samples`` out of range.
        DataError: unknown dataset, too few documents.
    """
    if not 2 <= seq_len <= loaded.max_length:
        raise SettingError(f"Sequence length {seq_len} is outside 2-{loaded.max_length} tokens for this model; pick one in range.")
    if samples < 1:
        raise SettingError(f"--samples must be at least 1 (got {samples}).")
    if is_mmlu(data):
        subset = mmlu_subset(data)
        label = f"mmlu:{subset}" if subset else "mmlu"
        table = load_mmlu("mmlu")
        _, scored = split_exemplars(table, select_subjects(table, subset), 0, None)
        # round-robin over subjects so a small sample covers all of them
        scored = scored.sort_values(["index", "subject"]).head(samples)
        texts = tuple(build_prompt(row, scored.iloc[:0], "letter") for row in scored.itertuples())
        batch = document_batch(loaded.tokenizer, texts, samples, seq_len, label, "question")
        # the subset is part of the digest: every subset of the one MMLU file once shared its cache entries
        return batch, label, make_key("mmlu-prompts", mmlu_fingerprint("mmlu"), subset)
    corpus = load_corpus(data, "calibration")
    return document_batch(loaded.tokenizer, corpus.texts, samples, seq_len, corpus.description), corpus.label, corpus.fingerprint


# every metric by name; each entry has .label, .formula and .source for pickers and tooltips
METRIC_REGISTRY = {**STATIC_METRICS, **ADAPTIVE_METRICS}
METRICS = tuple(METRIC_REGISTRY)


def check_metrics(metrics: list[str]) -> None:
    """Check metric names against :data:`METRICS` (before any model is loaded).

    Raises:
        SettingError: no metric, or names the first unknown metric and lists the available ones.
    """
    if not metrics:
        raise SettingError(f"No metric was given; choose one or more of {', '.join(METRICS)}.")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise SettingError(f"Metric '{unknown[0]}' is not available; choose from {', '.join(METRICS)}.")


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
        metrics: names from :data:`METRICS`: static ones (:mod:`pruneviz.static_metrics`) and
            ``loss_shapley`` / ``logit_shapley`` (:mod:`pruneviz.shapley`).
        granularity: ``"block"``, ``"sublayer"`` (attn and mlp) or ``"all"`` (both; adaptive metrics
            then play two separate games, one over blocks and one over sublayers).
        samples: text: calibration documents; MMLU static: questions in all; MMLU adaptive: questions per subject.
        seq_len: tokens per text document.
        plan: measure the model with this plan applied (adaptive metrics: these units stay pruned in
            every subnetwork, as in iterative pruning).
        estimator, fraction, budget, tolerance, seed: adaptive metrics, see :func:`pruneviz.shapley.adaptive_influence`.
        half: adaptive MMLU metrics: ``"all"`` (computed on the questions that are evaluated: the
            paper's optimistic setting) or ``"fit"`` (held out: evaluate on ``"test"``).
        progress: ``progress(done, total)`` in forward passes or subnetworks; ``(1, 1)`` when every
            table came from the cache.

    Returns:
        DataFrame ``unit, layer, sublayer, metric, value, stderr, dataset, dtype`` (the model's dtype);
        ascending value = pruning order.
        ``table.attrs["cost"]`` holds, per adaptive metric, block forwards with and without prefix
        reuse, subnetworks evaluated and seconds.

    Raises:
        SettingError: unknown metric, granularity or estimator setting; plus :func:`calibration_batch`'s errors.
    """
    check_metrics(metrics)
    if granularity not in GRANULARITY_KINDS:
        raise SettingError(f"Granularity '{granularity}' is unknown; use block, sublayer or all.")
    plan.validate(loaded.n_blocks)
    static = [m for m in metrics if m in STATIC_METRICS]
    adaptive = [m for m in metrics if m in ADAPTIVE_METRICS]
    tables, cost, hits = [], {}, []
    if static:
        batch, label, fingerprint = calibration_batch(loaded, data, samples, seq_len)
        key = make_key("influence", loaded.fingerprint, fingerprint, str(plan), sorted(static), granularity, samples, seq_len)
        table, hit = cached(
            key,
            lambda: static_influence(loaded, batch, static, GRANULARITY_KINDS[granularity], label, plan, progress=progress),
            use_cache,
        )
        tables.append(table)
        hits.append(hit)
    if adaptive:
        data_for_objective = objective_data(loaded, data, samples, seq_len, half)
        for metric in adaptive:
            for kind in ("block", "sublayer") if granularity == "all" else (granularity,):
                settings = dict(objective=ADAPTIVE_METRICS[metric].objective, estimator=estimator, fraction=fraction,
                                budget=budget, tolerance=tolerance, seed=seed, base=plan)
                key = make_key("adaptive", loaded.fingerprint, data_for_objective.fingerprint, samples, seq_len, kind, settings)
                result, hit = cached(
                    key,
                    lambda: adaptive_influence(
                        loaded, data_for_objective, units_of(loaded.n_blocks, kind), progress=progress, use_cache=use_cache, **settings
                    ),
                    use_cache,
                )
                tables.append(result.table)
                hits.append(hit)
                cost[f"{metric}/{kind}"] = {
                    "estimator": result.estimator, "subnetworks": result.subnetworks,
                    "block_forwards": result.count.blocks, "naive_block_forwards": result.naive_blocks,
                    "seconds": round(result.seconds, 3),
                }
    if progress and all(hits):  # nothing was computed: say it is done, or a progress bar would stay empty
        progress(1, 1)
    table = pd.concat(tables, ignore_index=True).assign(dtype=loaded.dtype_name)
    table.attrs["cost"] = cost
    return table


def lm_eval_draws_progress(task: str, backend: str) -> bool:
    """Whether ``backend`` runs ``task`` as an lm-eval task (MMLU, a task name or YAML), which draws its own
    progress bars; a ``progress`` callback then hears only the start and the end. lm-eval's perplexity path
    (``wiki``, text files) reports each batch to the callback instead.
    """
    if backend != "lm-eval":
        return False
    from . import lm_eval_backend

    return is_mmlu(task) or not lm_eval_backend.is_text_corpus(task)


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
) -> EvaluationResult:
    """Evaluate ``loaded`` under ``plan`` on a task (cached).

    Args:
        task: ``"wiki"`` or a text file (perplexity), ``"mmlu"`` or ``"mmlu:<subject|category>"``; with the
            ``lm-eval`` backend also any lm-eval task name or task YAML file (``per_subject`` = its ``limit``).
        fmt: MMLU format, ``"letter"``, ``"cloze"`` or ``"auto"`` (cloze under 1B parameters).
        shots, per_subject, mmlu_source, half: see :func:`pruneviz.evaluation.mmlu.evaluate_mmlu`.
        windows, seq_len: see :func:`pruneviz.evaluation.perplexity.evaluate_perplexity`.
        recovery: fitted stand-ins (:mod:`pruneviz.recovery`) applied to the plan's pruned units.
        backend: ``"pruneviz"`` (its own fast evaluators) or ``"lm-eval"`` (lm-evaluation-harness on the
            same model, see :mod:`pruneviz.lm_eval_backend`).
        partial: (MMLU, pruneviz backend) called with provisional results while the evaluation runs.
        use_cache: read and write the result cache and, with the pruneviz backend, per-batch checkpoints
            (an interrupted evaluation resumes from its finished batches).

    Raises:
        PlanError, DataError, SettingError, TokenizationError: as the evaluators; SettingError for an unknown backend.
    """
    plan.validate(loaded.n_blocks)
    if recovery is not None and recovery.plan != plan:
        raise SettingError(
            f"This recovery was fitted for the plan '{recovery.plan}', not '{plan}'; evaluate it with that plan "
            "(--prune) or fit one for this plan."
        )
    if backend not in BACKENDS:
        raise SettingError(f"Backend '{backend}' is unknown; use {' or '.join(BACKENDS)}.")
    recovered = recovery.fingerprint if recovery else None
    stand_ins = recovery.stand_ins if recovery else None
    mmlu_evaluator, perplexity_evaluator = evaluate_mmlu, evaluate_perplexity
    if backend == "lm-eval":
        # imported on demand: lm-eval takes seconds to import and most sessions never use it
        from . import lm_eval_backend

        mmlu_evaluator, perplexity_evaluator = lm_eval_backend.evaluate_mmlu, lm_eval_backend.evaluate_perplexity
    if is_mmlu(task):
        subset = mmlu_subset(task)
        fmt = default_format(loaded.info.params_total) if fmt == "auto" else fmt
        key = make_key("mmlu", backend, loaded.fingerprint, mmlu_fingerprint(mmlu_source), str(plan), recovered, subset, fmt, shots, per_subject, half)
        engine_options = {} if backend == "lm-eval" else {"partial": partial, "checkpoint": use_cache}
        compute = lambda: mmlu_evaluator(  # noqa: E731
            loaded, plan, subset, fmt, shots, per_subject, mmlu_source, half, progress=progress, stand_ins=stand_ins,
            **engine_options,
        )
    elif backend == "lm-eval" and not lm_eval_backend.is_text_corpus(task):
        key = make_key("lm-eval-task", loaded.fingerprint, lm_eval_backend.task_fingerprint(task), str(plan), recovered, shots, per_subject)
        compute = lambda: lm_eval_backend.evaluate_task(  # noqa: E731
            loaded, plan, task, shots, per_subject, progress=progress, stand_ins=stand_ins
        )
    else:
        key = make_key("perplexity", backend, loaded.fingerprint, load_corpus(task, "evaluation").fingerprint, str(plan), recovered, windows, seq_len)
        engine_options = {} if backend == "lm-eval" else {"checkpoint": use_cache}
        compute = lambda: perplexity_evaluator(  # noqa: E731
            loaded, plan, task, windows, seq_len, progress=progress, stand_ins=stand_ins, **engine_options
        )
    result, hit = cached(key, compute, use_cache)
    result.from_cache = hit
    result.recover = recovery.label if recovery else None
    result.settings.setdefault("backend", backend)
    result.settings["dtype"] = loaded.dtype_name
    return result


def hidden_store_usage() -> dict[str, int]:
    """Bytes held by the process-wide block-boundary state store per tier (``gpu``, ``cpu``, ``disk``) and ``entries``.

    See :mod:`pruneviz.incremental`; budgets come from ``$PRUNEVIZ_STATE_{GPU,CPU,DISK}_MB``.
    """
    return shared_store().usage()


def ranked_units(table: pd.DataFrame, metric: str, scheme: str) -> list[Unit]:
    """Units in pruning order (ascending influence) for a scheme.

    Args:
        table: an :func:`influence` table containing ``metric``.
        scheme: ``"block"`` (whole blocks), ``"attn"``, ``"mlp"``, or ``"both"`` (attn and mlp sublayers together).

    Raises:
        SettingError: unknown scheme, or the table lacks that metric at that granularity.
    """
    if scheme not in SCHEMES:
        raise SettingError(f"Scheme '{scheme}' is unknown; use one of {', '.join(SCHEMES)}.")
    kinds = ["attn", "mlp"] if scheme == "both" else [scheme]
    rows = table[(table["metric"] == metric) & table["sublayer"].isin(kinds)]
    if rows.empty:
        raise SettingError(f"No '{metric}' values for scheme '{scheme}'; compute influences at that granularity first.")
    rows = rows.sort_values(["value", "layer"], kind="stable")
    return [Unit(int(r.layer), None if r.sublayer == "block" else r.sublayer) for r in rows.itertuples()]


def lowest_plan(table: pd.DataFrame, metric: str, scheme: str, count: int, n_blocks: int) -> PruningPlan:
    """The plan that prunes the ``count`` least important units by ``metric`` under ``scheme``.

    Raises:
        PlanError: ``count`` exceeds the number of units.
    """
    units = ranked_units(table, metric, scheme)
    if not 0 <= count <= len(units):
        raise PlanError(f"Cannot prune {count} units: the {scheme} scheme has {len(units)}.")
    return PruningPlan.of(units[:count]).validate(n_blocks)


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
        SettingError, PlanError, DataError: see :func:`pruneviz.recovery.fit_recovery` and :func:`calibration_batch`;
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
    key = make_key("recover", loaded.fingerprint, fingerprint, str(plan), method, rank, fit, inputs, samples, seq_len, steps, learning_rate)
    recovery, _ = cached(
        key,
        lambda: fit_recovery(
            loaded, plan, fit_part, method, rank, fit, inputs, f"{label}, {samples} documents x {seq_len} tokens",
            heldout=heldout, steps=steps, learning_rate=learning_rate, progress=progress,
            checkpoint=make_key("recover-partial", key) if use_cache else None,
        ),
        use_cache,
    )
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
    columns = [
        c for c in table.columns
        if f"{c} {STDERR_SUFFIX}" in table.columns and not (c.endswith(" nll") and c.removesuffix(" nll") + " perplexity" in table.columns)
    ]
    return [
        (b, a, column)
        for a, b in pairs
        for column in columns
        if difference_within_noise(
            rows.at[a, column], rows.at[a, f"{column} {STDERR_SUFFIX}"], rows.at[b, column], rows.at[b, f"{column} {STDERR_SUFFIX}"], sigmas
        )
    ]


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


def comparison_json(plan: str, recovery: str | None, pairs: dict[str, tuple[EvaluationResult, EvaluationResult]]) -> str:
    """The app's evaluation download: ``{"plan", "recovery", "tasks": {task: {"unpruned": ..., "pruned": ...}}}``.

    Each result is :meth:`EvaluationResult.to_json` (the document ``pruneviz evaluate --json`` writes).
    """
    document = {
        "plan": plan, "recovery": recovery,
        "tasks": {task: {"unpruned": base.to_json(), "pruned": pruned.to_json()} for task, (base, pruned) in pairs.items()},
    }
    return json.dumps(document, indent=2, default=str)


__all__ = [
    "BACKENDS", "CSV_COLUMNS", "METRICS", "calibration_batch", "check_metrics", "influence", "evaluate", "lm_eval_draws_progress", "hidden_store_usage", "noise_metric", "ranked_units", "lowest_plan",
    "recover", "compare_recoveries", "Z_95", "confidence_halfwidth", "within_noise", "difference_within_noise", "recoveries_within_noise",
    "comparison_json",
]
