"""How long work reports back to the page: errors that stop it, a progress bar, and a Cancel button."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import streamlit as st

from ..core.errors import Cancelled, PrunevizError

T = TypeVar("T")
# st.session_state keys of the running work's cancel event and of "the last work was cancelled"
CANCEL_EVENT_KEY = "_cancel_event"
CANCELLED_KEY = "_cancelled"
CANCEL_NOTE = (
    "Cancelled: the work stopped and the model is unchanged. Press the button again to resume; "
    "finished parts are cached and not computed twice."
)


def run_or_stop(function: Callable[..., T], *args, **kwargs) -> T:
    """Call ``function``; on a :class:`PrunevizError` show its one-sentence message and stop the page.

    A :class:`~pruneviz.core.errors.Cancelled` run is a warning, not an error: the user asked for it.
    """
    try:
        return function(*args, **kwargs)
    except Cancelled as cancelled:
        st.warning(str(cancelled))
        st.stop()
    except PrunevizError as error:
        st.error(str(error))
        st.stop()


def stop_with_error(message: str) -> None:
    """Show one ``st.error`` sentence about the user's input and stop the page."""
    st.error(message)
    st.stop()


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def request_cancel() -> None:
    """What the Cancel button does: stop this session's running work at its next progress report.

    A click reaches the server while the work runs; Streamlit (fast reruns) starts a new run of the
    page at once, which calls this first, so the old run's :class:`ProgressBar` sees the event.
    """
    event = st.session_state.get(CANCEL_EVENT_KEY)
    if event is not None:
        event.set()
    st.session_state[CANCELLED_KEY] = True


def _cancel(on_cancel: Callable[[], None] | None) -> None:
    request_cancel()
    if on_cancel is not None:
        on_cancel()


@contextmanager
def cancellable(key: str, on_cancel: Callable[[], None] | None = None) -> Iterator[threading.Event]:
    """Show a Cancel button while the block runs; :class:`ProgressBar` callbacks inside raise ``Cancelled`` once it is clicked.

    Args:
        key: keeps the button apart from other Cancel buttons (one per page section).
        on_cancel: also called when the button is clicked (at the start of the page run the click starts).
    """
    event = threading.Event()
    st.session_state[CANCEL_EVENT_KEY] = event
    st.session_state.pop(CANCELLED_KEY, None)
    slot = st.empty()
    slot.button(
        "Cancel", key=f"cancel_{key}", on_click=_cancel, args=(on_cancel,),
        help="Stop this computation. Nothing in the model changes; running it again resumes from the cached parts.",
    )
    try:
        yield event
    finally:
        slot.empty()


def cancel_notice() -> None:
    """Say, once, that the last run was cancelled (the run after the Cancel click)."""
    if st.session_state.pop(CANCELLED_KEY, False):
        st.warning(CANCEL_NOTE)


class ProgressBar:
    """A ``progress(done, total)`` callback drawing ``st.progress`` with an estimate of the time left.

    Use it as a context manager so the bar disappears when the work ends; inside :func:`cancellable`
    it raises :class:`~pruneviz.core.errors.Cancelled` once the Cancel button is clicked::

        with cancellable("evaluate"), ProgressBar("Perplexity, unpruned") as progress:
            api.evaluate(loaded, plan, progress=progress)

    The estimate is ``elapsed / done × (total − done)``: it assumes the remaining steps cost what
    the finished ones did on average. A report of ``done == 0`` restarts the clock (work that first
    prepares, e.g. a curve computing its rankings, announces the start of the counted steps that way).
    """

    def __init__(self, label: str):
        self.label = label
        self.started = time.perf_counter()
        self.cancel = st.session_state.get(CANCEL_EVENT_KEY)
        self.done, self.total = 0, 0
        self.bar = st.progress(0.0, text=f"{label} ...")

    def __call__(self, done: int, total: int) -> None:
        """Report ``done`` of ``total`` steps.

        Raises:
            Cancelled: the Cancel button of the enclosing :func:`cancellable` block was clicked.
        """
        self.done, self.total = done, total
        if done == 0:
            self.started = time.perf_counter()
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled(f"{self.label} was cancelled after {done} of {total} steps. {CANCEL_NOTE.removeprefix('Cancelled: ')}")
        fraction = done / total if total else 1.0
        elapsed = time.perf_counter() - self.started
        left = elapsed / done * (total - done) if done else None
        estimate = f", about {_duration(left)} left" if left is not None and done < total else ""
        self.bar.progress(min(fraction, 1.0), text=f"{self.label}: {done}/{total}{estimate}")

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc_info) -> None:
        self.bar.empty()
