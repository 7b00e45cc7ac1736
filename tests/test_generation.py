"""Greedy generation under a plan and per-token savings."""

from __future__ import annotations

import pytest

from pruneviz.core.errors import SettingError
from pruneviz.core.plan import PruningPlan
from pruneviz.studies.generation import generate_greedy, plan_savings


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


@pytest.mark.real
def test_greedy_generation_changes_with_the_plan(smollm2):
    prompt = "The capital of France is"
    full = generate_greedy(smollm2, prompt, max_new_tokens=6)
    assert full.new_tokens == 6 and "Paris" in full.text
    again = generate_greedy(smollm2, prompt, max_new_tokens=6)
    assert again.text == full.text and full.tokens_per_second > 0
    broken = generate_greedy(smollm2, prompt, PruningPlan.parse(",".join(str(i) for i in range(0, 30, 2))), max_new_tokens=6)
    assert broken.text != full.text
    with pytest.raises(SettingError, match="empty"):
        generate_greedy(smollm2, "  ")
