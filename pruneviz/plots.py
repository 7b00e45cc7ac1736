"""Plotly figures (and the tables shown beside them) built from computation results.

Every label comes from the results themselves (the ``unit``, ``sublayer`` and ``metric`` columns of
an influence table, the ``category`` column of an MMLU result, the ``ranking`` and ``task`` columns of
a pruning curve) or from the metric registry :data:`pruneviz.influence.registry.METRIC_REGISTRY`; nothing here calls
Streamlit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from .core.plan import SUBLAYERS, UNIT_SELECTIONS
from .data.tasks import TaskSpec
from .evaluation.results import LOWER_IS_BETTER, PROPORTIONS, Z_95, EvaluationResult, proportion_interval, proportion_stderr
from .evaluation.statistics import confidence_halfwidth
from .influence.registry import METRIC_REGISTRY

# heatmap columns, left to right: the two sublayers, then the whole block
COLUMN_ORDER = (*SUBLAYERS, "block")
COLORSCALE = "Viridis"
# signed values (Shapley influences): red below 0, blue above, white at 0
DIVERGING = "RdBu"
ROW_HEIGHT_PX = 20
CHANCE_ACCURACY = 0.25  # four answer choices
ACCURACY_METRICS = frozenset({"acc", "acc_norm"})
BETTER_RGB, WORSE_RGB = "44, 160, 44", "214, 39, 40"
# one distinct colour per ranking, the same in every panel (Streamlit's theme would shade them all blue)
LINE_COLOURS = qualitative.D3


def metric_label(name: str) -> str:
    """A metric's axis label with its name, e.g. ``"cosine distance (cosine)"``."""
    metric = METRIC_REGISTRY.get(name)
    return f"{metric.label} ({name})" if metric else name


def _columns(table: pd.DataFrame) -> list[str]:
    """The unit kinds present in ``table``, in :data:`COLUMN_ORDER`."""
    present = set(table["sublayer"])
    return [kind for kind in COLUMN_ORDER if kind in present]


