"""Plan gating on the real embedded SmolLM2-135M (kept to short inputs)."""

from __future__ import annotations

import pytest
import torch
from reference import ResidualHooks, forward_by_hand

from pruneviz.core.gating import apply_plan
from pruneviz.core.plan import PruningPlan

pytestmark = pytest.mark.real

TEXT = "The mitochondria is the powerhouse of the cell, and photosynthesis happens in the chloroplasts of plants."


def _ids(smollm2):
    ids = smollm2.tokenizer(TEXT, return_tensors="pt").input_ids
    assert 15 < ids.shape[1] < 40
    return ids


def test_empty_plan_reproduces_model_loss(smollm2):
    ids = _ids(smollm2)
    with torch.no_grad():
        expected = smollm2.model(ids, labels=ids).loss
        hidden = smollm2.hidden_states(ids, torch.ones_like(ids))
        logits = smollm2.logits(hidden)
    ours = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:])
    assert abs(ours.item() - expected.item()) < 1e-5
    assert 0.5 < ours.item() < 6  # a working LM on plain English


def test_skipping_attention_equals_hand_computation(smollm2):
    """Prune 5.attn: resid_pre of block 5 (from a plain hook on the unpruned model) plus block 5's MLP,
    then blocks 6-29 and the head run by hand, must equal the gated model's logits."""
    ids = _ids(smollm2)
    model = smollm2.model
    with ResidualHooks(model.model.layers) as hooks, torch.no_grad():
        full_logits = model(ids).logits
    resid_pre_5 = hooks.last(5, "resid_pre")
    # blocks before 5 are not touched by the plan, so their output is the unpruned one
    torch.testing.assert_close(forward_by_hand(model, ids), full_logits, atol=1e-4, rtol=0)
    expected = forward_by_hand(model, ids, skip={(5, "attn")}, start=5, resid=resid_pre_5)
    with apply_plan(PruningPlan.parse("5.attn", smollm2.n_blocks)), torch.no_grad():
        got = smollm2.logits(smollm2.hidden_states(ids, torch.ones_like(ids)))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    assert (got - full_logits).abs().max() > 1e-2  # the plan did something


def test_pruned_block_is_identity_and_plan_is_scoped(smollm2):
    ids = _ids(smollm2)[:, :12]
    with ResidualHooks(smollm2.model.model.layers) as hooks, torch.no_grad():
        with apply_plan(PruningPlan.parse("12,20.mlp")):
            smollm2.hidden_states(ids, torch.ones_like(ids))
        smollm2.hidden_states(ids, torch.ones_like(ids))
    pruned_pre, unpruned_pre = hooks.captured[(12, "resid_pre")]
    pruned_post, unpruned_post = hooks.captured[(12, "resid_post")]
    assert torch.equal(pruned_pre, pruned_post)
    assert not torch.equal(unpruned_pre, unpruned_post)
    assert torch.equal(hooks.captured[(20, "resid_mid")][0], hooks.captured[(20, "resid_post")][0])
