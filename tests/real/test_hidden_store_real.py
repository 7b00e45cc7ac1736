"""The hidden-state store with the embedded model's block inputs: bit-exact through memory and disk, and a
forward pass resumed from them."""

from __future__ import annotations

import pytest
import torch
from helpers import files_in

from pruneviz.engine.hidden_store import HiddenStateStore


@pytest.mark.real
def test_real_model_block_inputs_survive_the_store_and_resume_the_forward_pass(smollm2, tmp_path):
    """SmolLM2 block inputs go through memory and disk bit-exact; resuming from them gives the same states."""
    from pruneviz.core.plan import PruningPlan
    from pruneviz.engine.prefix import PrefixRunner
    from pruneviz.influence.objectives import objective_data

    data = objective_data(smollm2, "wiki", samples=2, seq_len=24)
    runner = PrefixRunner(smollm2, data.input_ids, data.attention_mask)
    size = runner.resid_pre[0].numel() * runner.resid_pre[0].element_size()  # [2, 24, 576] float32
    # room for 4 block inputs in memory and about 6 on disk: of 30 only the last 10 are kept
    store = HiddenStateStore(cpu_bytes=4 * size, disk_bytes=6 * size + 1000, directory=tmp_path)
    for layer, hidden in enumerate(runner.resid_pre):
        store.put(f"full/block={layer}", hidden)
    assert store.usage()["entries"] == 10 and store.usage()["cpu"] == 4 * size
    assert "full/block=19" not in store and len(files_in(tmp_path)) == 6
    for layer in range(20, 30):
        assert torch.equal(store.get(f"full/block={layer}"), runner.resid_pre[layer]), layer

    plan = PruningPlan.parse("22.attn,25")
    expected = runner.run(plan)
    runner.resid_pre = list(runner.resid_pre)
    runner.resid_pre[22] = store.get("full/block=22")
    assert torch.equal(runner.run(plan), expected)
