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
from typing import Callable

import pandas as pd
import torch

from ..core.errors import DataError, SettingError
from ..core.gating import apply_plan
from ..core.plan import PruningPlan
from ..core.progress import Progress
from ..data.mmlu import LETTERS, load_mmlu, mmlu_fingerprint, mmlu_half, select_subjects, split_exemplars
from ..engine.scoring import Request, encode_pair, score_requests, single_token_ids
from .results import EvaluationResult, mean_stderr, proportion_stderr

FORMATS = ("letter", "cloze")
# the per-question column each metric averages, by format
MMLU_VALUE_COLUMNS = {"letter": {"acc": "correct", "loss": "loss"}, "cloze": {"acc": "correct", "acc_norm": "correct_norm"}}
CLOZE_BELOW_PARAMS = 1_000_000_000


def default_format(params_total: int) -> str:
    """Cloze for models under 1B parameters (they sit at chance in letter format), else letter."""
    return "cloze" if params_total < CLOZE_BELOW_PARAMS else "letter"


def default_questions_per_subject(fmt: str) -> int:
    """Questions per subject of the app's default MMLU evaluation: 5 in letter format (285 questions, a 95 % CI of
    about +-5.8 pp at 50 % accuracy, one forward pass each), 2 in cloze format (114 questions: cloze scores four
    continuations per question, and the models it is preselected for are small and near chance, so extra
    questions narrow an interval around noise). docs/PERFORMANCE.md measures what each costs per toggle.
    """
    return 5 if fmt == "letter" else 2


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


