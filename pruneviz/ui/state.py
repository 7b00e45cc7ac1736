"""What every page shares through ``st.session_state``: its keys, the remembered sidebar settings, and the deployment's limits."""

from __future__ import annotations

import streamlit as st

from ..deployment import Deployment, load_deployment
from .feedback import run_or_stop

# st.session_state key of the current pruning plan's canonical string, shared by every page
PLAN_KEY = "plan"
# st.session_state key of the Influence page's last result ({"table", "settings", "model"}), which the prune page ranks by
INFLUENCE_RESULT_KEY = "influence_result"
# st.session_state key of the (model fingerprint, directory) of the export whose plan this session adopted
ADOPTED_EXPORT_KEY = "adopted_export"
# st.session_state key of the recoveries fitted so far: {(model fingerprint, plan): {name: FittedRecovery}}
RECOVERIES_KEY = "recoveries"
# remembered setting: evaluate every plan change on the Prune and evaluate page (and compute the baseline at load)
AUTO_EVALUATE_KEY = "auto_evaluate"
# widget key of the Prune and evaluate page's recovery picker (an adopted export preselects its recovery there)
PRUNE_RECOVERY_KEY = "prune_recovery"
FIGURE_FORMATS = ("png", "svg")
FIGURE_FORMAT_KEY = "figure_format"
# the model choice whose model is typed into a text box (a permalink never restores it)
OTHER_MODEL = "other"


# st.session_state key of {form key: {name: value shown} of the remembered settings drawn in that st.form}
FORM_SETTINGS_KEY = "_form_settings"


def _keep_setting(name: str) -> None:
    """on_change of a sidebar widget: copy its new value to the page-independent setting ``name``."""
    st.session_state[name] = st.session_state[f"_{name}"]


def _keep_form_settings(form: str) -> None:
    """on_click of a form's submit button: keep the settings of ``form`` whose submitted value the user changed.

    A value left as shown is not a choice: a default keeps following the model, and a setting shown brought
    inside a number input's bounds keeps its own value for a model it fits.
    """
    for name, shown_value in st.session_state.get(FORM_SETTINGS_KEY, {}).get(form, {}).items():
        widget_key = f"_{name}"
        if widget_key in st.session_state and st.session_state[widget_key] != shown_value:
            _keep_setting(name)


def remembered(name: str, default, bounds: tuple[float, float] | None = None, form: str | None = None) -> dict:
    """Keyword arguments for the widget of the setting ``name``: its key, seeded from the setting, and its on_change.

    Streamlit forgets a widget's state when a run does not draw it (another page; a model switch that
    stops the page, after which the browser redraws the widget at its default) and the same key on
    another page is another widget, so the chosen value is kept under ``name`` itself, copied there by
    the widget's on_change (which runs before the page, so the sidebar's permalink sees it), and every
    run seeds the widget from it. A permalink restores the setting by writing ``name``. Give the widget
    no default of its own (no ``value`` / ``index``): Streamlit warns about a widget set both ways.
    Until the user (or a link) chooses a value, ``name`` stays unset and the widget shows ``default``
    as this run computes it, so defaults that depend on the model (the MMLU format, the longest window)
    follow a model switch.

    Widgets in a ``st.form`` take no on_change: pass ``form`` (the form's key) and submit the form with
    :func:`form_submit_button`, which keeps the submitted values that differ from those shown. Such a widget is seeded only when its
    value differs from the setting's: the browser holds the user's unsubmitted edits of a form, and
    seeding the widget in a run that the form did not start would overwrite them.

    Args:
        name: the setting's ``st.session_state`` key; the widget's key is ``_<name>``.
        default: the value shown while none is chosen.
        bounds: ``(lowest, highest)`` of a number input: a chosen value outside them (chosen for a model
            with a longer context, or written by a link) is shown brought inside, where Streamlit would
            silently show the lowest value instead; the choice itself is kept for a model it fits.
        form: the key of the ``st.form`` the widget is drawn in, if any.
    """
    widget_key = f"_{name}"
    value = st.session_state.get(name, default)
    if bounds is not None:
        value = min(max(value, bounds[0]), bounds[1])
    if form is None:
        st.session_state[widget_key] = value
        return {"key": widget_key, "on_change": _keep_setting, "args": (name,)}
    st.session_state.setdefault(FORM_SETTINGS_KEY, {}).setdefault(form, {})[name] = value
    if widget_key not in st.session_state or st.session_state[widget_key] != value:
        st.session_state[widget_key] = value
    return {"key": widget_key}


def form_submit_button(form: str, label: str, **kwargs) -> bool:
    """The submit button of the ``st.form`` with key ``form``; pressing it keeps the form's :func:`remembered` settings.

    ``kwargs`` go to ``st.form_submit_button``. Returns whether it was pressed in this run.
    """
    return st.form_submit_button(label, on_click=_keep_form_settings, args=(form,), **kwargs)


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
