"""Permalinks: query parameters that restore a plan and view settings, read and written without Streamlit.

:func:`pruneviz.ui.apply_permalink` copies parsed values into the session; a malformed value is skipped
with a one-sentence warning, numbers are capped by the deployment's limits (demo mode).
"""

from __future__ import annotations

from dataclasses import dataclass

from .core.errors import PlanError
from .core.plan import PruningPlan
from .deployment import Deployment


@dataclass(frozen=True)
class Param:
    """One query parameter of the permalink: the session-state key it restores and how to read it.

    ``kind`` is ``str``, ``int`` or ``bool``; ``choices`` limits a ``str``; ``limit`` names the
    deployment cap of an ``int`` (which is at least 1); ``highest`` is its largest value outside demo mode.
    """

    key: str
    kind: type
    choices: tuple = ()
    limit: str | None = None
    highest: int = 1 << 20


def render(value) -> str:
    """A setting's value as query-parameter text (booleans as ``0``/``1``)."""
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
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"The link's '{name}' must be a whole number of at least 1 (got '{text}'); it was ignored.")
        highest = deployment.cap(param.limit, param.highest) if param.limit else param.highest
        return min(int(text), highest)
    if name == "plan":
        try:
            return str(PruningPlan.parse(text))
        except PlanError as error:
            raise ValueError(f"The link's plan was ignored: {error}") from error
    if param.choices and text not in param.choices:
        raise ValueError(f"The link's '{name}' must be one of {', '.join(param.choices)} (got '{text}'); it was ignored.")
    return text
