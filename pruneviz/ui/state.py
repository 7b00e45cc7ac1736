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


def remembered(name: str, default, bounds: tuple[int, int] | None = None) -> dict:
    """Keyword arguments for the widget of the setting ``name``: its key, seeded from the setting, and its on_change.

    Streamlit forgets a widget's state when a run does not draw it (another page; a model switch that
    stops the page, after which the browser redraws the widget at its default) and the same key on
    another page is another widget, so the chosen value is kept under ``name`` itself, copied there by
    the widget's on_change (which runs before the page, so the sidebar's permalink sees it), and every
    run seeds the widget from it. A permalink restores the setting by writing ``name``. Give the widget
    no default of its own (no ``value`` / ``index``): Streamlit warns about a widget set both ways.
    Until the user (or a link) chooses a value, ``name`` stays unset and the widget shows ``default``
    as this run computes it, so defaults that depend on the model (the MMLU format, the longest window)
    follow a model switch. Widgets in a ``st.form`` take no on_change, so they cannot be remembered this way.

    Args:
        name: the setting's ``st.session_state`` key; the widget's key is ``_<name>``.
        default: the value shown while none is chosen.
        bounds: ``(lowest, highest)`` of a number input: a chosen value outside them (chosen for a model
            with a longer context, or written by a link) is shown brought inside, where Streamlit would
            silently show the lowest value instead; the choice itself is kept for a model it fits.
    """
    widget_key = f"_{name}"
    value = st.session_state.get(name, default)
    if bounds is not None:
        value = min(max(value, bounds[0]), bounds[1])
    st.session_state[widget_key] = value
    return {"key": widget_key, "on_change": _keep_setting, "args": (name,)}


def shown(name: str):
    """The value the widget of the :func:`remembered` setting ``name`` shows in this run (chosen or default;
    ``None`` before the widget is drawn)."""
    return st.session_state.get(f"_{name}")


def current_deployment() -> Deployment:
    """The deployment settings (:func:`pruneviz.deployment.load_deployment`); a bad configuration file stops the page with its error."""
    return run_or_stop(load_deployment)


def cap(name: str, maximum: int) -> int:
    """The largest value a picker for the limit ``name`` offers: ``maximum``, capped by the deployment in demo mode."""
    return current_deployment().cap(name, maximum)
