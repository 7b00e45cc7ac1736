"""The incremental evaluation engine on the embedded model: MMLU and perplexity equal the plain path at any
batch size, and progressive results are stratified. Every path must give the plain path's numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import plain_logprobs

from pruneviz.core.plan import PruningPlan
from pruneviz.engine.hidden_store import HiddenStateStore
from pruneviz.engine.incremental import counting_blocks, using_store
from pruneviz.evaluation.mmlu import choice_scores, evaluate_mmlu
from pruneviz.evaluation.perplexity import evaluate_perplexity

SUBSET = "anatomy,astronomy,virology"


def _reference_mmlu_scores(loaded, result, plan: PruningPlan, fmt: str) -> np.ndarray:
    """Per-choice scores of each question computed alone with the stock model forward (the plain path)."""
    from pruneviz.evaluation.mmlu import mmlu_questions, mmlu_requests

    exemplars, scored = mmlu_questions(fmt, "mmlu", SUBSET, 0, 2, "all")
    requests = mmlu_requests(loaded.tokenizer, exemplars, scored, fmt)
    if fmt == "letter":
        return torch.cat(plain_logprobs(loaded, requests, plan)).numpy()
    sums = [float(s.sum()) for s in plain_logprobs(loaded, requests, plan)]
    return np.array(sums).reshape(-1, 4)


@pytest.mark.real
@pytest.mark.parametrize("fmt", ["letter", "cloze"])
def test_mmlu_incremental_toggles_equal_the_plain_path(smollm2, fmt):
    store = HiddenStateStore(cpu_bytes=512 * 2**20)
    with using_store(store):
        for plan_text in ("", "27.attn", "5"):
            plan = PruningPlan.parse(plan_text)
            with counting_blocks() as work:
                result = evaluate_mmlu(smollm2, plan, SUBSET, fmt, per_subject=2, batch_size=4, checkpoint=False)
            ours = choice_scores(result.items).numpy()
            theirs = _reference_mmlu_scores(smollm2, result, plan, fmt)
            np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
            assert list(result.items["pred"]) == list(theirs.argmax(1))
            if plan_text == "27.attn":
                assert work.computed > 0 and work.computed * 9 == work.reused  # per batch: blocks 27-29 run, 0-26 reused
            if fmt == "letter":
                gold = result.items["answer"].to_numpy()
                loss = -torch.log_softmax(torch.tensor(theirs), 1)[torch.arange(len(gold)), torch.tensor(gold)]
                np.testing.assert_allclose(result.items["loss"].to_numpy(), loss.numpy(), atol=1e-4, rtol=0)


@pytest.mark.real
@pytest.mark.parametrize("fmt", ["letter", "cloze"])
def test_mmlu_scores_do_not_depend_on_batch_size(smollm2, fmt):
    results = {}
    with using_store(None):
        for batch_size in (1, 7, 32):
            result = evaluate_mmlu(smollm2, PruningPlan(), SUBSET, fmt, shots=1, per_subject=3, batch_size=batch_size, checkpoint=False)
            results[batch_size] = choice_scores(result.items).numpy()
            assert np.isfinite(results[batch_size]).all()
    np.testing.assert_allclose(results[1], results[7], atol=1e-4, rtol=0)
    np.testing.assert_allclose(results[1], results[32], atol=1e-4, rtol=0)


@pytest.mark.real
def test_perplexity_incremental_equals_plain(smollm2):
    plan = PruningPlan.parse("20.mlp")
    with using_store(None):
        plain = evaluate_perplexity(smollm2, plan, windows=3, seq_len=48, batch_size=2, checkpoint=False)
        single = evaluate_perplexity(smollm2, plan, windows=3, seq_len=48, batch_size=1, checkpoint=False)
    store = HiddenStateStore(cpu_bytes=256 * 2**20)
    with using_store(store):
        evaluate_perplexity(smollm2, PruningPlan(), windows=3, seq_len=48, batch_size=2, checkpoint=False)
        with counting_blocks() as work:
            ours = evaluate_perplexity(smollm2, plan, windows=3, seq_len=48, batch_size=2, checkpoint=False)
    assert work.reused == 20 * 2 and work.computed == 10 * 2
    assert ours.items["nll_sum"].tolist() == plain.items["nll_sum"].tolist()  # same batches: bit-identical
    # another batch size: per-token log-likelihoods agree within float rounding
    np.testing.assert_allclose(single.items["nll"], plain.items["nll"], atol=1e-5, rtol=0)
    assert single.metrics["perplexity"] == pytest.approx(plain.metrics["perplexity"], rel=1e-5)


@pytest.mark.real
def test_progressive_results_are_stratified_and_end_in_the_final_result(smollm2):
    seen = []
    result = evaluate_mmlu(
        smollm2, PruningPlan(), "STEM", "letter", per_subject=1, batch_size=2, checkpoint=False, partial=seen.append
    )
    assert len(seen) >= 2
    counts = [r.n for r in seen]
    assert counts == sorted(counts) and counts[-1] < result.n
    # the first estimate already spans several subjects (rows are dealt round-robin over subjects)
    assert seen[0].per_subject["subject"].nunique() >= 2
    for early in seen:
        assert 0 <= early.metrics["acc"] <= 1 and early.stderr["acc"] >= 0
        # a provisional item carries the same scores as in the final result
        merged = early.items.merge(result.items, on=["subject", "score_A", "score_B", "score_C", "score_D"])
        assert len(merged) == early.n
