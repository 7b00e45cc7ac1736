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
    from pruneviz.core.gating import apply_plan, record_residuals, resume_from
    from pruneviz.core.plan import PruningPlan
    from pruneviz.influence.objectives import objective_data

    data = objective_data(smollm2, "wiki", samples=2, seq_len=24)
    resid_pre = {}
    with torch.no_grad(), record_residuals(lambda layer, name, t: resid_pre.setdefault(layer, t) if name == "resid_pre" else None):
        smollm2.hidden_states(data.input_ids, data.attention_mask)
    size = resid_pre[0].numel() * resid_pre[0].element_size()  # [2, 24, 576] float32
    # room for 4 block inputs in memory and about 6 on disk: of 30 only the last 10 are kept
    store = HiddenStateStore(cpu_bytes=4 * size, disk_bytes=6 * size + 1000, directory=tmp_path)
    for layer in range(30):
        store.put(f"full/block={layer}", resid_pre[layer])
    assert store.usage()["entries"] == 10 and store.usage()["cpu"] == 4 * size
    assert "full/block=19" not in store and len(files_in(tmp_path)) == 6
    for layer in range(20, 30):
        assert torch.equal(store.get(f"full/block={layer}"), resid_pre[layer]), layer

    plan = PruningPlan.parse("22.attn,25")
    with torch.no_grad(), apply_plan(plan):
        expected = smollm2.hidden_states(data.input_ids, data.attention_mask)
        with resume_from(22, store.get("full/block=22")):
            assert torch.equal(smollm2.hidden_states(data.input_ids, data.attention_mask), expected)
