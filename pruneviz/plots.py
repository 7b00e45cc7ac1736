"""Plotly figures (and the tables shown beside them) built from computation results.

Every label comes from the results themselves (the ``unit``, ``sublayer`` and ``metric`` columns of
an influence table, the ``category`` column of an MMLU result) or from the metric registry
:data:`pruneviz.static_metrics.STATIC_METRICS`; nothing here calls Streamlit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .evaluation.results import EvaluationResult, proportion_stderr
from .plan import SUBLAYERS
from .static_metrics import STATIC_METRICS

# heatmap columns, left to right: the two sublayers, then the whole block
COLUMN_ORDER = (*SUBLAYERS, "block")
COLORSCALE = "Viridis"
ROW_HEIGHT_PX = 20
CHANCE_ACCURACY = 0.25  # four answer choices


def metric_label(name: str) -> str:
    """A registry metric's axis label with its name, e.g. ``"cosine distance (cosine)"``."""
    metric = STATIC_METRICS.get(name)
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
        log_colour: colour by log10 of the value, so that one outlier (often block 0) does not
            flatten every other cell; hover still shows the exact value.

    Returns:
        A figure whose hover text names the unit (e.g. ``"12.attn"``) and its exact value.

    Raises:
        ValueError: ``metric`` is not in the table.
    """
    if metric not in set(table["metric"]):
        raise ValueError(f"The influence table has no '{metric}' values.")
    values, units = _grid(table, metric)
    label = metric_label(metric)
    raw = values.to_numpy(dtype=float)
    colour = _log10(raw) if log_colour else raw
    heatmap = go.Heatmap(
        z=colour,
        x=list(values.columns),
        y=list(values.index),
        customdata=np.dstack([units.to_numpy(dtype=object), raw.astype(object)]),
        colorscale=COLORSCALE,
        colorbar={"title": {"text": f"log10 {label}" if log_colour else label, "side": "right"}},
        hovertemplate=f"unit %{{customdata[0]}}<br>{label} = %{{customdata[1]:.6g}}<extra></extra>",
    )
    dataset = ", ".join(sorted(set(table["dataset"])))
    return _layout(go.Figure(heatmap), len(values), f"{label} on {dataset}: low = pruned first")


def _log10(values: np.ndarray) -> np.ndarray:
    # values below 1e-12 are zero for every metric's purposes; the floor keeps log10 finite
    return np.log10(np.clip(values, 1e-12, None))


def normalised_heatmaps(table: pd.DataFrame, metrics: list[str] | None = None, log_colour: bool = False) -> go.Figure:
    """Side-by-side heatmaps of several metrics, each min-max normalised to [0, 1] over its units.

    Args:
        table: an influence table from :func:`pruneviz.api.influence`.
        metrics: which of its metrics to show, in order (default: all, in table order).
        log_colour: normalise log10 of the values instead (see :func:`influence_heatmap`).

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
        scaled = _minmax(values.apply(_log10) if log_colour else values)
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
    """One row per unit (block order, attn before mlp before block) and one column per metric."""
    wide = table.pivot_table(index=["layer", "sublayer", "unit"], columns="metric", values="value").reset_index()
    order = {kind: i for i, kind in enumerate(COLUMN_ORDER)}
    wide = wide.sort_values(["layer", "sublayer"], key=lambda s: s.map(order) if s.name == "sublayer" else s)
    wide.columns.name = None
    return wide.reset_index(drop=True)


def result_name(result: EvaluationResult) -> str:
    """Legend name of an evaluation: ``"unpruned"`` or ``"pruned 3.attn,7"``."""
    return f"pruned {result.prune}" if result.prune else "unpruned"


def mmlu_category_bars(results: list[EvaluationResult], metric: str) -> go.Figure:
    """Grouped bars of an MMLU metric per category, one bar group per evaluation (e.g. unpruned vs pruned).

    Args:
        results: MMLU :class:`~pruneviz.evaluation.results.EvaluationResult` values to compare.
        metric: an accuracy column of their ``per_category`` tables (``acc`` or ``acc_norm``).

    Returns:
        A bar chart with ± one standard error per bar and a dashed line at chance (25 %).
    """
    figure = go.Figure()
    for result in results:
        table = result.per_category
        errors = [proportion_stderr(p, n) for p, n in zip(table[metric], table["n"])]
        figure.add_trace(
            go.Bar(
                name=result_name(result),
                x=table["category"],
                y=table[metric],
                error_y={"type": "data", "array": errors},
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


def comparison_table(baseline: pd.DataFrame, pruned: pd.DataFrame, key: str, metrics: list[str]) -> pd.DataFrame:
    """Join two per-subject (or per-category) tables on ``key`` with the change of each metric.

    Args:
        baseline, pruned: ``per_subject`` / ``per_category`` tables of two evaluations.
        key: ``"subject"`` or ``"category"``.
        metrics: metric columns to compare.

    Returns:
        ``key, [category,] n, <m> unpruned, <m> pruned, Δ <m>`` for each metric ``m``.
    """
    keep = [c for c in dict.fromkeys((key, "category", "n")) if c in baseline.columns]
    joined = baseline[keep + metrics].merge(pruned[[key] + metrics], on=key, suffixes=(" unpruned", " pruned"))
    for metric in metrics:
        joined[f"Δ {metric}"] = joined[f"{metric} pruned"] - joined[f"{metric} unpruned"]
    return joined
