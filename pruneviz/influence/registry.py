"""Every influence metric by name (static and adaptive), for pickers, tooltips and input checks."""

from __future__ import annotations

from ..core.errors import SettingError
from .shapley import ADAPTIVE_METRICS
from .static import STATIC_METRICS

# every metric by name; each entry has .label, .formula and .source for pickers and tooltips
METRIC_REGISTRY = {**STATIC_METRICS, **ADAPTIVE_METRICS}
METRICS = tuple(METRIC_REGISTRY)


def check_metrics(metrics: list[str]) -> None:
    """Check metric names against :data:`METRICS` (before any model is loaded).

    Raises:
        SettingError: no metric, or names the first unknown metric and lists the available ones.
    """
    if isinstance(metrics, str):
        raise SettingError(f"Metrics come as a list of names, not the text '{metrics}'; write [{metrics!r}].")
    if not metrics:
        raise SettingError(f"No metric was given; choose one or more of {', '.join(METRICS)}.")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise SettingError(f"Metric '{unknown[0]}' is not available; choose from {', '.join(METRICS)}.")
