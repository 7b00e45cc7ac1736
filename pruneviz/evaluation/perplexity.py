"""Perplexity on fixed-length windows of a text corpus's evaluation half."""

from __future__ import annotations

import math
import time
from typing import Callable

import pandas as pd
import torch

from ..core.errors import SettingError
from ..core.gating import apply_plan
from ..core.plan import PruningPlan
from ..core.progress import Progress
from ..data.text import TextCorpus, load_corpus, token_windows
from ..engine.scoring import Request, score_requests
from .results import EvaluationResult, mean_stderr

# windows scored before the others, for an early provisional value (see evaluate_perplexity)
FIRST_WINDOWS = 2


def evaluate_perplexity(
    loaded,
    plan: PruningPlan,
    corpus: str = "wiki",
    windows: int = 16,
    seq_len: int = 256,
    batch_size: int = 4,
    progress: Progress | None = None,
    stand_ins: dict | None = None,
    checkpoint: bool = True,
    partial: Callable[[EvaluationResult], None] | None = None,
    kl: bool = False,
) -> EvaluationResult:
    """Perplexity = exp(mean next-token NLL) over ``windows`` non-overlapping windows of ``seq_len`` tokens.

    The windows are cut from the corpus's *evaluation* half (documents joined by blank lines), never
    from the calibration half that static metrics are computed on. ``stand_ins`` are recovery
    stand-ins for pruned units (see :func:`pruneviz.core.gating.apply_plan`). ``batch_size`` windows run per
    forward pass; ``progress(done, total)`` counts windows and may raise ``Cancelled`` (finished batches
    are cached when ``checkpoint``, so a rerun resumes). ``partial`` is called with a provisional result of the
    windows finished so far after every chunk of batches, first after the first :data:`FIRST_WINDOWS` windows.
    ``kl`` also measures, at every predicted position, the KL divergence of the plan's next-token distribution
    from the unpruned model's (Dutta et al. 2024).

    Returns:
        :class:`EvaluationResult` with metrics ``perplexity``, ``nll`` (nats/token), ``tokens`` (predicted
        tokens), with ``kl`` also ``kl`` (nats/token, mean over windows of each window's mean), and per-window ``items``.

    Raises:
        SettingError: ``seq_len`` above the model's context or below 2; fewer than 1 window.
        DataError: the corpus is too short or malformed.
        PlanError: the plan names a block the model lacks.
    """
    plan.validate(loaded.n_blocks)
    started = time.perf_counter()
    data, ids = perplexity_windows(loaded, corpus, windows, seq_len)
    requests = [window_request(window.tolist()) for window in ids]

    def result_for(scores: list, numbers: list[int] | None = None) -> EvaluationResult:
        sums = [-float(score[:, 0].sum()) for score in scores]
        divergences = [float(score[:, 1].mean()) for score in scores] if kl else None
        return perplexity_result(plan, corpus, data, seq_len, sums, time.perf_counter() - started, divergences, numbers)

    def report(scores: list) -> None:
        numbers = [number for number, score in enumerate(scores) if score is not None]
        if 0 < len(numbers) < len(scores):
            partial(result_for([scores[number] for number in numbers], numbers))

    # the first FIRST_WINDOWS windows are scored on their own, so that the first provisional value comes after one
    # short forward pass (the rest would pack them with two more windows into one row of 512 tokens): on a
    # 151,936-token vocabulary most of a late toggle's cost is the output head, which grows with the positions
    scores: list = []
    reused = 0
    with apply_plan(plan, stand_ins):
        for part in (requests[:FIRST_WINDOWS], requests[FIRST_WINDOWS:]):
            if not part:
                continue
            done, resumed = len(scores), [0]
            scores += score_requests(
                loaded, part, batch_size, progress and (lambda finished, _, done=done: progress(done + finished, len(requests))),
                partial and (lambda chunk, done=done: report(scores[:done] + chunk + [None] * (len(requests) - done - len(chunk)))),
                checkpoint, resumed=resumed, reference_kl=kl,
            )
            reused += resumed[0]
    result = result_for(scores)
    if reused:
        result.settings["resumed"] = reused  # windows read from checkpoints an earlier run left
    return result


def perplexity_windows(loaded, corpus: str, windows: int, seq_len: int) -> tuple[TextCorpus, torch.Tensor]:
    """The evaluation half of ``corpus`` and its first ``windows`` non-overlapping windows (shared by both backends).

    Returns:
        ``(data, ids)``: the corpus split and ``[windows, seq_len]`` token ids.

    Raises:
        SettingError: ``seq_len`` above the model's context or below 2; fewer than 1 window.
        DataError: the corpus is too short or malformed.
    """
    if not 2 <= seq_len <= loaded.max_length:
        raise SettingError(f"Sequence length {seq_len} is outside 2-{loaded.max_length} tokens for this model; pick one in range.")
    if windows < 1:
        raise SettingError(f"Perplexity needs at least 1 window (got {windows}); ask for 1 or more.")
    data = load_corpus(corpus, "evaluation")
    return data, token_windows(loaded.tokenizer, data.texts, seq_len, windows)


def window_request(window: list[int]) -> Request:
    """A request scoring every next token of a window: positions ``0..T-2``, candidate = the following token."""
    return Request(tuple(window), tuple(range(len(window) - 1)), tuple((token,) for token in window[1:]))


def perplexity_result(
    plan: PruningPlan, corpus: str, data: TextCorpus, seq_len: int, sums: list[float], seconds: float,
    divergences: list[float] | None = None,
    numbers: list[int] | None = None,
) -> EvaluationResult:
    """Perplexity and its standard error from per-window summed NLLs.

    Args:
        plan: the plan the windows were scored under (for the report).
        corpus: the corpus as the user named it (``"wiki"`` or a path).
        data: its evaluation split (label and fingerprint go into ``settings``).
        seq_len: tokens per window T.
        sums: per window, the summed next-token NLL (nats) over its ``T - 1`` predicted tokens.
        seconds: wall time of the computation.
        divergences: per window, the mean KL(unpruned ‖ plan) over its predicted tokens (nats), if measured.
        numbers: each window's number among all the windows (a provisional result holds some of them); default
            ``0..len(sums)-1``. The items are indexed by it.

    Returns:
        :class:`EvaluationResult` with metrics ``perplexity``, ``nll`` (nats/token), ``tokens`` and (with
        ``divergences``) ``kl``, and per-window ``items``.
    """
    windows = len(sums)
    index = pd.Index(range(len(sums)) if numbers is None else numbers, name="window")
    per_window = pd.DataFrame({"nll_sum": [float(s) for s in sums]}, index=index)
    per_window["nll"] = per_window["nll_sum"] / (seq_len - 1)
    nll = float(per_window["nll_sum"].sum() / (windows * (seq_len - 1)))
    nll_err = mean_stderr(per_window["nll"])
    metrics = {"perplexity": math.exp(nll), "nll": nll, "tokens": windows * (seq_len - 1)}
    # delta method: se(exp(m)) ~ exp(m) * se(m), over windows
    stderr = {"perplexity": math.exp(nll) * nll_err, "nll": nll_err}
    if divergences is not None:
        per_window["kl"] = pd.Series(divergences, index=index)
        metrics["kl"], stderr["kl"] = float(per_window["kl"].mean()), mean_stderr(per_window["kl"])
    return EvaluationResult(
        task=corpus,
        n=windows,
        metrics=metrics,
        stderr=stderr,
        plan=str(plan),
        seconds=seconds,
        settings={"windows": windows, "seq_len": seq_len, "split": data.label, "data_fingerprint": data.fingerprint},
        items=per_window,
    )

