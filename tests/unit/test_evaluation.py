"""Evaluation without a model: prompts, scoring primitives, standard errors, result documents."""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from pruneviz.core.errors import SettingError, TokenizationError
from pruneviz.engine.scoring import encode_pair, pad_right, run_batched, single_token_ids
from pruneviz.evaluation.mmlu import build_prompt, default_format
from pruneviz.evaluation.results import EvaluationResult, mean_stderr, proportion_stderr


class _PieceTokenizer:
    """Fake tokenizer: a token is a word with its leading space (`` A``, `` Answer``) or a lone character."""

    def __init__(self):
        self.vocab: dict[str, int] = {}

    def __call__(self, text, **kwargs):
        pieces = re.findall(r" ?[A-Za-z0-9:.]+|.", text, flags=re.S)
        return {"input_ids": [self.vocab.setdefault(p, len(self.vocab)) for p in pieces]}


def test_single_token_ids_fake_tokenizer():
    tokenizer = _PieceTokenizer()
    ids = single_token_ids(tokenizer, "Question?\nAnswer:", [" A", " B", " C", " D"])
    assert len(set(ids)) == 4
    assert ids == [tokenizer.vocab[p] for p in (" A", " B", " C", " D")]
    with pytest.raises(TokenizationError, match="' Answer A'"):
        single_token_ids(tokenizer, "Question?\nAnswer:", [" A", " Answer A"])
    # an option that merges with the end of the prompt changes the prompt's tokens
    with pytest.raises(TokenizationError, match="'B'"):
        single_token_ids(tokenizer, "Question?\nAnswer", ["B"])


def test_encode_pair_moves_trailing_space():
    tokenizer = _PieceTokenizer()
    context, continuation = encode_pair(tokenizer, "Answer: ", "Paris")
    assert context == tokenizer("Answer:")["input_ids"]
    assert continuation == [tokenizer.vocab[" Paris"]]
    assert encode_pair(tokenizer, "Answer:", " Paris") == (context, continuation)


def test_pad_right():
    ids, mask = pad_right([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_run_batched_halves_on_out_of_memory():
    seen = []

    def compute(chunk):
        seen.append(len(chunk))
        if len(chunk) > 2:
            raise torch.OutOfMemoryError("fake")
        return [x * 10 for x in chunk]

    progress = []
    assert run_batched(list(range(7)), 8, compute, lambda d, t: progress.append((d, t))) == [x * 10 for x in range(7)]
    assert seen[:3] == [7, 4, 2] and progress[-1] == (7, 7)

    def always(chunk):
        raise torch.OutOfMemoryError("fake")

    with pytest.raises(SettingError, match="batch of one"):
        run_batched([1, 2], 2, always)


def test_default_format():
    assert default_format(134_515_008) == "cloze"
    assert default_format(7_000_000_000) == "letter"


def _row(subject="anatomy", question=" What is X? ", choices=("a", "b", "c", "d"), answer=2):
    return SimpleNamespace(subject=subject, question=question, choices=choices, answer=answer)


def test_letter_prompt_matches_lm_eval_template():
    exemplars = pd.DataFrame([{"question": "Q1", "choices": ("w", "x", "y", "z"), "answer": 1}])
    assert build_prompt(_row(), exemplars.iloc[:0], "letter") == (
        "The following are multiple choice questions (with answers) about anatomy.\n\n"
        "What is X?\nA. a\nB. b\nC. c\nD. d\nAnswer:"
    )
    assert build_prompt(_row(), exemplars, "letter") == (
        "The following are multiple choice questions (with answers) about anatomy.\n\n"
        "Q1\nA. w\nB. x\nC. y\nD. z\nAnswer: B\n\n"
        "What is X?\nA. a\nB. b\nC. c\nD. d\nAnswer:"
    )


def test_cloze_prompt_matches_lm_eval_template():
    exemplars = pd.DataFrame([{"question": "Q1", "choices": ("w", "x", "y", "z"), "answer": 3}])
    assert build_prompt(_row(subject="world religions"), exemplars, "cloze") == (
        "The following are questions (with answers) about world religions.\n\n"
        "Question: Q1\nAnswer: z\n\n"
        "Question: What is X?\nAnswer:"
    )


def test_stderr_helpers():
    assert proportion_stderr(0.5, 5) == pytest.approx(math.sqrt(0.25 / 4))
    assert math.isnan(proportion_stderr(1.0, 1))
    assert mean_stderr(pd.Series([1.0, 2.0, 3.0])) == pytest.approx(1.0 / math.sqrt(3))
    assert math.isnan(mean_stderr(pd.Series([1.0])))


def test_result_to_json():
    result = EvaluationResult(
        task="mmlu", n=3, metrics={"acc": 2 / 3}, stderr={"acc": 0.33}, plan="1.attn", seconds=1.23456,
        settings={"format": "letter"}, items=pd.DataFrame(),
        per_subject=pd.DataFrame({"subject": ["anatomy"], "n": [3], "acc": [2 / 3], "category": ["STEM"]}),
        per_category=pd.DataFrame({"category": ["STEM"], "n": [3], "acc": [2 / 3]}),
    )
    document = result.to_json()
    assert {"task", "n", "metrics", "per_subject", "per_category", "prune", "recover", "seconds"} <= set(document)
    assert document["per_subject"] == {"anatomy": {"n": 3, "acc": pytest.approx(2 / 3)}}
    assert document["per_category"] == {"STEM": {"n": 3, "acc": pytest.approx(2 / 3)}}
    assert document["seconds"] == 1.235 and document["recover"] is None
