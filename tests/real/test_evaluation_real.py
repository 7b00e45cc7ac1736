"""Evaluation on the embedded model: single-token letters, letter and continuation scores against plain forward
passes, perplexity, and k-shot MMLU."""

from __future__ import annotations

import math

import pytest
import torch

from pruneviz.core.errors import PlanError, SettingError, TokenizationError
from pruneviz.core.plan import PruningPlan
from pruneviz.engine.scoring import Request, encode_pair, score_requests, single_token_ids
from pruneviz.evaluation.mmlu import evaluate_mmlu
from pruneviz.evaluation.perplexity import evaluate_perplexity


@pytest.mark.real
def test_single_token_ids_real_tokenizer(smollm2):
    prompt = "Which planet is largest?\nA. Mars\nB. Jupiter\nC. Venus\nD. Earth\nAnswer:"
    ids = single_token_ids(smollm2.tokenizer, prompt, [" A", " B", " C", " D"])
    assert ids == [smollm2.tokenizer.convert_tokens_to_ids(t) for t in ["ĠA", "ĠB", "ĠC", "ĠD"]]
    with pytest.raises(TokenizationError, match="Answer A"):
        single_token_ids(smollm2.tokenizer, prompt, [" Answer A"])


@pytest.mark.real
def test_letter_requests_match_a_plain_forward_pass(smollm2):
    tokenizer = smollm2.tokenizer
    prompts = [tokenizer("The capital of France is")["input_ids"], tokenizer("Two plus two equals")["input_ids"][:3]]
    candidates = tuple(tokenizer(" Paris")["input_ids"] + tokenizer(" Rome")["input_ids"])
    requests = [Request(tuple(p), (len(p) - 1,), (candidates,)) for p in prompts]
    together = score_requests(smollm2, requests, batch_size=2, checkpoint=False)
    for prompt, scores in zip(prompts, together):
        assert scores.shape == (1, 2) and scores.dtype == torch.float64
        with torch.no_grad():
            logits = smollm2.model(torch.tensor([prompt])).logits[0, -1]
        expected = torch.log_softmax(logits.float(), -1)[list(candidates)].double()
        torch.testing.assert_close(scores[0], expected, atol=1e-4, rtol=0)
    assert together[0][0, 0] > together[0][0, 1]  # " Paris" beats " Rome"


@pytest.mark.real
def test_continuation_requests_by_hand(smollm2):
    pairs = [encode_pair(smollm2.tokenizer, "Question: What is the capital of Italy?\nAnswer:", " Rome"),
             encode_pair(smollm2.tokenizer, "Question: What is the capital of Italy?\nAnswer:", " Milan, probably"),
             encode_pair(smollm2.tokenizer, "Snow is", " white and cold")]
    requests = [
        Request(tuple(c + k)[:-1], tuple(range(len(c) - 1, len(c) + len(k) - 1)), tuple((t,) for t in k), group=g)
        for (c, k), g in zip(pairs, ["italy", "italy", "snow"])
    ]
    sums = [float(s.sum()) for s in score_requests(smollm2, requests, checkpoint=False)]
    for (context, continuation), value in zip(pairs, sums):
        ids = torch.tensor([context + continuation])
        with torch.no_grad():
            logprobs = torch.log_softmax(smollm2.model(ids).logits[0].float(), -1)
        positions = range(len(context) - 1, len(context) + len(continuation) - 1)
        expected = sum(logprobs[p, ids[0, p + 1]].item() for p in positions)
        assert value == pytest.approx(expected, abs=1e-4)
    assert len(pairs[2][1]) == 3


