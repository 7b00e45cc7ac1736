"""Generative tasks (HumanEval, arithmetic, balanced brackets): greedy completions under a plan, scored on what
the model wrote.

The completions come from the engine's batched, KV-cached decoder (:func:`pruneviz.engine.decoding.generate_requests`,
checkpointed per batch, so an interrupted evaluation resumes). HumanEval's are run with the problem's tests in the
sandbox (:mod:`pruneviz.evaluation.sandbox`), a few at a time; ``pass@1`` is the share that pass (greedy decoding:
one sample per problem, so pass@1 is that share, Chen et al. 2021). Arithmetic and brackets are scored by
``exact_match`` on the answer the completion writes (:func:`pruneviz.data.generative.exact_match`).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import pandas as pd

from ..core.gating import apply_plan
from ..core.plan import PruningPlan
from ..core.progress import Progress
from ..data.generative import (
    TASK_METRIC,
    GenerativeItem,
    arithmetic_answer,
    exact_match,
    generative_items,
    parens_answer,
    prompt_format,
    prompt_ids,
    task_fingerprint,
)
from ..engine.decoding import GenerationRequest, generate_requests
from .results import EvaluationResult, proportion_stderr
from .sandbox import TIMEOUT_SECONDS, run_program

# programs run in the sandbox at once (each is one process on one core)
SANDBOX_WORKERS = 2


def humaneval_program(item: GenerativeItem, completion: str) -> str:
    """The program that tests ``completion`` of a HumanEval problem: its prompt, the completion, its tests, the check."""
    return f"{item.prompt}{completion}\n\n{item.reference}\n\ncheck({item.entry_point})\n"


def _answer(task: str, completion: str) -> str:
    """What an item's answer is compared on, and flips are counted on: the number, the brackets, or the code."""
    if task == "arithmetic":
        return arithmetic_answer(completion) or ""
    return parens_answer(completion) if task == "parens" else completion


def evaluate_generative(
    loaded,
    plan: PruningPlan,
    task: str,
    per_task: int | None = None,
    fmt: str = "auto",
    timeout: float = TIMEOUT_SECONDS,
    batch_size: int = 8,
    progress: Progress | None = None,
    stand_ins: dict | None = None,
    checkpoint: bool = True,
    partial: Callable[[EvaluationResult], None] | None = None,
) -> EvaluationResult:
    """Evaluate ``task`` under ``plan`` by greedy generation.

    Args:
        loaded: a ``LoadedModel``.
        plan: units to prune (validated against the model).
        task: ``"humaneval"``, ``"arithmetic"`` or ``"parens"``.
        per_task: score the first N items (``None``: all; HumanEval has 164, the generated tasks 500).
        fmt: prompt format: ``"auto"`` (chat for models with a chat template, i.e. instruct models, else plain),
            ``"plain"`` or ``"chat"`` (:func:`pruneviz.data.generative.prompt_format`).
        timeout: (HumanEval) seconds each program may run in the sandbox.
        batch_size: prompts decoded together.
        progress: ``progress(done, total)`` in items generated; may raise ``Cancelled`` (finished batches are
            checkpointed).
        stand_ins: recovery stand-ins for pruned units (see :func:`pruneviz.core.gating.apply_plan`).
        checkpoint: checkpoint each finished batch of completions (``False``: no reads or writes).
        partial: called after every batch but the last with a provisional result of the items scored so far
            (each batch is scored, HumanEval's programs run, as soon as it is decoded). Batches go shortest prompt
            first, so these are not a random sample of the items: ``settings["provisional_order"]`` says so.

    Returns:
        :class:`EvaluationResult` with ``metrics`` ``{"pass@1" | "exact_match": share}`` and its binomial standard
        error, ``n`` items, per-item ``items`` (``item``, ``completion``, ``finish``, ``new_tokens``, ``pred`` = the
        answer compared, ``correct`` 0/1, and for HumanEval the sandbox's ``status`` and ``detail``), and
        ``settings`` naming the ``prompt_format`` used.

    Raises:
        DataError: an unknown task, or the HumanEval package is missing.
        SettingError: ``per_task`` below 1, an unknown prompt format, chat for a model without a chat template, or
            a prompt longer than the model's context with its token limit.
        PlanError: the plan names a block the model lacks.
        NumericalError: the model produced non-finite logits.
    """
    plan.validate(loaded.n_blocks)
    started = time.perf_counter()
    items = generative_items(task, per_task)
    fmt = prompt_format(loaded.tokenizer, fmt)
    requests = [GenerationRequest(prompt_ids(loaded.tokenizer, item, fmt), item.max_new_tokens, item.stop) for item in items]
    settings = {
        "prompt_format": fmt, "per_task": per_task, "decoding": "greedy", "data_fingerprint": task_fingerprint(task),
        "max_new_tokens": max(item.max_new_tokens for item in items),
    }
    if task == "humaneval":
        settings["timeout"] = timeout
    scored: dict[int, dict] = {}  # item index -> its row

    def score(indices: Sequence[int], generated: list) -> None:
        rows = [_row(task, i, items[i], g) for i, g in zip(indices, generated)]
        if task == "humaneval":
            with ThreadPoolExecutor(SANDBOX_WORKERS) as pool:
                runs = list(pool.map(lambda row: run_program(humaneval_program(items[row["index"]], row["completion"]), timeout), rows))
            for row, run in zip(rows, runs):
                row.update(correct=float(run.passed), status=run.status, detail=run.detail)
            settings.setdefault("sandbox", runs[0].isolation)
        scored.update((row["index"], row) for row in rows)
        if partial is not None and len(scored) < len(items):
            # batches are decoded shortest prompt first (least padding): the items so far are not a random sample
            provisional = settings | {"provisional_order": "the items with the shortest prompts first"}
            partial(_result(task, plan, provisional, [scored[i] for i in sorted(scored)], started))

    resumed = [0]
    with apply_plan(plan, stand_ins):
        generate_requests(loaded, requests, batch_size, progress, checkpoint, resumed, finished=score)
    if resumed[0]:
        settings["resumed"] = resumed[0]  # completions read from checkpoints an earlier, unfinished run left
    return _result(task, plan, settings, [scored[i] for i in range(len(items))], started)


def _row(task: str, index: int, item: GenerativeItem, generated) -> dict:
    """Item ``index``'s row: before it is judged (HumanEval), or judged by its answer (the other tasks)."""
    row = {"index": index, "item": item.item_id, "completion": generated.text, "finish": generated.finish,
           "new_tokens": len(generated.tokens), "pred": _answer(task, generated.text)}
    if task != "humaneval":
        row["correct"] = float(exact_match(task, generated.text, item.reference))
    return row


def _result(task: str, plan: PruningPlan, settings: dict, rows: list[dict], started: float) -> EvaluationResult:
    """The result of the scored ``rows`` (all items, or the first batches of a provisional result)."""
    table = pd.DataFrame(rows).set_index("index").rename_axis(None)
    metric = TASK_METRIC[task]
    share = float(table["correct"].mean())
    return EvaluationResult(
        task=task, n=len(table), metrics={metric: share}, stderr={metric: proportion_stderr(share, len(table))},
        plan=str(plan), seconds=time.perf_counter() - started, settings=dict(settings), items=table,
    )
