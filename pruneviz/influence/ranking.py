"""Pruning order from an influence table: units sorted by ascending influence, and the plan of the lowest K."""

from __future__ import annotations

import pandas as pd

from ..core.errors import PlanError, SettingError
from ..core.plan import RANKED_SELECTIONS, PruningPlan, Unit, unit_selection


def ranked_units(table: pd.DataFrame, metric: str, scheme: str) -> list[Unit]:
    """Units in pruning order (ascending influence) for a scheme.

    Args:
        table: an :func:`influence` table containing ``metric``.
        scheme: a unit selection of :data:`~pruneviz.core.plan.RANKED_SELECTIONS`: ``"block"`` (whole blocks),
            ``"attn"``, ``"mlp"``, or ``"both"`` (attn and mlp sublayers together; ``"sublayer"`` is the same).

    Raises:
        SettingError: unknown scheme, or the table lacks that metric at that granularity.
    """
    kinds = unit_selection(scheme, (*RANKED_SELECTIONS, "sublayer")).kinds
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
