"""Generative tasks on real weights, in float32 (the reference dtype): SmolLM2-135M-Instruct decodes HumanEval and
arithmetic prompts batched exactly as one at a time and as transformers' ``generate``; on Qwen2.5-Coder-0.5B-Instruct
a plan that prunes block 0's attention changes the output and still equals recomputing without a cache, and
results carry n, the rate's standard error and the prompt format. Each test takes under a minute on 2 quiet CPU
cores (several minutes when another benchmark shares them)."""

from __future__ import annotations

import math

import pytest
import torch

from pruneviz.core.gating import apply_plan
from pruneviz.core.loading import load_model
from pruneviz.core.plan import PruningPlan
from pruneviz.data.generative import generative_items, prompt_format, prompt_ids
from pruneviz.engine.decoding import GenerationRequest, end_token_ids, generate_requests
from pruneviz.evaluation.run import evaluate


@pytest.fixture(scope="module")
def qwen():
    return load_model("qwen2.5-coder-0.5b", device="cpu", dtype="float32")


def requests_of(loaded, task: str, count: int, tokens: int) -> list[GenerationRequest]:
    fmt = prompt_format(loaded.tokenizer)
    return [GenerationRequest(prompt_ids(loaded.tokenizer, item, fmt), tokens) for item in generative_items(task, count)]


def hf_greedy(loaded, request: GenerationRequest) -> tuple[int, ...]:
    """transformers' ``generate`` (greedy) on one prompt; its tokens before the first end token."""
    ends = sorted(end_token_ids(loaded))
    with torch.no_grad():
        row = loaded.model.generate(torch.tensor([request.ids]), max_new_tokens=request.max_new_tokens, do_sample=False,
                                    eos_token_id=ends, top_p=None, top_k=None, temperature=None)[0, len(request.ids):].tolist()
    return tuple(row[: next((k for k, t in enumerate(row) if t in ends), len(row))])


@pytest.mark.real
def test_batched_decoding_equals_one_at_a_time_and_transformers_generate(smollm2):
    requests = requests_of(smollm2, "humaneval", 2, 16) + requests_of(smollm2, "arithmetic", 3, 8)
    batched = generate_requests(smollm2, requests, batch_size=5, checkpoint=False)  # each prompt prefilled alone (CPU)
    padded = generate_requests(smollm2, requests, batch_size=5, checkpoint=False, prefill_alone=False)
    alone = generate_requests(smollm2, requests, batch_size=1, checkpoint=False)
    assert [g.tokens for g in batched] == [g.tokens for g in alone] == [g.tokens for g in padded]
    assert [g.tokens for g in batched] == [hf_greedy(smollm2, r) for r in requests]
    assert all(len(g.tokens) > 0 for g in batched)


@pytest.mark.real
def test_a_plan_changes_the_output_and_matches_recomputing(qwen):
    requests = requests_of(qwen, "arithmetic", 3, 6)
    plan = PruningPlan.parse("0.attn,5,20.mlp", qwen.n_blocks)
    unpruned = generate_requests(qwen, requests, batch_size=4, checkpoint=False)
    with apply_plan(plan):
        pruned = generate_requests(qwen, requests, batch_size=4, checkpoint=False)
        # the reference: the whole prefix recomputed at every step, no cache (block 0's attention writes none)
        ends, expected = end_token_ids(qwen), []
        for request in requests[:2]:
            tokens = list(request.ids)
            for _ in range(request.max_new_tokens):
                ids = torch.tensor([tokens])
                with torch.no_grad():
                    token = int(qwen.logits(qwen.hidden_states(ids, torch.ones_like(ids))[0, -1]).argmax())
                if token in ends:
                    break
                tokens.append(token)
            expected.append(tuple(tokens[len(request.ids):]))
    assert [g.tokens for g in pruned[:2]] == expected
    assert [g.tokens for g in pruned] != [g.tokens for g in unpruned]


@pytest.mark.real
def test_results_carry_n_stderr_and_the_prompt_format(qwen, fresh_cache):
    result = evaluate(qwen, PruningPlan.parse("5"), "arithmetic", per_task=4)
    metric = result.metrics["exact_match"]
    assert result.n == 4 and result.settings["prompt_format"] == "chat"
    assert result.stderr["exact_match"] == pytest.approx(math.sqrt(metric * (1 - metric) / 3))
    assert {"flips", "flips_lost", "flips_gained"} <= set(result.metrics)
    unpruned = evaluate(qwen, PruningPlan(), "arithmetic", per_task=4)
    # it adds two-digit numbers (items 0 and 1); the 0.5B model gets most larger products wrong
    assert list(unpruned.items["correct"][:2]) == [1.0, 1.0], unpruned.items[["completion", "correct"]]
