"""The embedded SmolLM2 sharded by accelerate, mostly offloaded to disk: every computation equals the whole model's."""

from __future__ import annotations

import pytest
import torch

from pruneviz.core.loading import load_model
from pruneviz.core.plan import PruningPlan
from pruneviz.evaluation import lm_eval_backend
from pruneviz.studies.generation import generate_greedy


@pytest.mark.real
def test_real_model_sharded_to_disk_gives_the_same_results(smollm2, tmp_path):
    """SmolLM2 (540 MB in fp32) with 200 MB of CPU memory allowed: most blocks go to disk; both backends and
    generation give the unsharded model's results."""
    from pruneviz.evaluation.perplexity import evaluate_perplexity

    sharded = load_model("smollm2", dtype="float32", device_map="auto", max_memory={"cpu": "200MB"}, offload_folder=tmp_path)
    assert "disk" in set(sharded.device_map.values()) and sharded.device == torch.device("cpu")
    for plan in (PruningPlan(), PruningPlan.parse("5.attn,20")):
        expected = evaluate_perplexity(smollm2, plan, "wiki", windows=2, seq_len=32)
        got = evaluate_perplexity(sharded, plan, "wiki", windows=2, seq_len=32)
        assert got.metrics["perplexity"] == pytest.approx(expected.metrics["perplexity"], rel=1e-5)
    plan = PruningPlan.parse("5.attn,20")
    through_lm_eval = lm_eval_backend.evaluate_perplexity(sharded, plan, "wiki", windows=2, seq_len=32)
    assert through_lm_eval.metrics["perplexity"] == pytest.approx(expected.metrics["perplexity"], rel=1e-5)
    generated = [generate_greedy(m, "The capital of France is", plan, max_new_tokens=4) for m in (smollm2, sharded)]
    assert generated[1].text == generated[0].text
