"""Plan gating on the tiny random Llama: exactness against hand computations, scoping, threads."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from conftest import tiny_llama
from reference import ResidualHooks, forward_by_hand

from pruneviz.core.gating import active_plan, apply_plan, gates_installed, install_gates, record_residuals
from pruneviz.core.plan import PruningPlan

ATOL = 1e-5


def _ids(batch=2, seq=12, seed=1, vocab=128):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (batch, seq), generator=generator)


def _our_logits(loaded, ids, mask=None):
    mask = torch.ones_like(ids) if mask is None else mask
    with torch.no_grad():
        return loaded.logits(loaded.hidden_states(ids, mask))


def test_reference_reproduces_the_model(tiny):
    """The hand computation itself is faithful (so the checks below rest on something)."""
    ids = _ids()
    with torch.no_grad():
        expected = tiny.model(ids).logits
    torch.testing.assert_close(forward_by_hand(tiny.model, ids), expected, atol=ATOL, rtol=0)


def test_empty_plan_reproduces_model_logits(tiny):
    ids = _ids()
    with torch.no_grad():
        expected = tiny.model(ids).logits
    torch.testing.assert_close(_our_logits(tiny, ids), expected, atol=ATOL, rtol=0)
    with apply_plan(PruningPlan()):
        torch.testing.assert_close(_our_logits(tiny, ids), expected, atol=ATOL, rtol=0)


def test_padding_does_not_change_real_tokens(tiny):
    ids = _ids(batch=1, seq=10)
    padded = torch.cat([ids, torch.zeros(1, 5, dtype=torch.long)], 1)
    mask = torch.cat([torch.ones(1, 10, dtype=torch.long), torch.zeros(1, 5, dtype=torch.long)], 1)
    torch.testing.assert_close(_our_logits(tiny, padded, mask)[:, :10], _our_logits(tiny, ids), atol=ATOL, rtol=0)


@pytest.mark.parametrize("plan_text", ["1.attn", "0.mlp", "2", "0.attn,3.mlp", "1,2.attn"])
def test_pruned_plan_equals_hand_computation(tiny, plan_text):
    ids = _ids()
    plan = PruningPlan.parse(plan_text, tiny.n_blocks)
    expected = forward_by_hand(tiny.model, ids, skip=set(plan.pruned))
    with apply_plan(plan):
        got = _our_logits(tiny, ids)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    # and pruning really changed something
    assert (got - _our_logits(tiny, ids)).abs().max() > 1e-3


def test_pruned_plan_with_padding_equals_hand_computation(tiny):
    ids = _ids(batch=3, seq=9, seed=4)
    mask = torch.tensor([[1] * 9, [1] * 6 + [0] * 3, [1] * 2 + [0] * 7])
    plan = PruningPlan.parse("1.attn,2.mlp")
    expected = forward_by_hand(tiny.model, ids, mask, skip=set(plan.pruned))
    with apply_plan(plan):
        got = _our_logits(tiny, ids, mask)
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=ATOL, rtol=0)


def test_whole_block_is_identity_on_residual_stream(tiny):
    ids = _ids()
    with ResidualHooks(tiny.model.model.layers) as hooks, apply_plan(PruningPlan.parse("2")), torch.no_grad():
        tiny.hidden_states(ids, torch.ones_like(ids))
    assert torch.equal(hooks.last(2, "resid_pre"), hooks.last(2, "resid_mid"))
    assert torch.equal(hooks.last(2, "resid_pre"), hooks.last(2, "resid_post"))
    assert torch.equal(hooks.last(1, "resid_post"), hooks.last(3, "resid_pre"))
    # a block that is not pruned does change the stream
    assert not torch.equal(hooks.last(1, "resid_pre"), hooks.last(1, "resid_post"))


def test_pruned_sublayer_adds_exactly_nothing(tiny):
    ids = _ids()
    with ResidualHooks(tiny.model.model.layers) as hooks, apply_plan(PruningPlan.parse("0.attn,1.mlp")), torch.no_grad():
        tiny.hidden_states(ids, torch.ones_like(ids))
    assert torch.equal(hooks.last(0, "resid_pre"), hooks.last(0, "resid_mid"))
    assert torch.equal(hooks.last(1, "resid_mid"), hooks.last(1, "resid_post"))
    assert not torch.equal(hooks.last(0, "resid_mid"), hooks.last(0, "resid_post"))


def test_everything_pruned_sends_embeddings_to_the_head(tiny):
    ids = _ids()
    plan = PruningPlan.parse(",".join(str(i) for i in range(tiny.n_blocks)))
    assert plan.is_everything(tiny.n_blocks)
    with apply_plan(plan), torch.no_grad():
        hidden = tiny.hidden_states(ids, torch.ones_like(ids))
        expected = tiny.model.model.norm(tiny.model.model.embed_tokens(ids))
    torch.testing.assert_close(hidden, expected, atol=1e-6, rtol=0)


def test_record_residuals_agrees_with_plain_hooks(tiny):
    ids = _ids()
    recorded = {}
    with ResidualHooks(tiny.model.model.layers) as hooks, torch.no_grad():
        with record_residuals(lambda layer, name, t: recorded.__setitem__((layer, name), t.clone())):
            tiny.hidden_states(ids, torch.ones_like(ids))
    assert len(recorded) == 3 * tiny.n_blocks
    for key, tensor in recorded.items():
        assert torch.equal(tensor, hooks.last(*key)), key


def test_state_dict_unchanged_by_plans(tiny):
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    fresh_keys = set(tiny_llama().state_dict())
    ids = _ids()
    for text in ["0", "1.attn", "3.mlp,2"]:
        with apply_plan(PruningPlan.parse(text)), torch.no_grad():
            tiny.hidden_states(ids, torch.ones_like(ids))
    after = tiny.model.state_dict()
    assert set(after) == set(before) == fresh_keys
    for key, value in before.items():
        assert torch.equal(after[key], value), key


def test_no_gate_active_outside_with_block(tiny):
    ids = _ids()
    full = _our_logits(tiny, ids)
    assert active_plan() == PruningPlan()
    with apply_plan(PruningPlan.parse("1")):
        assert str(active_plan()) == "1"
        pruned = _our_logits(tiny, ids)
    assert active_plan() == PruningPlan()
    assert torch.equal(_our_logits(tiny, ids), full)
    assert not torch.equal(pruned, full)
    # no hook of any kind is left on the model
    for module in tiny.model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


def test_plan_restored_after_exception(tiny):
    with pytest.raises(RuntimeError):
        with apply_plan(PruningPlan.parse("0")):
            raise RuntimeError("boom")
    assert active_plan() == PruningPlan()


def test_nested_apply_plan_restores_outer(tiny):
    ids = _ids()
    outer, inner = PruningPlan.parse("0.attn"), PruningPlan.parse("3.mlp")
    with apply_plan(outer):
        outer_logits = _our_logits(tiny, ids)
        with apply_plan(inner):
            assert active_plan() == inner  # replaces, does not merge
            inner_logits = _our_logits(tiny, ids)
        assert active_plan() == outer
        again = _our_logits(tiny, ids)
    assert torch.equal(again, outer_logits)
    torch.testing.assert_close(inner_logits, forward_by_hand(tiny.model, ids, skip={(3, "mlp")}), atol=ATOL, rtol=0)
    torch.testing.assert_close(outer_logits, forward_by_hand(tiny.model, ids, skip={(0, "attn")}), atol=ATOL, rtol=0)


def test_install_gates_is_idempotent(tiny):
    assert gates_installed(tiny.model)
    forwards = [m.forward for m in tiny.model.model.layers[0].modules()]
    install_gates(tiny.model, tiny.adapter)
    assert [m.forward for m in tiny.model.model.layers[0].modules()] == forwards


def test_concurrent_plans_match_serial(tiny):
    plans = [PruningPlan.parse(t) for t in ["", "1.attn", "2", "0.mlp,3.attn"]]
    ids = _ids(batch=2, seq=64, seed=7)
    serial = [_our_logits_under(tiny, plan, ids) for plan in plans]
    assert len({tuple(s.flatten()[:5].tolist()) for s in serial}) == 4  # four different results
    n_tasks = 8
    for repetition in range(5):
        barrier = threading.Barrier(n_tasks)

        def task(index):
            barrier.wait()  # start all forward passes at the same time
            out = []
            for _ in range(3):
                out.append(_our_logits_under(tiny, plans[index % 4], ids))
            return index, out

        with ThreadPoolExecutor(max_workers=n_tasks) as pool:
            results = list(pool.map(task, range(n_tasks)))
        for index, outs in results:
            for out in outs:
                assert torch.equal(out, serial[index % 4]), (repetition, index)
    assert active_plan() == PruningPlan()


def _our_logits_under(loaded, plan, ids):
    with apply_plan(plan):
        return _our_logits(loaded, ids)


def test_gemma2_gates_record_resid_mid_at_pre_feedforward_norm():
    """Gemma-2 has post-norms; its ``resid_mid`` is the input of ``pre_feedforward_layernorm``."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    from pruneviz.core.loading import from_modules

    config = Gemma2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=64)
    torch.manual_seed(0)
    loaded = from_modules("tiny-gemma2", Gemma2ForCausalLM(config), tokenizer=None)
    ids = torch.randint(0, 64, (2, 7))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        full = loaded.model(ids).logits
    torch.testing.assert_close(loaded.logits(loaded.hidden_states(ids, mask)), full, atol=ATOL, rtol=0)
    recorded = {}
    with ResidualHooks(loaded.model.model.layers, "pre_feedforward_layernorm") as hooks, torch.no_grad():
        with record_residuals(lambda layer, name, t: recorded.__setitem__((layer, name), t.clone())):
            loaded.hidden_states(ids, mask)
    for key, tensor in recorded.items():
        assert torch.equal(tensor, hooks.last(*key)), key
    with ResidualHooks(loaded.model.model.layers, "pre_feedforward_layernorm") as hooks, torch.no_grad():
        with apply_plan(PruningPlan.parse("1.attn,2.mlp")):
            loaded.hidden_states(ids, mask)
    assert torch.equal(hooks.last(1, "resid_pre"), hooks.last(1, "resid_mid"))
    assert torch.equal(hooks.last(2, "resid_mid"), hooks.last(2, "resid_post"))
