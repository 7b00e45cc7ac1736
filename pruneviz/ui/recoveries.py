"""The recoveries fitted (or adopted from an export) in this session, kept per model and plan."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from ..core.loading import LoadedModel
from ..core.plan import PruningPlan
from ..studies.recovery import Recovery
from .state import RECOVERIES_KEY


@dataclass
class FittedRecovery:
    """A recovery fitted in this session, with the name it is shown under and where it was saved.

    Attributes:
        name: display name (method/fit plus the inputs and calibration data that tell fits apart).
        recovery: the fitted stand-ins.
        directory: where :meth:`pruneviz.studies.recovery.Recovery.save` wrote them (under the cache dir).
    """

    name: str
    recovery: Recovery
    directory: Path


def fitted_recoveries(loaded: LoadedModel, plan: PruningPlan) -> dict[str, FittedRecovery]:
    """Recoveries fitted in this session for ``plan`` on this model, oldest first."""
    return st.session_state.get(RECOVERIES_KEY, {}).get((loaded.fingerprint, str(plan)), {})


def remember_recovery(loaded: LoadedModel, plan: PruningPlan, fitted: FittedRecovery) -> None:
    """Keep ``fitted`` for ``plan`` (a refit under the same name replaces the old one and becomes the newest)."""
    store = st.session_state.setdefault(RECOVERIES_KEY, {})
    entries = store.setdefault((loaded.fingerprint, str(plan)), {})
    entries.pop(fitted.name, None)
    entries[fitted.name] = fitted


def saved_copy(loaded: LoadedModel, plan: PruningPlan, recovery: Recovery) -> Path | None:
    """Where a recovery fitted earlier in this session for ``plan`` with the same stand-ins (same fingerprint)
    was saved, if that directory still exists: a refit of the same settings (a cache hit) is not saved again."""
    return next(
        (fitted.directory for fitted in fitted_recoveries(loaded, plan).values()
         if fitted.recovery.fingerprint == recovery.fingerprint and fitted.directory.is_dir()),
        None,
    )


def forget_recoveries(loaded: LoadedModel, plan: PruningPlan) -> None:
    """Drop the recoveries fitted for ``plan`` on this model (their saved directories stay)."""
    st.session_state.get(RECOVERIES_KEY, {}).pop((loaded.fingerprint, str(plan)), None)


NO_RECOVERY = "none"


def recovery_input(loaded: LoadedModel, plan: PruningPlan, key: str, help: str) -> FittedRecovery | None:
    """Pick one of the recoveries fitted for ``plan`` on the Recovery page (newest first), or none.

    Args:
        key: the picker's session-state key (an adopted export preselects its recovery by writing it).
        help: what applying the stand-ins means on this page.
    """
    fitted = fitted_recoveries(loaded, plan)
    names = [NO_RECOVERY, *reversed(fitted)]
    name = st.selectbox("Recovery stand-ins", names, key=key, disabled=len(names) == 1, help=help)
    if len(names) == 1:
        st.caption("None fitted for this plan yet: fit stand-ins on the Recovery page to apply them here.")
    return None if name == NO_RECOVERY else fitted[name]
