"""The pruning-plan editor every page shares: a text box and, on the prune page, a grid of toggles.

One plan per session, kept as its canonical string in ``st.session_state[PLAN_KEY]``; every editor on
every page writes it through the callbacks below and is redrawn from it. A rejected text edit stays in its
box with one error sentence, and the previous plan stays in force.
"""

from __future__ import annotations

import math

import streamlit as st

from ..core.cost import plan_cost
from ..core.errors import PlanError
from ..core.loading import LoadedModel
from ..core.plan import SUBLAYERS, PruningPlan
from .state import PLAN_KEY

UNIT_KINDS = (*SUBLAYERS, "block")
# column groups (attn, mlp, block) of the toggle grid: at 1,024 px a third group cuts the labels to "1…"
TOGGLE_GROUPS = 2


def text_key(key: str) -> str:
    """Session-state key of the plan text box of the editor ``key``."""
    return f"{key}_plan"


def _error_key(key: str) -> str:
    return f"{key}_plan_error"


def toggle_key(layer: int, kind: str) -> str:
    """Session-state key of the toggle of unit ``layer`` / ``kind`` (``attn``, ``mlp`` or ``block``)."""
    return f"toggle_{layer}_{kind}"


def _draw_from(plan: PruningPlan, key: str, n_blocks: int, toggles: bool) -> None:
    """Write ``plan`` into the editor's widgets (before they are drawn, or from a callback)."""
    st.session_state[text_key(key)] = str(plan)
    st.session_state.pop(_error_key(key), None)
    if toggles:
        for layer in range(n_blocks):
            pruned = {name: (layer, name) in plan for name in SUBLAYERS}
            for name in SUBLAYERS:
                st.session_state[toggle_key(layer, name)] = pruned[name]
            st.session_state[toggle_key(layer, "block")] = all(pruned.values())


def adopt_plan(plan: PruningPlan) -> None:
    """Make ``plan`` the session's plan (from a ranking, a link, an export); every editor is redrawn from it."""
    st.session_state[PLAN_KEY] = str(plan)
    for name in [name for name in st.session_state if str(name).endswith("_plan_error")]:
        del st.session_state[name]


def _on_text(key: str, n_blocks: int, toggles: bool) -> None:
    """Callback of a plan text box: adopt a valid plan, or keep the text and remember the error."""
    try:
        plan = PruningPlan.parse(st.session_state[text_key(key)], n_blocks)
    except PlanError as error:
        st.session_state[_error_key(key)] = str(error)
        return
    st.session_state[PLAN_KEY] = str(plan)
    _draw_from(plan, key, n_blocks, toggles)


def _on_toggle(layer: int, kind: str, key: str, n_blocks: int) -> None:
    """Callback of one toggle: prune or restore that unit (a block toggle sets both sublayers)."""
    pairs = set(PruningPlan.parse(st.session_state.get(PLAN_KEY, "")).pruned)
    change = pairs.add if st.session_state[toggle_key(layer, kind)] else pairs.discard
    for name in SUBLAYERS if kind == "block" else (kind,):
        change((layer, name))
    plan = PruningPlan(frozenset(pairs))
    st.session_state[PLAN_KEY] = str(plan)
    _draw_from(plan, key, n_blocks, toggles=True)


def rejected_plan_message(error: str, plan: PruningPlan) -> str:
    """The error shown for a rejected plan edit: the problem, and that ``plan`` (the one before the edit) still applies."""
    kept = f"'{plan}'" if len(plan) else "(nothing pruned)"
    return f"{error} The edit was not applied: the previous plan {kept} stays in force."


def _toggle_grid(key: str, n_blocks: int) -> None:
    rows = max(8, math.ceil(n_blocks / TOGGLE_GROUPS))
    groups = math.ceil(n_blocks / rows)
    columns = st.columns(3 * groups)
    for row in range(rows):
        for group in range(groups):
            layer = group * rows + row
            if layer >= n_blocks:
                continue
            for offset, kind in enumerate(UNIT_KINDS):
                columns[3 * group + offset].checkbox(
                    f"{layer}.{kind}" if kind != "block" else f"block {layer}",
                    key=toggle_key(layer, kind), on_change=_on_toggle, args=(layer, kind, key, n_blocks),
                )


def plan_input(loaded: LoadedModel, key: str, toggles: bool = False) -> PruningPlan:
    """The editor of the session's plan: a text box (and a toggle per attn, mlp and block); returns the plan in force.

    A plan that does not fit this model (it was made for another one) is cleared with a warning. A rejected
    edit shows one ``st.error`` and the previous plan stays in force. Under the box: what the plan removes.

    Args:
        loaded: the model (its block count bounds the plan).
        key: the editor's name on its page (``"prune"``, ``"recovery"``, ...): its text box is ``<key>_plan``.
        toggles: also draw the grid of toggles.
    """
    n_blocks = loaded.n_blocks
    try:
        plan = PruningPlan.parse(st.session_state.get(PLAN_KEY, ""), n_blocks)
    except PlanError as error:
        st.warning(f"The previous plan does not fit this model and was cleared: {error}")
        plan = PruningPlan()
        adopt_plan(plan)
    st.session_state[PLAN_KEY] = str(plan)
    widgets = [text_key(key)] + ([toggle_key(i, k) for i in range(n_blocks) for k in UNIT_KINDS] if toggles else [])
    # every run redraws the widgets from the shared plan (the callbacks have already folded the user's last
    # edit into it) unless the box holds a rejected edit: widget state Streamlit dropped while the page was
    # not drawn (another page, a model switch) would otherwise come back from the browser stale or empty
    if _error_key(key) not in st.session_state or any(name not in st.session_state for name in widgets):
        _draw_from(plan, key, n_blocks, toggles)
    st.text_input(
        "Pruning plan", key=text_key(key), on_change=_on_text, args=(key, n_blocks, toggles),
        placeholder="nothing pruned; e.g. 3.attn,7,12.mlp",
        help=f"Shared by every page. Comma-separated units: a block index (0-{n_blocks - 1}) for the whole block, "
        "or '<i>.attn' / '<i>.mlp'. Press Enter to apply.",
    )
    if _error_key(key) in st.session_state:
        st.error(rejected_plan_message(st.session_state[_error_key(key)], plan))
    st.caption(plan_cost(loaded.info, plan, loaded.dtype.itemsize).summary())
    if toggles:
        with st.expander("Toggle units", expanded=True):
            _toggle_grid(key, n_blocks)
    return plan