def mmlu_questions(
    fmt: str, source: str, subset: str | None, shots: int, per_subject: int | None, half: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The exemplars and the questions to score of one MMLU evaluation (shared by both backends).

    Returns:
        ``(exemplars, scored)``: the first ``shots`` questions of each chosen subject, and the rest
        (at most ``per_subject`` per subject, then the ``half`` of them, see :func:`mmlu_half`).

    Raises:
        SettingError: unknown format.
        DataError: unknown subset, too many shots for a subject, malformed question file, or no question left.
    """
    if fmt not in FORMATS:
        raise SettingError(f"MMLU format '{fmt}' is unknown; use letter or cloze.")
    table = load_mmlu(source)
    exemplars, scored = split_exemplars(table, select_subjects(table, subset), shots, per_subject)
    scored = mmlu_half(scored, half)
    if scored.empty:
        raise DataError(
            f"No MMLU questions are left to score ({half} half of {per_subject} per subject after {shots} "
            "exemplars); raise the questions per subject."
        )
    return exemplars, scored


def letter_requests(tokenizer, prompts: list[str], subjects: list[str]) -> list[Request]:
    """One request per prompt: the log-probabilities of " A".." D" at its last position.

    Prompts of one subject form one packing group (they share the description and the k-shot exemplars).

    Raises:
        TokenizationError: a letter is not a single token after the prompt.
    """
    requests = []
    for prompt, subject in zip(prompts, subjects):
        letter_ids = single_token_ids(tokenizer, prompt, [f" {letter}" for letter in LETTERS])
        ids = tuple(tokenizer(prompt)["input_ids"])
        requests.append(Request(ids, (len(ids) - 1,), (tuple(letter_ids),), group=subject, stratum=subject))
    return requests


def cloze_requests(tokenizer, prompts: list[str], choices: list[tuple], subjects: list[str]) -> list[Request]:
    """Four requests per prompt (question-major): each answer text's tokens as continuation " {answer}".

    The answers of one subject form one packing group: their token trie holds the description and the
    k-shot exemplars once per row, and each question once for its four answers.
    """
    requests = []
    for prompt, options, subject in zip(prompts, choices, subjects):
        for option in options:
            context, continuation = encode_pair(tokenizer, prompt, f" {option}")
            # position p predicts token p + 1, so the continuation is predicted from len(context) - 1 on
            positions = tuple(range(len(context) - 1, len(context) - 1 + len(continuation)))
            tokens = tuple(context + continuation)[:-1]
            requests.append(Request(tokens, positions, tuple((t,) for t in continuation), group=subject, stratum=subject))
    return requests


def mmlu_requests(tokenizer, exemplars: pd.DataFrame, scored: pd.DataFrame, fmt: str) -> list[Request]:
    """The scoring requests of the questions in ``scored``, as :func:`mmlu_questions` returns them.

    Each prompt holds its subject's exemplars (k-shot; none at 0-shot). Letter: one request per question
    (:func:`letter_requests`); cloze: four per question, question-major (:func:`cloze_requests`).

    Raises:
        TokenizationError: (letter format) a letter is not a single token after the prompt.
    """
    by_subject = {s: g for s, g in exemplars.groupby("subject")}
    empty = exemplars.iloc[:0]
    rows = list(scored.itertuples())
    prompts = [build_prompt(row, by_subject.get(row.subject, empty), fmt) for row in rows]
    names = [row.subject for row in rows]
    if fmt == "letter":
        return letter_requests(tokenizer, prompts, names)
    return cloze_requests(tokenizer, prompts, [row.choices for row in rows], names)


def question_scores(fmt: str, scores: list[torch.Tensor | None], questions: list[int]) -> torch.Tensor:
    """``[len(questions), 4]`` per-choice scores from :func:`score_requests` output.

    Letter: the four letters' log-probabilities; cloze: each answer's summed log-likelihood (nats).
    """
    if fmt == "letter":
        return torch.stack([scores[q][0] for q in questions]) if questions else torch.empty(0, 4, dtype=torch.float64)
    return torch.tensor([[float(scores[4 * q + c].sum()) for c in range(4)] for q in questions], dtype=torch.float64).view(-1, 4)


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
    partial: Callable[[EvaluationResult], None] | None = None,
    checkpoint: bool = True,
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
        batch_size: packed rows per forward pass (see :func:`pruneviz.engine.scoring.score_requests`).
        progress: ``progress(done, total)`` in scoring requests (questions, or question-answer pairs in
            cloze); may raise ``Cancelled`` (finished batches are cached, so a rerun resumes).
        stand_ins: recovery stand-ins for pruned units (see :func:`pruneviz.core.gating.apply_plan`).
        partial: called with a provisional result (the questions finished so far, in a schedule stratified
            across subjects, so each is an unbiased early estimate with its standard error) as work proceeds.
        checkpoint: cache each finished batch (``False``: no reads or writes, e.g. for benchmarks).

    Returns:
        :class:`EvaluationResult` with per-question ``items`` and per-subject / per-category tables.

    Raises:
        DataError: unknown subset, too many shots for a subject, malformed question file.
        SettingError: a k-shot prompt is longer than the model's context.
        TokenizationError: (letter format) a letter is not a single token after the prompt.
        PlanError: the plan names a block the model lacks.
    """
    plan.validate(loaded.n_blocks)
    started = time.perf_counter()
    exemplars, scored = mmlu_questions(fmt, source, subset, shots, per_subject, half)
    requests = mmlu_requests(loaded.tokenizer, exemplars, scored, fmt)
    longest = max(len(request.tokens) for request in requests)
    if longest > loaded.max_length:
        raise SettingError(
            f"The longest {shots}-shot MMLU prompt has {longest:,} tokens, more than this model's "
            f"{loaded.max_length:,}-token context; use fewer shots."
        )
    per_question = 1 if fmt == "letter" else 4
    items = scored[["subject", "category", "answer"]].reset_index(drop=True)
    if fmt == "cloze":
        items["answer_chars"] = [[len(c) for c in row.choices] for row in scored.itertuples()]
    settings = {
        "format": fmt, "shots": shots, "per_subject": per_subject, "source": source, "half": half,
        "data_fingerprint": mmlu_fingerprint(source),
        "note": f"first {shots} questions of each subject held out as exemplars and not scored" if shots else "",
    }
    task = f"mmlu:{subset}" if subset else "mmlu"

    def result_for(scores: list, questions: list[int]) -> EvaluationResult:
        return mmlu_result(
            items.iloc[questions].reset_index(drop=True), question_scores(fmt, scores, questions), fmt, task,
            str(plan), time.perf_counter() - started, settings,
        )

    def report(scores: list) -> None:
        complete = [q for q in range(len(items)) if all(scores[per_question * q + c] is not None for c in range(per_question))]
        if 0 < len(complete) < len(items):
            partial(result_for(scores, complete))

    resumed = [0]
    with apply_plan(plan, stand_ins):
        scores = score_requests(loaded, requests, batch_size, progress, report if partial else None, checkpoint, resumed=resumed)
    if resumed[0]:
        settings["resumed"] = resumed[0] // per_question  # questions read from checkpoints an earlier run left
    return result_for(scores, list(range(len(items))))


def choice_scores(items: pd.DataFrame) -> torch.Tensor:
    """``[n, 4]`` per-choice scores (nats) kept in an MMLU result's ``items`` (columns ``score_A`` .. ``score_D``)."""
    return torch.tensor(items[[f"score_{letter}" for letter in LETTERS]].to_numpy(), dtype=torch.float64)


def mmlu_result(
    items: pd.DataFrame, scores: torch.Tensor, fmt: str, task: str, plan: str, seconds: float, settings: dict
) -> EvaluationResult:
    """An :class:`EvaluationResult` from per-question choice scores.

    Args:
        items: per question ``subject``, ``category``, ``answer`` (0-3) and, for cloze, ``answer_chars``
            (the four answers' lengths in characters).
        scores: ``[n, 4]`` letter log-probabilities (letter) or answer log-likelihoods (cloze), nats.
        fmt: ``"letter"`` or ``"cloze"``.

    Returns:
        letter: ``acc`` = argmax is gold; ``loss`` = cross-entropy of the gold letter over the four letter
        logits (nats; the paper's "MMLU loss", Siddiqui et al. 2024, Sec. 3). Cloze: ``acc``, and
        ``acc_norm`` = argmax of log-likelihood per answer character (lm-evaluation-harness's definition).
    """
    items = items.copy()
    gold = torch.tensor(items["answer"].to_numpy())
    for choice in range(4):
        items[f"score_{LETTERS[choice]}"] = scores[:, choice].numpy()
    items["pred"] = scores.argmax(1).numpy()
    items["correct"] = (items["pred"] == items["answer"]).astype(float)
    if fmt == "letter":
        items["loss"] = (-torch.log_softmax(scores, 1).gather(1, gold[:, None])[:, 0]).numpy()
    else:
        lengths = torch.tensor(items.pop("answer_chars").tolist(), dtype=torch.float64).view(-1, 4)
        items["pred_norm"] = (scores / lengths).argmax(1).numpy()
        items["correct_norm"] = (items["pred_norm"] == items["answer"]).astype(float)
    return mmlu_items_result(items, fmt, task, plan, seconds, settings)


def mmlu_items_result(items: pd.DataFrame, fmt: str, task: str, plan: str, seconds: float, settings: dict) -> EvaluationResult:
    """An :class:`EvaluationResult` from per-question outcomes (pruneviz's, or lm-eval's in its backend).

    Args:
        items: per question ``subject``, ``category``, ``correct`` (0/1) and ``loss`` (letter, nats) or
            ``correct_norm`` (cloze, 0/1).
        fmt: ``"letter"`` (metrics ``acc``, ``loss``) or ``"cloze"`` (``acc``, ``acc_norm``).
    """
    value_columns = MMLU_VALUE_COLUMNS[fmt]
    metrics, stderr = summarise_items(items, value_columns)
    return EvaluationResult(
        task=task,
        n=len(items),
        metrics=metrics,
        stderr=stderr,
        plan=plan,
        seconds=seconds,
        settings=settings,
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
