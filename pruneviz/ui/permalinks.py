"""Links that restore a session's plan and a page's view settings.

:class:`Param` says which setting a query parameter restores, :func:`parse` / :func:`render` read and write its
text (no Streamlit needed), :func:`page_params` maps a page's query parameters to settings, and
:func:`apply_permalink` copies a link's values into the session (a malformed value is skipped with a
one-sentence warning; numbers are capped by the deployment's limits in demo mode).
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from ..api import METRICS, RANKED_SELECTIONS
from ..core.assets import EMBEDDED_MODELS
from ..core.errors import PlanError
from ..core.formatting import is_whole_number
from ..core.plan import PruningPlan
from ..data.generative import GENERATIVE_TASKS, PROMPT_FORMATS
from ..deployment import Deployment
from ..evaluation.mmlu import FORMATS
from .state import FIGURE_FORMAT_KEY, FIGURE_FORMATS, OTHER_MODEL, PLAN_KEY, shown


@dataclass(frozen=True)
class Param:
    """One query parameter of the permalink: the session-state key it restores and how to read it.

    ``kind`` is ``str``, ``int``, ``bool`` or ``list`` (of strings, written as a comma list); ``choices`` limits a
    ``str`` or each item of a ``list``; ``limit`` names the deployment cap of an ``int`` (which is at least 1);
    ``highest`` is its largest value outside demo mode.
    """

    key: str
    kind: type
    choices: tuple = ()
    limit: str | None = None
    highest: int = 1 << 20


def render(value) -> str:
    """A setting's value as query-parameter text (booleans as ``0``/``1``, lists as comma lists)."""
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return ("1" if value else "0") if isinstance(value, bool) else str(value)


def parse(name: str, param: Param, text: str, deployment: Deployment):
    """A query parameter's value as its setting's type (numbers capped by the deployment).

    ``name`` is the query parameter; ``"plan"`` is parsed as a :class:`~pruneviz.core.plan.PruningPlan` and
    returned in canonical form.

    Raises:
        ValueError: the value is malformed; its message names the parameter and says it was ignored.
    """
    if param.kind is bool:
        if text not in ("0", "1"):
            raise ValueError(f"The link's '{name}' must be 0 or 1 (got '{text}'); it was ignored.")
        return text == "1"
    if param.kind is int:
        if not is_whole_number(text) or int(text) < 1:
            raise ValueError(f"The link's '{name}' must be a whole number of at least 1 (got '{text}'); it was ignored.")
        highest = deployment.cap(param.limit, param.highest) if param.limit else param.highest
        return min(int(text), highest)
    if param.kind is list:
        items = [item for item in text.split(",") if item]
        if unknown := [item for item in items if item not in param.choices]:
            raise ValueError(f"The link's '{name}' may list only {', '.join(param.choices)} (got '{unknown[0]}'); it was ignored.")
        return list(dict.fromkeys(items))
    if name == "plan":
        try:
            return str(PruningPlan.parse(text))
        except PlanError as error:
            raise ValueError(f"The link's plan was ignored: {error}") from error
    if param.choices and text not in param.choices:
        raise ValueError(f"The link's '{name}' must be one of {', '.join(param.choices)} (got '{text}'); it was ignored.")
    return text


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
        "generative": Param(f"{key}_generative", list, GENERATIVE_TASKS),
        "per_task": Param(f"{key}_per_task", int, limit="samples", highest=500),
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
        **{task: Param(f"use_{task}", bool) for task in GENERATIVE_TASKS},
        "per_task": Param("generative_per_task", int, limit="samples", highest=500),
        "prompt": Param("generative_prompt_format", str, PROMPT_FORMATS),
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
