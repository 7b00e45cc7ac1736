"""What every page shares through ``st.session_state``: its keys, the remembered sidebar settings, and the deployment's limits."""

from __future__ import annotations

import streamlit as st

from ..deployment import Deployment, load_deployment
from .feedback import run_or_stop

# st.session_state key of the current pruning plan's canonical string, shared by every page
PLAN_KEY = "plan"
# st.session_state key of the (model fingerprint, directory) of the export whose plan this session adopted
ADOPTED_EXPORT_KEY = "adopted_export"
# st.session_state key of the recoveries fitted so far: {(model fingerprint, plan): {name: FittedRecovery}}
RECOVERIES_KEY = "recoveries"
FIGURE_FORMATS = ("png", "svg")
FIGURE_FORMAT_KEY = "figure_format"
# the model choice whose model is typed into a text box (a permalink never restores it)
OTHER_MODEL = "other"


def _keep_setting(name: str) -> None:
    """on_change of a sidebar widget: copy its new value to the page-independent setting ``name``."""
    st.session_state[name] = st.session_state[f"_{name}"]


def _remembered(name: str, default) -> dict:
    """Keyword arguments for the widget of the sidebar setting ``name``: its key, seeded from the setting, and its on_change.

    Streamlit forgets a widget's state when a page that does not draw it runs (and the same key on
    another page is another widget), so the chosen value is kept under ``name`` itself, copied there
    by the widget's on_change (which runs before the page), and every page seeds its widget from it.
    """
    widget_key = f"_{name}"
    st.session_state[widget_key] = st.session_state.setdefault(name, default)
    return {"key": widget_key, "on_change": _keep_setting, "args": (name,)}


def current_deployment() -> Deployment:
    """The deployment settings (:func:`pruneviz.deployment.load_deployment`); a bad configuration file stops the page with its error."""
    return run_or_stop(load_deployment)


def cap(name: str, maximum: int) -> int:
    """The largest value a picker for the limit ``name`` offers: ``maximum``, capped by the deployment in demo mode."""
    return current_deployment().cap(name, maximum)