def _grid(table: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(values, units)``: ``[blocks, kinds]`` grids of one metric's values and unit names."""
    rows = table[table["metric"] == metric]
    columns = _columns(rows)
    values = rows.pivot(index="layer", columns="sublayer", values="value").reindex(columns=columns).sort_index()
    units = rows.pivot(index="layer", columns="sublayer", values="unit").reindex(columns=columns).sort_index()
    return values, units.fillna("")


def _minmax(values: pd.DataFrame) -> pd.DataFrame:
    """Min-max scale every entry of ``values`` together into [0, 1] (all zero when constant)."""
    low, high = np.nanmin(values.to_numpy()), np.nanmax(values.to_numpy())
    return (values - low) / (high - low) if high > low else values * 0.0


def _layout(figure: go.Figure, n_blocks: int, title: str) -> go.Figure:
    """Block 0 at the top, one labelled row per block, a height that fits every row."""
    figure.update_yaxes(autorange="reversed", dtick=1)
    figure.update_layout(
        title=title,
        yaxis_title_text="block",  # first panel only: side-by-side panels share the block axis
        height=max(320, ROW_HEIGHT_PX * n_blocks + 140),
        margin={"l": 60, "r": 20, "t": 80, "b": 40},
    )
    return figure


def influence_heatmap(table: pd.DataFrame, metric: str, log_colour: bool = False) -> go.Figure:
    """Heatmap of one metric: rows = blocks (block 0 at the top), columns = attn / mlp / block.

    Args:
        table: an influence table (columns ``unit, layer, sublayer, metric, value, ...``) from
            :func:`pruneviz.api.influence`.
        metric: one of the table's ``metric`` values.
        log_colour: colour by log10 of the value (hover still shows the exact value); ignored where a value is
            <= 0 (Shapley influences can be), where no logarithm exists.

    The linear colour range runs from the 2nd to the 98th percentile of the values, so that one extreme unit
    (often block 0) saturates its end of the scale instead of flattening every other cell; signed values get a
    diverging scale centred at 0 (:func:`colour_range`).

    Returns:
        A figure whose hover text names the unit (e.g. ``"12.attn"``) and its exact value.

    Raises:
        ValueError: ``metric`` is not in the table.
    """
    if metric not in set(table["metric"]):
        raise ValueError(f"The influence table has no '{metric}' values.")
    values, units = _grid(table, metric)
    errors = _stderr_grid(table, metric, values)
    label = metric_label(metric)
    raw = values.to_numpy(dtype=float)
    log_colour = log_colour and bool((raw[np.isfinite(raw)] > 0).all())
    colour = _log10(raw) if log_colour else raw
    # "± stderr" only where the estimator defines one (permutation / subsample Shapley values)
    spread = " ± %{customdata[2]:.3g}" if np.isfinite(errors).any() else ""
    heatmap = go.Heatmap(
        z=colour,
        x=list(values.columns),
        y=list(values.index),
        customdata=np.dstack([units.to_numpy(dtype=object), raw.astype(object), errors.astype(object)]),
        colorbar={"title": {"text": f"log10 {label}" if log_colour else label, "side": "right"}},
        hovertemplate=f"unit %{{customdata[0]}}<br>{label} = %{{customdata[1]:.6g}}{spread}<extra></extra>",
        **({"colorscale": COLORSCALE} if log_colour else colour_range(raw)),
    )
    dataset = ", ".join(sorted(set(table["dataset"])))
    return _layout(go.Figure(heatmap), len(values), f"{label} on {dataset}: low = pruned first")


def _stderr_grid(table: pd.DataFrame, metric: str, values: pd.DataFrame) -> np.ndarray:
    """``[blocks, kinds]`` standard errors of one metric, aligned with :func:`_grid`'s values (NaN where undefined)."""
    rows = table[table["metric"] == metric]
    grid = rows.pivot(index="layer", columns="sublayer", values="stderr").reindex(index=values.index, columns=values.columns)
    return grid.to_numpy(dtype=float)


def colour_range(values: np.ndarray, percentiles: tuple[float, float] = (2, 98)) -> dict:
    """Heatmap colour settings robust to one extreme value: ``zmin``/``zmax`` at the ``percentiles`` of the finite
    values (an outlier saturates instead of flattening every other cell); values of both signs (Shapley
    influences) get a diverging scale centred at 0 and symmetric about it."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"colorscale": COLORSCALE}
    low, high = (float(x) for x in np.percentile(finite, percentiles))
    if finite.min() < 0 < finite.max():
        bound = max(abs(low), abs(high)) or float(np.abs(finite).max())
        return {"colorscale": DIVERGING, "zmin": -bound, "zmax": bound, "zmid": 0}
    if high <= low:
        return {"colorscale": COLORSCALE}
    return {"colorscale": COLORSCALE, "zmin": low, "zmax": high}


def _log10(values: np.ndarray) -> np.ndarray:
    # values below 1e-12 are zero for every metric's purposes; the floor keeps log10 finite
    return np.log10(np.clip(values, 1e-12, None))


def normalised_heatmaps(table: pd.DataFrame, metrics: list[str] | None = None, log_colour: bool = False) -> go.Figure:
    """Side-by-side heatmaps of several metrics, each min-max normalised to [0, 1] over its units.

    Args:
        table: an influence table from :func:`pruneviz.api.influence`.
        metrics: which of its metrics to show, in order (default: all, in table order).
        log_colour: normalise log10 of the values instead (see :func:`influence_heatmap`), for metrics whose
            values are all > 0.

    Returns:
        One panel per metric sharing the block axis; hover shows the unit, the raw value and the
        normalised value.
    """
    metrics = metrics or list(dict.fromkeys(table["metric"]))
    figure = make_subplots(
        rows=1, cols=len(metrics), shared_yaxes=True, horizontal_spacing=0.02,
        subplot_titles=[metric_label(m) for m in metrics],
    )
    n_blocks = 0
    for column, metric in enumerate(metrics, start=1):
        values, units = _grid(table, metric)
        n_blocks = max(n_blocks, len(values))
        positive = bool((values.to_numpy(dtype=float) > 0).all())  # no logarithm of a value <= 0 (Shapley)
        scaled = _minmax(values.apply(_log10) if log_colour and positive else values)
        # per cell: [unit name, raw value] for the hover text
        custom = np.dstack([units.to_numpy(dtype=object), values.to_numpy(dtype=object)])
        figure.add_trace(
            go.Heatmap(
                z=scaled.to_numpy(),
                x=list(values.columns),
                y=list(values.index),
                customdata=custom,
                coloraxis="coloraxis",
                hovertemplate=(
                    f"unit %{{customdata[0]}}<br>{metric_label(metric)} = %{{customdata[1]:.6g}}"
                    "<br>normalised = %{z:.3f}<extra></extra>"
                ),
            ),
            row=1, col=column,
        )
    scale = "min-max of log10" if log_colour else "min-max"
    figure.update_layout(coloraxis={"colorscale": COLORSCALE, "cmin": 0, "cmax": 1, "colorbar": {"title": {"text": scale}}})
    figure.update_xaxes(side="bottom")
    dataset = ", ".join(sorted(set(table["dataset"])))
    return _layout(figure, n_blocks, f"All metrics, min-max normalised per metric, on {dataset}")


def influence_wide(table: pd.DataFrame) -> pd.DataFrame:
    """One row per unit (block order, attn before mlp before block) and one column per metric.

    A metric whose estimator reports standard errors also gets a ``"<metric> stderr"`` column beside it.
    """
    index = ["layer", "sublayer", "unit"]
    # pivot, not pivot_table: a unit whose estimate is undefined (NaN) keeps its row
    wide = table.pivot(index=index, columns="metric", values="value")
    columns = []
    for metric in dict.fromkeys(table["metric"]):
        columns.append(metric)
        rows = table[table["metric"] == metric]
        if rows["stderr"].notna().any():
            wide[f"{metric} stderr"] = rows.set_index(index)["stderr"]
            columns.append(f"{metric} stderr")
    wide = wide[columns].reset_index()
    order = {kind: i for i, kind in enumerate(COLUMN_ORDER)}
    wide = wide.sort_values(["layer", "sublayer"], key=lambda s: s.map(order) if s.name == "sublayer" else s)
    wide.columns.name = None
    return wide.reset_index(drop=True)


def result_name(result: EvaluationResult) -> str:
    """Legend name of an evaluation: ``"unpruned"`` or ``"pruned 3.attn,7"``."""
    return f"pruned {result.plan}" if result.plan else "unpruned"


def mmlu_category_bars(results: list[EvaluationResult], metric: str) -> go.Figure:
    """Grouped bars of an MMLU metric per category, one bar group per evaluation (e.g. unpruned vs pruned).

    Args:
        results: MMLU :class:`~pruneviz.evaluation.results.EvaluationResult` values to compare.
        metric: an accuracy column of their ``per_category`` tables (``acc`` or ``acc_norm``).

    Returns:
        A bar chart with a one-standard-error bar per category (Wilson's interval at z = 1,
        :func:`share_error_bars`) and a dashed line at chance (25 %).
    """
    figure = go.Figure()
    for result in results:
        table = result.per_category
        below, above = share_error_bars(table[metric].to_numpy(dtype=float), table["n"].to_numpy())
        figure.add_trace(
            go.Bar(
                name=result_name(result),
                x=table["category"],
                y=table[metric],
                error_y={"type": "data", "symmetric": False, "array": above, "arrayminus": below},
                customdata=table["n"],
                hovertemplate=f"%{{x}}<br>{metric} = %{{y:.1%}} (n = %{{customdata}})<extra>{result_name(result)}</extra>",
            )
        )
    figure.add_hline(y=CHANCE_ACCURACY, line_dash="dash", annotation_text="chance", annotation_position="top left")
    figure.update_layout(
        barmode="group",
        title=f"MMLU {metric} per category",
        yaxis={"title": metric, "tickformat": ".0%", "rangemode": "tozero"},
        legend={"orientation": "h", "y": -0.2},
        margin={"t": 60},
    )
    return figure


def comparison_table(
    baseline: pd.DataFrame, pruned: pd.DataFrame, key: str, metrics: list[str], confidence: bool = False
) -> pd.DataFrame:
    """Join two per-subject (or per-category) tables on ``key`` with the change of each metric.

    Args:
        baseline, pruned: ``per_subject`` / ``per_category`` tables of two evaluations.
        key: ``"subject"`` or ``"category"``.
        metrics: metric columns to compare (accuracies, fractions in [0, 1]).
        confidence: also add ``± <m> (95% CI)``: the half-width ``1.96 × sqrt(p (1 − p) / (n − 1))`` of
            each pruned accuracy's normal-approximation interval (NaN for n < 2), as
            :func:`pruneviz.evaluation.results.proportion_stderr`.

    Returns:
        ``key, [category,] n, <m> unpruned, <m> pruned, [± <m> (95% CI),] Δ <m>`` for each metric ``m``.
    """
    keep = [c for c in dict.fromkeys((key, "category", "n")) if c in baseline.columns]
    joined = baseline[keep + metrics].merge(pruned[[key] + metrics], on=key, suffixes=(" unpruned", " pruned"))
    for metric in metrics:
        if confidence:
            joined[f"± {metric} (95% CI)"] = [
                confidence_halfwidth(proportion_stderr(p, n)) for p, n in zip(joined[f"{metric} pruned"], joined["n"])
            ]
        joined[f"Δ {metric}"] = joined[f"{metric} pruned"] - joined[f"{metric} unpruned"]
    return joined


def curve_panels(curve: pd.DataFrame) -> list[tuple[str, str]]:
    """The ``(task, metric)`` pairs of a pruning-curve table, in table order: one chart each."""
    return list(dict.fromkeys(zip(curve["task"], curve["metric"])))


def curve_figure(curve: pd.DataFrame, task: str, metric: str) -> go.Figure:
    """One task metric against the number of units removed, one line per ranking (Siddiqui et al. 2024, fig. 2).

    Args:
        curve: long table from :func:`pruneviz.studies.curves.pruning_curve` (several rankings may be concatenated).
        task, metric: which panel, e.g. ``("wiki", "perplexity")``.

    Returns:
        A line chart with one-standard-error bars where defined (perplexity: exp(nll ± se_nll); shares of items
        such as acc or pass@1: Wilson's interval at z = 1; see :func:`_error_bars`); ticks every step up to 10
        steps; hover names the unit removed at each step, the plan and n. Perplexity uses a log axis (it grows by
        orders of magnitude as units go); accuracies show a dashed chance line.

    Raises:
        ValueError: the table has no such panel.
    """
    rows = curve[(curve["task"] == task) & (curve["metric"] == metric)]
    if rows.empty:
        raise ValueError(f"The curve has no '{metric}' values on '{task}'.")
    colours = {ranking: LINE_COLOURS[i % len(LINE_COLOURS)] for i, ranking in enumerate(dict.fromkeys(curve["ranking"]))}
    figure = go.Figure()
    for ranking, line in rows.groupby("ranking", sort=False):
        errors = line["stderr"].to_numpy(dtype=float)
        # curve tables written before n was recorded have no "n" column: their bars stay ± stderr
        counts = line["n"].to_numpy(dtype=float) if "n" in line else np.full(len(line), np.nan)
        below, above = _error_bars(line["value"].to_numpy(dtype=float), errors, metric, counts)
        has_errors = bool(np.isfinite(errors).any() or (above + below > 0).any())
        # per point: [unit removed at this step, plan, standard error, n] for the hover text
        custom = line[["removed", "plan"]].replace("", "nothing").assign(stderr=errors, n=counts).to_numpy(dtype=object)
        count = ", n = %{customdata[3]}" if "n" in line else ""
        spread = f" (standard error %{{customdata[2]:.2g}}{count})" if has_errors else ""
        figure.add_trace(go.Scatter(
            x=line["step"], y=line["value"], mode="lines+markers", name=ranking, line={"color": colours[ranking]},
            error_y={"type": "data", "symmetric": False, "array": above, "arrayminus": below, "visible": has_errors},
            customdata=custom,
            hovertemplate=(
                f"%{{x}} removed (last: %{{customdata[0]}})<br>{metric} = %{{y:.4g}}{spread}"
                f"<br>plan %{{customdata[1]}}<extra>{ranking}</extra>"
            ),
        ))
    selection = UNIT_SELECTIONS.get(rows["scheme"].iloc[0])
    units = selection.label if selection else "units"
    yaxis = {"title": metric}
    if metric == "perplexity":
        yaxis.update(type="log", exponentformat="power")  # one notation from 10 to 10^40, not "100T" beside "10^21"
    if metric in ACCURACY_METRICS:
        yaxis["tickformat"] = ".0%"
        figure.add_hline(y=CHANCE_ACCURACY, line_dash="dash", annotation_text="chance", annotation_position="bottom left")
    figure.update_layout(
        title=f"{TaskSpec.parse(task).label}: {metric}",
        xaxis={"title": f"{units} removed", "dtick": _step_tick(int(rows["step"].max())), "range": [-0.5, rows["step"].max() + 0.5]},
        yaxis=yaxis,
        legend={"orientation": "h", "y": -0.25},
        showlegend=True,  # name the ranking even when there is only one line
        margin={"t": 60},
    )
    return figure


def share_error_bars(shares: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lengths below and above each share ``p`` of ``n`` items of its one-standard-error bar: Wilson's interval
    at z = 1 (:func:`pruneviz.evaluation.results.proportion_interval`); 0 where n is missing or below 1.

    Unlike ``p ± stderr`` it has length at 0 of n and n of n (a pruned model that passes nothing is not
    certain) and stays inside [0, 1].
    """
    bounds = np.array([proportion_interval(p, int(n), z=1.0) if n >= 1 else (p, p) for p, n in zip(shares, np.nan_to_num(counts))])
    bounds = bounds.reshape(-1, 2)
    return np.nan_to_num(shares - bounds[:, 0]), np.nan_to_num(bounds[:, 1] - shares)


def _error_bars(values: np.ndarray, stderr: np.ndarray, metric: str, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lengths of the error bars below and above each point: one standard error (0 where undefined).

    A share of the ``counts`` items (:data:`pruneviz.evaluation.results.PROPORTIONS`) gets Wilson's interval at
    z = 1 (:func:`share_error_bars`) where its n is known. Perplexity's standard error comes from its NLL by the
    delta method (se_ppl = ppl · se_nll), so its bars span exp(nll ± se_nll): ppl·(1 − e^(−se_nll)) below and
    ppl·(e^(se_nll) − 1) above. They stay above zero on the log axis, where a symmetric bar longer than its value
    would reach down to the axis.
    """
    if metric in PROPORTIONS and np.isfinite(counts).all():
        return share_error_bars(values, counts)
    stderr = np.nan_to_num(stderr)
    if metric != "perplexity":
        return stderr, stderr
    spread = np.divide(stderr, values, out=np.zeros_like(stderr), where=values > 0)
    return values * -np.expm1(-spread), values * np.expm1(spread)


def _step_tick(steps: int) -> int:
    """Distance between the x ticks of a curve of ``steps`` steps: every step up to 10, then 2, 5, 10, ... (at most
    about 10 ticks: a chart is half the page wide, and more ticks turn their labels sideways)."""
    for tick in (1, 2, 5, 10, 20, 50, 100):
        if steps / tick <= 10:
            return tick
    return steps // 10


def curve_wide(curve: pd.DataFrame) -> pd.DataFrame:
    """One row per ranking and step (with the unit removed and the plan), one column per ``"<task> <metric>"``,
    followed by its ``"<task> <metric> stderr"`` where the metric has one, and one ``"<task> n"`` column per task
    (windows, questions or problems) where the table records n."""
    keys = ["ranking", "step", "removed", "plan"]
    labelled = curve.assign(column=curve["task"] + " " + curve["metric"])
    wide = labelled.pivot_table(index=keys, columns="column", values="value", sort=False)
    errors = labelled.pivot_table(index=keys, columns="column", values="stderr", sort=False)
    ordered = []
    for column in wide.columns:
        ordered.append(column)
        if column in errors.columns and errors[column].notna().any():
            wide[f"{column} stderr"] = errors[column]
            ordered.append(f"{column} stderr")
    if "n" in curve:
        counts = curve.pivot_table(index=keys, columns="task", values="n", aggfunc="first", sort=False)
        for task in counts.columns:
            wide[f"{task} n"] = counts[task].astype("Int64")
            ordered.append(f"{task} n")
    wide = wide[ordered]
    wide.columns.name = None
    return wide.reset_index()


def _delta_direction(column: str) -> int:
    """+1 where an increase of the column's metric is an improvement, -1 where it is a loss."""
    metric = column.removesuffix(" Δ").rsplit(" ", 1)[-1]
    return -1 if metric in LOWER_IS_BETTER else 1


def _delta_styles(deltas: pd.Series, beyond_noise: pd.Series | None = None) -> list[str]:
    """Background colours of one Δ column: green = better than unpruned, red = worse, stronger = larger; none where
    ``beyond_noise`` (aligned booleans) says the change is within noise."""
    scale = deltas.abs().max()
    direction = _delta_direction(str(deltas.name))
    beyond = beyond_noise if beyond_noise is not None else pd.Series(True, index=deltas.index)
    styles = []
    for delta, real in zip(deltas, beyond):
        if not scale or not np.isfinite(delta) or delta == 0 or not real:
            styles.append("")
            continue
        rgb = BETTER_RGB if delta * direction > 0 else WORSE_RGB
        styles.append(f"background-color: rgba({rgb}, {0.15 + 0.55 * abs(delta) / scale:.2f})")
    return styles


def tradeoff_styled(matrix: pd.DataFrame):
    """The trade-off matrix with its Δ columns coloured (a pandas ``Styler``, for display).

    Args:
        matrix: from :func:`pruneviz.studies.curves.tradeoff_matrix`: ``ranking``, ``plan``, and per task metric
            ``"<task> <metric>"`` and ``"<task> <metric> Δ"`` (pruned - unpruned).

    Returns:
        A Styler: Δ cells green where pruning by that ranking did better than the unpruned model on that task
        metric (rare), red where worse, darker for larger changes within the column, and uncoloured where the
        change is within noise (its ``Δ beyond noise`` column: two standard errors of the difference, paired over
        the items); accuracies as percentages, their differences in percentage points (pp). The
        ``Δ beyond noise`` columns are hidden (the colour says it).
    """
    deltas = [c for c in matrix.columns if c.endswith(" Δ")]
    flags = [c for c in matrix.columns if c.endswith(" Δ beyond noise")]
    formats = {}
    for column in matrix.columns:
        if column in ("ranking", "plan", "dtype", *flags) or column.endswith(" n"):
            continue
        metric = column.removesuffix(" Δ stderr").removesuffix(" Δ").rsplit(" ", 1)[-1]
        if metric in ACCURACY_METRICS or metric.startswith("flips"):
            formats[column] = (
                (lambda v: f"{100 * v:+.1f} pp") if column.endswith(" Δ")
                else (lambda v: f"± {100 * v:.1f} pp") if column.endswith(" Δ stderr") else "{:.1%}"
            )
        else:
            formats[column] = "{:+.3f}" if column.endswith(" Δ") else "± {:.3f}" if column.endswith(" Δ stderr") else "{:.3f}"
    styled = matrix.style
    for column in deltas:
        beyond = matrix[f"{column} beyond noise"] if f"{column} beyond noise" in matrix else None
        styled = styled.apply(lambda deltas, beyond=beyond: _delta_styles(deltas, beyond), subset=[column])
    return styled.format(formats, na_rep="").hide(flags, axis="columns")


def correlation_heatmap(correlation: pd.DataFrame, scheme: str) -> go.Figure:
    """Spearman rank correlations between unit rankings, annotated, on a fixed [-1, 1] diverging scale.

    Args:
        correlation: square table from :func:`pruneviz.studies.curves.ranking_correlation` (labels ``metric@data``).
        scheme: the unit scheme the rankings order (for the title).
    """
    labels = list(correlation.columns)
    figure = go.Figure(go.Heatmap(
        z=correlation.to_numpy(dtype=float), x=labels, y=labels, zmin=-1, zmax=1, colorscale="RdBu",
        texttemplate="%{z:.2f}", colorbar={"title": {"text": "Spearman ρ"}},
        hovertemplate="%{y} vs %{x}<br>ρ = %{z:.3f}<extra></extra>",
    ))
    figure.update_yaxes(autorange="reversed")
    figure.update_layout(
        title=f"Rank correlation of the {scheme} rankings",
        height=max(320, 60 * len(labels) + 160),
        margin={"l": 20, "r": 20, "t": 60, "b": 20},
    )
    return figure


def recovery_comparison(table: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """The table of :func:`pruneviz.api.compare_recoveries` with each recovery row named.

    Args:
        table: rows ``unpruned``, ``pruned``, then one per recovery, in the order they were passed.
        names: one display name per recovery (several fits of one method differ in inputs or data).

    Raises:
        ValueError: ``names`` does not match the recovery rows.
    """
    if len(names) != len(table) - 2:
        raise ValueError(f"Got {len(names)} names for {len(table) - 2} recoveries.")
    return table.assign(variant=[*table["variant"].iloc[:2], *names])


def with_confidence_columns(table: pd.DataFrame, stderr_suffix: str) -> pd.DataFrame:
    """A recovery comparison for display: each ``"<col> <stderr_suffix>"`` column becomes ``"<col> ±95% CI"`` (1.96 × stderr)."""
    shown = table.copy()
    for column in [c for c in table.columns if c.endswith(f" {stderr_suffix}")]:
        shown[column] = Z_95 * shown[column]
    return shown.rename(columns=lambda c: c.removesuffix(f" {stderr_suffix}") + " ±95% CI" if c.endswith(f" {stderr_suffix}") else c)


def variant_bars(table: pd.DataFrame, column: str, stderr_suffix: str) -> go.Figure:
    """Bars of one task metric per variant (unpruned, pruned, each recovery), with 95 % CI error bars where known."""
    metric = column.rsplit(" ", 1)[-1]
    stderr = f"{column} {stderr_suffix}"
    figure = go.Figure(go.Bar(
        x=table["variant"], y=table[column],
        error_y={"type": "data", "array": Z_95 * table[stderr]} if stderr in table else None,
        marker_color=["#7f7f7f", "#d62728", *["#1f77b4"] * (len(table) - 2)],
        hovertemplate=f"%{{x}}<br>{column} = %{{y:.4g}}<extra></extra>",
    ))
    better = "lower" if metric in LOWER_IS_BETTER else "higher"
    figure.update_layout(
        title=f"{column} ({better} is better; bars: 95% CI)" if stderr in table else f"{column} ({better} is better)",
        yaxis={"title": column, **({"tickformat": ".0%"} if metric in ACCURACY_METRICS else {})},
        margin={"t": 60},
    )
    return figure
