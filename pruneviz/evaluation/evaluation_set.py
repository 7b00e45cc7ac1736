"""The prune page's default evaluation set: what each change of plan is evaluated on until the user chooses otherwise."""

from __future__ import annotations

from .mmlu import default_format, default_questions_per_subject

# Wikipedia perplexity: 8 windows of 128 tokens from the evaluation half
WINDOWS, WINDOW_TOKENS = 8, 128


def default_evaluation_set(params_total: int, per_subject: int | None = None) -> list[dict]:
    """Keyword arguments of :func:`pruneviz.evaluation.run.evaluate` per task: Wikipedia perplexity, then MMLU 0-shot
    in the format preselected for a model of ``params_total`` parameters, with its default number of questions per
    subject (:func:`~pruneviz.evaluation.mmlu.default_questions_per_subject`) unless ``per_subject`` is given."""
    fmt = default_format(params_total)
    return [
        {"task": "wiki", "windows": WINDOWS, "seq_len": WINDOW_TOKENS},
        {"task": "mmlu", "fmt": fmt, "shots": 0, "per_subject": per_subject or default_questions_per_subject(fmt)},
    ]
