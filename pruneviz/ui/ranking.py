"""Pickers for how units are ranked: unit selections (schemes), metrics (with formulas and sources) and Shapley estimators."""

from __future__ import annotations

import streamlit as st

from ..api import METRIC_REGISTRY, METRICS, RANKED_SELECTIONS, UNIT_SELECTIONS
from ..influence.shapley import ADAPTIVE_METRICS, ESTIMATORS
from ..influence.static import STATIC_METRICS
from ..plots import metric_label
from .state import cap, remembered

ESTIMATOR_LABELS = {
    "loo": "leave-one-out (the paper's default)",
    "subsample": "random subnetworks (± stderr)",
    "permutation": "permutation sampling (± stderr)",
}
ADAPTIVE_COST_NOTE = (
    "Adaptive metrics (loss_shapley, logit_shapley) are **much slower** than static ones: a static metric "
    "needs one forward pass over its data, an adaptive one evaluates the task objective of many "
    "subnetworks (leave-one-out: n + 1 for n units; subsample: the budget; permutation: up to "
    "2 × budget × n). Expect minutes on a CPU; results are cached."
)


def _metric_help_line(name: str) -> str:
    """One markdown bullet: a metric's name, label, formula and source."""
    metric = METRIC_REGISTRY[name]
    kind = " (adaptive, slow)" if name in ADAPTIVE_METRICS else ""
    return f"- **{name}**{kind}, {metric.label}: {metric.formula}. {metric.source}."


def metrics_help(adaptive: bool = False) -> str:
    """Markdown listing every static metric (and, with ``adaptive``, the Shapley metrics) with formula and source."""
    names = METRICS if adaptive else tuple(STATIC_METRICS)
    return "\n".join(_metric_help_line(name) for name in names)


def metric_caption(name: str) -> str:
    """One sentence for under a chart: what a metric's value is and where it comes from."""
    metric = METRIC_REGISTRY[name]
    if name in STATIC_METRICS:
        return f"**{metric.label}** = mean over tokens of {metric.formula}. Source: {metric.source}."
    return f"**{name}**: {metric.formula}. Source: {metric.source}."


def metric_inputs(key: str, default: tuple[str, ...] = ("cosine",), label: str = "Metrics", form: str | None = None) -> list[str]:
    """Multiselect of every ranking metric (static and adaptive), with formulas and sources in its tooltip.

    The choice is the :func:`~.state.remembered` setting ``key``; ``form`` is the key of the ``st.form`` it is drawn in, if any.
    """
    return st.multiselect(
        label, list(METRICS), format_func=metric_label, help=metrics_help(adaptive=True),
        **remembered(key, list(default), form=form),
    )


def estimator_choice(key: str) -> str:
    """Draw the Shapley-estimator picker (the remembered setting ``<key>_estimator``) and return the estimator.

    Drawn outside the page's form, above it: a choice inside a form reaches the page only when the form is
    submitted, and the form shows only the chosen estimator's settings (:func:`estimator_inputs`).
    """
    return st.selectbox(
        "Shapley estimator (adaptive metrics)", ESTIMATORS, format_func=ESTIMATOR_LABELS.get,
        **remembered(f"{key}_estimator", ESTIMATORS[0]),
        help="loo: Shapley_i ≈ v(all) − v(all∖i), n + 1 subnetworks, no standard error. subsample: random "
        "subnetworks keeping a fraction of the units; Shapley_i = mean v with i − mean v without i. "
        "permutation: Monte-Carlo permutation Shapley with antithetic pairs. subsample and permutation "
        "report a standard error. Static metrics ignore it.",
    )


def estimator_inputs(key: str, estimator: str, form: str | None = None) -> dict:
    """Draw the settings of ``estimator`` only (none for leave-one-out), as :func:`~.state.remembered` settings ``<key>_<name>``.

    Args:
        key: prefix of the settings.
        estimator: what :func:`estimator_choice` returned.
        form: the key of the ``st.form`` they are drawn in, if any.

    Returns:
        ``{"estimator", "budget", "fraction"}`` for :func:`pruneviz.api.influence` (a setting the estimator does not
        use keeps its remembered value; static metrics ignore all three).
    """
    most = cap("budget", 4096)
    budget = min(max(int(st.session_state.get(f"{key}_budget", min(8, most))), 1), most)
    fraction = float(st.session_state.get(f"{key}_fraction", 0.5))
    if estimator == "loo":
        st.caption("Leave-one-out has no settings: it evaluates the full model and each unit removed, n + 1 subnetworks.")
        return {"estimator": estimator, "budget": budget, "fraction": fraction}
    left, right = st.columns(2)
    budget = left.number_input(
        "Budget", 1, most, **remembered(f"{key}_budget", min(8, most), (1, most), form),
        help="Random subnetworks evaluated." if estimator == "subsample"
        else "Antithetic permutation pairs; each pair evaluates up to 2n subnetworks.",
    )
    if estimator == "subsample":
        fraction = right.slider(
            "Fraction kept", 0.1, 0.9, step=0.05, **remembered(f"{key}_fraction", 0.5, form=form),
            help="The share of the units present in each random subnetwork.",
        )
    return {"estimator": estimator, "budget": int(budget), "fraction": float(fraction)}


def adaptive_metrics(metrics: list[str]) -> list[str]:
    """The adaptive (Shapley) metrics among ``metrics``."""
    return [m for m in metrics if m in ADAPTIVE_METRICS]


def scheme_input(name: str, form: str | None = None, container=st, help: str = "Which kind of unit is ranked and removed.") -> str:
    """A picker of the units a ranking orders and removes (:data:`~pruneviz.core.plan.RANKED_SELECTIONS`).

    Args:
        name: the remembered setting (:func:`~pruneviz.ui.state.remembered`), e.g. ``"curves_scheme"``.
        form: the key of the ``st.form`` it is drawn in, if any.
        container: where to draw it (a column), ``st`` by default.
    """
    return container.selectbox(
        "Scheme", RANKED_SELECTIONS, format_func=lambda selection: UNIT_SELECTIONS[selection].label, help=help,
        **remembered(name, RANKED_SELECTIONS[0], form=form),
    )
