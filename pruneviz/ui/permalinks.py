"""Links that restore a session's plan and a page's view settings: :func:`page_params` maps query parameters to settings."""

from __future__ import annotations

import streamlit as st

from ..api import METRICS, RANKED_SELECTIONS
from ..core.assets import EMBEDDED_MODELS
from ..deployment import Deployment
from ..evaluation.mmlu import FORMATS
from ..permalink import Param, parse, render
from .state import FIGURE_FORMAT_KEY, FIGURE_FORMATS, OTHER_MODEL, PLAN_KEY, shown

PERMALINK_APPLIED_KEY = "_permalink_applied"
# query parameters of every page; the plan is validated against the model by the page that draws it
COMMON_PARAMS = {
    "plan": Param(PLAN_KEY, str),
    "figure": Param(FIGURE_FORMAT_KEY, str, FIGURE_FORMATS),
}


def task_params(key: str) -> dict[str, Param]:
    """The query parameters of the settings that :func:`pruneviz.ui.task_inputs` remembers under the prefix ``key``."""
    return {
        "wiki": Param(f"{key}_wiki", bool),
        "windows": Param(f"{key}_windows", int, limit="samples", highest=512),
        "tokens": Param(f"{key}_window_len", int, limit="seq_len"),
        "format": Param(f"{key}_format", str, FORMATS),
        "per_subject": Param(f"{key}_per_subject", int, limit="per_subject", highest=2000),
    }


# a page's own settings, by the name the page gives pruneviz.ui.page: a link carries those of the page it was made on
PAGE_PARAMS = {
    "Influence": {
        "metric": Param("influence_metric", str, METRICS),
        "log": Param("influence_log", bool),
    },
    "Prune and evaluate": {
        "wiki": Param("use_wiki", bool),
        "windows": Param("wiki_windows", int, limit="samples", highest=512),
        "tokens": Param("wiki_seq_len", int, limit="seq_len"),
        "mmlu": Param("use_mmlu", bool),
        "format": Param("mmlu_format", str, FORMATS),
        "per_subject": Param("mmlu_per_subject", int, limit="per_subject", highest=2000),
        "chart": Param("mmlu_chart_metric", str, ("acc", "acc_norm")),
    },
    "Pruning curves": {
        **task_params("curves"),
        "heldout": Param("curves_heldout", bool),
        "scheme": Param("curves_scheme", str, RANKED_SELECTIONS),
        "steps": Param("curves_steps", int),
        "iterative": Param("curves_iterative", bool),
    },
    "Task trade-offs": {
        **task_params("tradeoff"),
        "heldout": Param("tradeoff_heldout", bool),
        "scheme": Param("tradeoff_scheme", str, RANKED_SELECTIONS),
        "count": Param("tradeoff_count", int),
    },
    "Recovery": task_params("recovery"),
}


def page_params(page: str | None) -> dict[str, Param]:
    """Query parameter -> setting for ``page`` (``None``, the landing page: only the plan and figure format)."""
    return {**COMMON_PARAMS, **PAGE_PARAMS.get(page, {})}


def permalink_params(page: str | None = None) -> dict[str, str]:
    """The query parameters that restore this session's plan and ``page``'s view settings (settings never set are left out)."""
    params = {}
    # the model even when it is the default one: a link must open the model it was made with
    choice = shown("model_choice")
    if choice and choice != OTHER_MODEL:
        params["model"] = choice
    for name, param in page_params(page).items():
        value = st.session_state.get(param.key)
        if value is not None and value != "":
            params[name] = render(value)
    return params


def apply_permalink(deployment: Deployment, page: str | None = None) -> None:
    """On a session's first run, copy the query parameters of :func:`page_params` into the session's settings.

    Unknown parameters (and those of other pages) are ignored; a malformed value is skipped with one
    warning each; numbers are capped by the deployment's limits. The model is restored only when it is
    one the picker offers (never a typed path: a link must not make the server load a file).
    """
    if st.session_state.get(PERMALINK_APPLIED_KEY):
        return
    st.session_state[PERMALINK_APPLIED_KEY] = True
    params = page_params(page)
    for name, text in st.query_params.to_dict().items():
        if name == "model":
            offered = deployment.models if deployment.demo else tuple(EMBEDDED_MODELS)
            if text in offered:
                st.session_state["model_choice"] = text
            continue
        if name not in params:
            continue
        try:
            value = parse(name, params[name], text, deployment)
        except ValueError as problem:
            st.warning(str(problem))
            continue
        st.session_state[params[name].key] = value
