"""Per-token savings of a plan."""

from __future__ import annotations

from pruneviz.core.plan import PruningPlan
from pruneviz.studies.generation import plan_savings


def test_plan_savings_counts_pruned_sublayers(tiny):
    info = tiny.info
    savings = plan_savings(info, PruningPlan.parse("1,2.attn,3.mlp"), context=100)
    assert savings.params_removed == 2 * info.params_attn + 2 * info.params_mlp
    assert savings.kv_bytes_per_token == 2 * (2 * info.n_kv_heads * info.head_dim * 2)  # bf16/fp16 values by default
    fp32 = plan_savings(info, PruningPlan.parse("1,2.attn,3.mlp"), context=100, value_bytes=4)
    assert fp32.kv_bytes_per_token == 2 * savings.kv_bytes_per_token
    assert savings.flops_per_token == 2 * savings.params_removed + 2 * 4 * info.n_heads * info.head_dim * 100
    assert 0 < savings.flops_percent < 100
    assert plan_savings(info, PruningPlan()).params_removed == 0
