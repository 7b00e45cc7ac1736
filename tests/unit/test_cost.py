"""What a plan removes: parameters, KV-cache bytes and FLOPs per token (core/cost.py)."""

from __future__ import annotations

from pruneviz.core.cost import plan_cost
from pruneviz.core.plan import PruningPlan


def test_plan_cost_counts_pruned_sublayers(tiny):
    info = tiny.info
    cost = plan_cost(info, PruningPlan.parse("1,2.attn,3.mlp"), value_bytes=2, context=100)
    assert (cost.attn, cost.mlp) == (2, 2)
    assert cost.params_removed == 2 * info.params_attn + 2 * info.params_mlp
    assert cost.params_removed_percent == 100 * cost.params_removed / info.params_total
    assert cost.kv_bytes_per_token == 2 * (2 * info.n_kv_heads * info.head_dim * 2)  # 2 attn sublayers, K and V, 2 bytes
    fp32 = plan_cost(info, PruningPlan.parse("1,2.attn,3.mlp"), value_bytes=4, context=100)
    assert fp32.kv_bytes_per_token == 2 * cost.kv_bytes_per_token
    assert cost.flops_per_token == 2 * cost.params_removed + 2 * 4 * info.n_heads * info.head_dim * 100
    assert 0 < cost.flops_percent < 100
    assert plan_cost(info, PruningPlan(), value_bytes=2).params_removed == 0


def test_plan_cost_summary_reads_as_a_sentence(tiny):
    cost = plan_cost(tiny.info, PruningPlan.parse("0.attn"), value_bytes=4)
    share = tiny.info.params_attn / tiny.info.params_total
    assert cost.summary() == (
        f"1 attn and 0 mlp sublayers pruned: {tiny.info.params_attn / 1e6:,.2f}M parameters ({share:.1%} of the model)."
    )
