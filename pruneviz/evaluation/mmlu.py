"""MMLU evaluation in letter and cloze format, matching lm-evaluation-harness's prompts and scoring.

Letter format (lm-eval task ``mmlu``)::

    The following are multiple choice questions (with answers) about {subject}.\\n\\n
    [k exemplars: {question}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer: {gold letter}\\n\\n]
    {question}\\nA. {a}\\nB. {b}\\nC. {c}\\nD. {d}\\nAnswer:

scored by the log-probabilities of the continuations " A".." D" at the last position (one forward
pass per question): ``acc`` = argmax is gold; ``loss`` = cross-entropy of the gold letter over the four
letter logits (nats; the paper's "MMLU loss").

Cloze format (lm-eval task ``mmlu_continuation``)::

    The following are questions (with answers) about {subject}.\\n\\n[exemplars]Question: {question}\\nAnswer:

scored by each answer text's summed log-likelihood as continuation " {answer}": ``acc`` = argmax;
``acc_norm`` = argmax of log-likelihood divided by the answer's length in characters.
"""

from __future__ import annotations

import time

import pandas as pd
import torch

from ..data.mmlu import LETTERS, load_mmlu, mmlu_fingerprint, mmlu_half, select_subjects, split_exemplars
from ..errors import DataError, SettingError
from ..gating import apply_plan
from ..plan import PruningPlan
from .results import EvaluationResult, mean_stderr, proportion_stderr
from .scoring import Progress, continuation_logprobs, encode_pair, last_position_logprobs, run_batched, single_token_ids

FORMATS = ("letter", "cloze")
CLOZE_BELOW_PARAMS = 1_000_000_000


def default_format(params_total: int) -> str:
    """Cloze for models under 1B parameters (they sit at chance in letter format), else letter."""
    return "cloze" if params_total < CLOZE_BELOW_PARAMS else "letter"


def letter_question(row) -> str:
    """A question with its lettered choices, ending in ``"Answer:"``."""
    options = "".join(f"\n{letter}. {choice}" for letter, choice in zip(LETTERS, row.choices))
    return f"{row.question.strip()}{options}\nAnswer:"


def cloze_question(row) -> str:
    """``"Question: {question}\\nAnswer:"``."""
    return f"Question: {row.question.strip()}\nAnswer:"


def build_prompt(row, exemplars: pd.DataFrame, fmt: str) -> str:
    """The full prompt for one question: description, ``k`` solved exemplars of its subject, the question."""
    if fmt == "letter":
        description = f"The following are multiple choice questions (with answers) about {row.subject}.\n\n"
        shots = "".join(f"{letter_question(e)} {LETTERS[e.answer]}\n\n" for e in exemplars.itertuples())
        return description + shots + letter_question(row)
    description = f"The following are questions (with answers) about {row.subject}.\n\n"
    shots = "".join(f"{cloze_question(e)} {e.choices[e.answer]}\n\n" for e in exemplars.itertuples())
    return description + shots + cloze_question(row)


def _score_letter(loaded, prompts: list[str], batch_size: int, progress: Progress | None) -> torch.Tensor:
    """``[n, 4]`` log-probabilities of " A".." D" after each prompt."""
    tokenizer = loaded.tokenizer
    encoded = []
    for prompt in prompts:
        letter_ids = single_token_ids(tokenizer, prompt, [f" {letter}" for letter in LETTERS])
        encoded.append((tokenizer(prompt)["input_ids"], letter_ids))
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))

    def compute(indices):
        prompts_ids = [encoded[i][0] for i in indices]
        candidates = torch.tensor([encoded[i][1] for i in indices])
        return list(last_position_logprobs(loaded, prompts_ids, candidates))

    scores = run_batched(order, batch_size, compute, progress)
    result = torch.empty(len(prompts), 4)
    for i, row in zip(order, scores):
        result[i] = row
    return result


def _score_cloze(loaded, prompts: list[str], choices: list[tuple], batch_size: int, progress: Progress | None) -> torch.Tensor:
    """``[n, 4]`` summed log-likelihoods of each answer text after each prompt."""
    pairs = [encode_pair(loaded.tokenizer, p, f" {c}") for p, options in zip(prompts, choices) for c in options]
    order = sorted(range(len(pairs)), key=lambda i: -len(pairs[i][0]) - len(pairs[i][1]))
    scores = run_batched(order, batch_size, lambda idx: continuation_logprobs(loaded, [pairs[i] for i in idx]), progress)
    flat = torch.empty(len(pairs), dtype=torch.float64)
    for i, value in zip(order, scores):
        flat[i] = value
    return flat.view(len(prompts), 4)