@pytest.mark.real
def test_perplexity_batch_size_invariant_and_fields(smollm2):
    one = evaluate_perplexity(smollm2, PruningPlan(), "wiki", windows=3, seq_len=32, batch_size=1)
    three = evaluate_perplexity(smollm2, PruningPlan(), "wiki", windows=3, seq_len=32, batch_size=3)
    # fp32 CPU kernels differ between batch shapes: the model's own logits move by ~1e-5 relative
    # (measured: 6e-4 on logits of size ~40), so per-window NLL sums agree to a few 1e-6, not exactly;
    # any padding or window mix-up would move them by orders of magnitude more
    assert three.metrics["perplexity"] == pytest.approx(one.metrics["perplexity"], rel=2e-5)
    assert three.metrics["nll"] == pytest.approx(one.metrics["nll"], rel=1e-5)
    assert three.items["nll_sum"].to_list() == pytest.approx(one.items["nll_sum"].to_list(), rel=1e-5)
    assert three.metrics["tokens"] == 3 * 31 and three.n == 3 and len(three.items) == 3
    assert three.metrics["perplexity"] == pytest.approx(math.exp(three.metrics["nll"]))
    assert 2 < three.metrics["perplexity"] < 200
    assert three.task == "wiki" and three.plan == "" and three.settings["split"] == "wiki (evaluation half)"
    assert three.stderr["nll"] > 0
    # the same windows scored by the model's own loss
    from pruneviz.data.text import load_corpus, token_windows

    windows = token_windows(smollm2.tokenizer, load_corpus("wiki", "evaluation").texts, 32, 3)
    with torch.no_grad():
        losses = [smollm2.model(w[None], labels=w[None]).loss.item() for w in windows]
    assert one.metrics["nll"] == pytest.approx(sum(losses) / 3, abs=1e-6)
    # pruning a sublayer changes the perplexity
    pruned = evaluate_perplexity(smollm2, PruningPlan.parse("3.mlp"), "wiki", windows=3, seq_len=32, batch_size=3)
    assert pruned.plan == "3.mlp"
    assert abs(pruned.metrics["perplexity"] - three.metrics["perplexity"]) > 1e-3 * three.metrics["perplexity"]


@pytest.mark.real
def test_perplexity_rejects_bad_settings(smollm2):
    with pytest.raises(SettingError, match="outside 2-8192"):
        evaluate_perplexity(smollm2, PruningPlan(), "wiki", windows=1, seq_len=9000)
    with pytest.raises(SettingError):
        evaluate_perplexity(smollm2, PruningPlan(), "wiki", windows=1, seq_len=1)
    with pytest.raises(PlanError, match="30.attn"):
        evaluate_perplexity(smollm2, PruningPlan.parse("30.attn"), "wiki", windows=1, seq_len=8)


@pytest.mark.real
def test_mmlu_k_shot_holds_out_exemplars(smollm2):
    result = evaluate_mmlu(smollm2, PruningPlan(), "anatomy", "letter", shots=2, per_subject=2)
    assert result.n == 2 and result.task == "mmlu:anatomy"
    assert "first 2 questions of each subject held out" in result.settings["note"]
    assert set(result.metrics) == {"acc", "loss"}
    assert 0 <= result.metrics["acc"] <= 1 and result.metrics["loss"] > 0
    with pytest.raises(SettingError, match="'essay'"):
        evaluate_mmlu(smollm2, PruningPlan(), "anatomy", "essay")


@pytest.mark.real
def test_a_k_shot_prompt_longer_than_the_context_is_refused(smollm2):
    import dataclasses

    # the same weights, declared with a 300-token context (a copy: the shared fixture stays as it is)
    short = dataclasses.replace(smollm2, info=dataclasses.replace(smollm2.info, max_position_embeddings=300))
    assert evaluate_mmlu(short, PruningPlan(), "anatomy", "letter", shots=0, per_subject=1).n == 1
    with pytest.raises(SettingError, match=r"5-shot MMLU prompt has [\d,]+ tokens, more than this model's 300-token context"):
        evaluate_mmlu(short, PruningPlan(), "anatomy", "letter", shots=5, per_subject=1)


@pytest.mark.real
def test_a_pruned_mmlu_evaluation_reports_what_changed_in_the_answers(smollm2):
    from pruneviz import api
    from pruneviz.core.plan import PruningPlan

    options = dict(fmt="letter", per_subject=12, use_cache=False)
    unpruned = api.evaluate(smollm2, PruningPlan(), "mmlu:anatomy", **options)
    assert "flips" not in unpruned.metrics  # nothing to compare the unpruned model with
    pruned = api.evaluate(smollm2, PruningPlan.parse("5.attn,20"), "mmlu:anatomy", **options)
    changed = (pruned.items["pred"] != unpruned.items["pred"]).mean()
    assert pruned.metrics["flips"] == pytest.approx(changed) and changed > 0
    assert pruned.metrics["flips_gained"] - pruned.metrics["flips_lost"] == pytest.approx(pruned.metrics["acc"] - unpruned.metrics["acc"])
    assert pruned.metrics["kl"] > 0 and pruned.stderr["kl"] > 0 and pruned.stderr["flips"] > 0
    assert "flips" not in api.evaluate(smollm2, PruningPlan.parse("5.attn,20"), "mmlu:anatomy", compare=False, **options).metrics
