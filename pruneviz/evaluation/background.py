"""The unpruned baseline of an evaluation set, computed in the background as soon as a model loads.

Every comparison on the prune page needs the unpruned model's result on the same items, and it is the
slowest evaluation (nothing of it can be reused). Started when the model loads, it is usually cached before
the user's first toggle; a page that asks for it earlier waits for the running computation instead of
starting a second one (:func:`pruneviz.core.cache.cached_call`), hearing its progress and provisional results.

One worker thread runs the jobs one after another (two at once would only split the same cores). A model
switch cancels the jobs of the models no longer loaded, at their next progress report.
"""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from ..core.errors import Cancelled
from ..core.plan import PruningPlan
from .results import EvaluationResult
from .run import evaluate

log = logging.getLogger(__name__)
_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pruneviz-baseline")
_jobs_lock = threading.Lock()


@dataclass
class BaselineJob:
    """One background evaluation of the unpruned model: its future and its cancel switch."""

    model: str  # the model's fingerprint
    settings: dict  # keyword arguments of evaluate()
    future: Future
    cancel: threading.Event = field(default_factory=threading.Event)


_jobs: dict[tuple[str, str], BaselineJob] = {}


def _settings_key(settings: dict) -> str:
    return json.dumps(settings, sort_keys=True, default=str)


def _run(loaded, settings: dict, cancel: threading.Event) -> EvaluationResult:
    def progress(done: int, total: int) -> None:
        if cancel.is_set():
            raise Cancelled("The background baseline was cancelled: another model was loaded.")

    return evaluate(loaded, PruningPlan(), progress=progress, **settings)


def _log_failure(future: Future) -> None:
    """Say once why a background baseline failed (the page that needs it computes it and shows the error itself)."""
    if not future.cancelled() and future.exception() is not None and not isinstance(future.exception(), Cancelled):
        log.warning("The background baseline failed (%s); it is not retried in the background.", future.exception())


def start_baselines(loaded, evaluation_set: list[dict]) -> list[BaselineJob]:
    """Start (or find) the background evaluation of the unpruned ``loaded`` on each task of ``evaluation_set``.

    A job already started for the same model and settings is reused unless it was cancelled (a failed one is not
    retried: the page that needs the baseline computes it and shows the error), so calling this on every page run
    costs nothing. Results land in the result cache, where any later
    ``evaluate`` of the same baseline finds them.

    Args:
        loaded: the model; jobs of other models are cancelled (their next progress report raises ``Cancelled``).
        evaluation_set: keyword arguments of :func:`pruneviz.evaluation.run.evaluate` per task, e.g.
            ``{"task": "wiki", "windows": 8, "seq_len": 128}``.
    """
    jobs = []
    with _jobs_lock:
        for key, job in list(_jobs.items()):
            if job.model != loaded.fingerprint:
                job.cancel.set()
                job.future.cancel()  # not started yet: never starts
                del _jobs[key]
        for settings in evaluation_set:
            key = (loaded.fingerprint, _settings_key(settings))
            job = _jobs.get(key)
            if job is None or job.future.cancelled() or job.future.done() and isinstance(job.future.exception(), Cancelled):
                cancel = threading.Event()
                job = _jobs[key] = BaselineJob(
                    loaded.fingerprint, dict(settings), _executor.submit(_run, loaded, dict(settings), cancel), cancel
                )
                job.future.add_done_callback(_log_failure)
            jobs.append(job)
    return jobs


def cancel_baselines() -> None:
    """Cancel every background job (at its next progress report) and forget them."""
    with _jobs_lock:
        for job in _jobs.values():
            job.cancel.set()
            job.future.cancel()
        _jobs.clear()