def evaluate_mmlu(
    loaded,
    plan: PruningPlan,
    subset: str | None = None,
    fmt: str = "letter",
    shots: int = 0,
    per_subject: int | None = None,
    source: str = "mmlu",
    half: str = "all",
    batch_size: int = 16,
    progress: Progress | None = None,
    stand_ins: dict | None = None,
) -> EvaluationResult:
    """Evaluate MMLU under ``plan``.

    Args:
        loaded: a ``LoadedModel``.
        plan: units to prune (validated against the model).
        subset: subject, category (STEM / humanities / social sciences / other), comma list, or ``None`` = all.
        fmt: ``"letter"`` or ``"cloze"``.
        shots: k of k-shot; the first k questions of each subject are exemplars and are not scored.
        per_subject: score at most this many questions per subject.
        source: ``"mmlu"`` (embedded), ``"cais/mmlu"`` or a question file.
        half: ``"all"``, or ``"test"`` / ``"fit"``: the odd / even questions of each subject (held-out
            protocol for adaptive metrics computed on the other half).
        batch_size: prompts (letter) or prompt-answer pairs (cloze) per forward pass.
        progress: ``progress(done, total)``; may raise ``Cancelled``.
        stand_ins: recovery stand-ins for pruned units (see :func:`pruneviz.gating.apply_plan`).

    Returns:
        :class:`EvaluationResult` with per-question ``items`` and per-subject / per-category tables.

    Raises:
        DataError: unknown subset, too many shots for a subject, malformed question file.
        TokenizationError: (letter format) a letter is not a single token after the prompt.
        PlanError: the plan names a block the model lacks.
    """
    plan.validate(loaded.n_blocks)
    if fmt not in FORMATS:
        raise SettingError(f"MMLU format '{fmt}' is unknown; use letter or cloze.")
    started = time.perf_counter()
    table = load_mmlu(source)
    subjects = select_subjects(table, subset)
    exemplars, scored = split_exemplars(table, subjects, shots, per_subject)
    scored = mmlu_half(scored, half)
    if scored.empty:
        raise DataError(
            f"No MMLU questions are left to score ({half} half of {per_subject} per subject after {shots} "
            "exemplars); raise the questions per subject."
        )
    by_subject = {s: g for s, g in exemplars.groupby("subject")}
    empty = exemplars.iloc[:0]
    rows = list(scored.itertuples())
    prompts = [build_prompt(row, by_subject.get(row.subject, empty), fmt) for row in rows]
    with apply_plan(plan, stand_ins):
        if fmt == "letter":
            scores = _score_letter(loaded, prompts, batch_size, progress)
        else:
            scores = _score_cloze(loaded, prompts, [row.choices for row in rows], batch_size, progress)
    items = scored[["subject", "category", "answer"]].reset_index(drop=True)
    gold = torch.tensor(items["answer"].to_numpy())
    items["pred"] = scores.argmax(1).numpy()
    items["correct"] = (items["pred"] == items["answer"]).astype(float)
    if fmt == "letter":
        # 4-way cross-entropy of the gold letter over the letter logits (nats)
        items["loss"] = (-torch.log_softmax(scores.double(), 1).gather(1, gold[:, None])[:, 0]).numpy()
        value_columns = {"acc": "correct", "loss": "loss"}
    else:
        lengths = torch.tensor([[len(c) for c in row.choices] for row in rows], dtype=torch.float64)
        items["pred_norm"] = (scores / lengths).argmax(1).numpy()
        items["correct_norm"] = (items["pred_norm"] == items["answer"]).astype(float)
        value_columns = {"acc": "correct", "acc_norm": "correct_norm"}
    metrics, stderr = summarise_items(items, value_columns)
    note = f"first {shots} questions of each subject held out as exemplars and not scored" if shots else ""
    return EvaluationResult(
        task=f"mmlu:{subset}" if subset else "mmlu",
        n=len(items),
        metrics=metrics,
        stderr=stderr,
        prune=str(plan),
        seconds=time.perf_counter() - started,
        settings={
            "format": fmt, "shots": shots, "per_subject": per_subject, "source": source, "half": half,
            "data_fingerprint": mmlu_fingerprint(source), "note": note,
        },
        items=items,
        per_subject=group_items(items, "subject", value_columns),
        per_category=group_items(items, "category", value_columns),
    )


def summarise_items(items: pd.DataFrame, value_columns: dict[str, str]) -> tuple[dict, dict]:
    """Overall metrics and standard errors from per-question ``items``.

    Args:
        items: one row per question.
        value_columns: metric name -> column of ``items`` (``acc*``: 0/1 per question; others: a value per question).

    Returns:
        ``(metrics, stderr)`` dicts keyed by metric name (proportion stderr for ``acc*``, else stderr of the mean).
    """
    metrics, stderr = {}, {}
    for name, column in value_columns.items():
        metrics[name] = float(items[column].mean())
        stderr[name] = proportion_stderr(metrics[name], len(items)) if name.startswith("acc") else mean_stderr(items[column])
    return metrics, stderr


def group_items(items: pd.DataFrame, key: str, value_columns: dict[str, str]) -> pd.DataFrame:
    """Per-``key`` (``"subject"`` or ``"category"``) table: ``key``, ``n``, one mean column per metric (+ ``category`` per subject)."""
    grouped = items.groupby(key, sort=True)
    table = grouped.size().rename("n").to_frame()
    for name, column in value_columns.items():
        table[name] = grouped[column].mean()
    if key == "subject":
        table["category"] = grouped["category"].first()
    return table.reset_index()
