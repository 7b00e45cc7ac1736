"""One computation per key in a process: a caller asking for a result another thread is computing waits for it.

The app's sessions share one model. The unpruned baseline is started in the background when a model loads
(:mod:`pruneviz.evaluation.background`), and the prune page asks for the same baseline moments later; computed
twice, the two would split the same cores and both finish late. The waiting caller hears the running
computation's callbacks (``progress(done, total)``, provisional results) through its own, so its progress bar
moves while it waits, and its own ``progress`` may raise ``Cancelled`` to stop waiting (the computation goes on).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping

# how often a waiting caller relays the running computation's latest callbacks to its own (seconds)
POLL_SECONDS = 0.2
# Flight.value before the leader has one (it failed, was cancelled, or is still computing)
NOTHING = object()


@dataclass
class Flight:
    """A computation in progress: when it ends, the latest arguments of each of its callbacks, and its value.

    ``value`` is set by the leader when it has computed one (:data:`NOTHING` until then): waiters take it from
    here, not from the cache, so that a value the cache could not store (a full disk) still reaches them.
    """

    finished: threading.Event = field(default_factory=threading.Event)
    latest: dict[str, tuple] = field(default_factory=dict)
    leader: int = field(default_factory=threading.get_ident)
    value: object = NOTHING

    def recorder(self, name: str, own: Callable | None) -> Callable:
        """A callback for the computation: records its arguments for waiters, then calls the computation's ``own``."""
        def record(*args):
            self.latest[name] = args
            if own is not None:
                own(*args)
        return record

    def wait(self, callbacks: Mapping[str, Callable | None]) -> None:
        """Block until the computation ends, calling ``callbacks[name]`` with its latest arguments every
        :data:`POLL_SECONDS` (whatever those callbacks raise, e.g. ``Cancelled``, ends the wait)."""
        while not self.finished.wait(POLL_SECONDS):
            for name, callback in callbacks.items():
                if callback is not None and name in self.latest:
                    callback(*self.latest[name])


_flights: dict[str, Flight] = {}
_flights_lock = threading.Lock()


@contextmanager
def lead_or_wait(key: str, callbacks: Mapping[str, Callable | None]) -> Iterator[Flight]:
    """Lead the computation of ``key``, or wait for the thread leading it.

    Yields an unfinished :class:`Flight` when this caller leads: it computes (passing :meth:`Flight.recorder`
    callbacks), sets :attr:`Flight.value`, and the flight ends when the block exits, however it exits. Yields the
    other thread's finished flight after its computation of ``key`` has ended (relaying its callbacks to
    ``callbacks`` meanwhile): the caller takes its ``value``, or, where it has none (the leader failed or was
    cancelled), looks for a stored result and computes it itself if there is none.
    """
    with _flights_lock:
        running = _flights.get(key)
        # the leader asking for its own key again (a recursive call) computes it unregistered: waiting for itself never ends
        recursive = running is not None and running.leader == threading.get_ident()
        leading = running is None
        if leading:
            running = _flights[key] = Flight()
    if recursive:
        yield Flight()
        return
    if not leading:
        running.wait(callbacks)
        yield running
        return
    try:
        yield running
    finally:
        with _flights_lock:
            del _flights[key]
        running.finished.set()


def running_keys() -> list[str]:
    """The keys being computed now (for tests and diagnostics)."""
    with _flights_lock:
        return list(_flights)
