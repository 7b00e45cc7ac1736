"""Links that restore a session's plan and view settings: :data:`PERMALINK` maps query parameters to settings."""

from __future__ import annotations

import streamlit as st

from ..api import METRICS
from ..assets import EMBEDDED_MODELS
from ..deployment import Deployment
from ..evaluation.mmlu import FORMATS
from ..permalink import Param, parse, render
from .state import FIGURE_FORMAT_KEY, FIGURE_FORMATS, OTHER_MODEL, PLAN_KEY

PERMALINK_APPLIED_KEY = "_permalink_applied"
# query parameter -> setting; the plan is validated against the model by the page that draws it
PERMALINK = {
    "plan": Param(PLAN_KEY, str),
    "figure": Param(FIGURE_FORMAT_KEY, str, FIGURE_FORMATS),
    "metric": Param("influence_metric", str, METRICS),
    "log": Param("influence_log", bool),
    "wiki": Param("use_wiki", bool),
    "windows": Param("wiki_windows", int, limit="samples", highest=512),
    "tokens": Param("wiki_seq_len", int, limit="seq_len"),
    "mmlu": Param("use_mmlu", bool),
    "format": Param("mmlu_format", str, FORMATS),
    "per_subject": Param("mmlu_per_subject", int, limit="per_subject", highest=2000),
    "chart": Param("mmlu_chart_metric", str, ("acc", "acc_norm")),
}


def permalink_params() -> dict[str, str]:
    """The query parameters that restore this session's plan and view settings (settings never set are left out)."""
    params = {}
    choice = st.session_state.get("model_choice")
    if choice and choice != OTHER_MODEL:
        params["model"] = choice
    for name, param in PERMALINK.items():
        value = st.session_state.get(param.key)
        if value is not None and value != "":
            params[name] = render(value)
    return params


def apply_permalink(deployment: Deployment) -> None:
    """On a session's first run, copy the query parameters of :data:`PERMALINK` into the session's settings.

    Unknown parameters are ignored; a malformed value is skipped with one warning each; numbers are
    capped by the deployment's limits. The model is restored only when it is one the picker offers
    (never a typed path: a link must not make the server load a file).
    """
    if st.session_state.get(PERMALINK_APPLIED_KEY):
        return
    st.session_state[PERMALINK_APPLIED_KEY] = True
    for name, text in st.query_params.to_dict().items():
        if name == "model":
            offered = deployment.models if deployment.demo else tuple(EMBEDDED_MODELS)
            if text in offered:
                st.session_state["model_choice"] = text
            continue
        if name not in PERMALINK:
            continue
        try:
            value = parse(name, PERMALINK[name], text, deployment)
        except ValueError as problem:
            st.warning(str(problem))
            continue
        st.session_state[PERMALINK[name].key] = value
