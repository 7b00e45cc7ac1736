"""Adaptive influence on the embedded model: LOO loss Shapley values by hand, the MMLU objective."""

from __future__ import annotations

import pytest
import torch

from pruneviz.core.plan import PruningPlan, Unit
from pruneviz.influence.objectives import objective_data
from pruneviz.influence.shapley import adaptive_influence, subnetwork_values


@pytest.mark.real
def test_real_model_loo_loss_shapley_equals_hand_computation(smollm2):
    """LOO loss-Shapley of three blocks = HF loss with the block pruned - HF loss of the full model."""
    from pruneviz.core.gating import apply_plan

    data = objective_data(smollm2, "wiki", samples=3, seq_len=48)
    chosen = [Unit(2), Unit(15), Unit(28)]
    result = adaptive_influence(smollm2, data, chosen, "loss", "loo")
    labels = data.input_ids.masked_fill(data.attention_mask == 0, -100)

    def hf_loss(plan: PruningPlan) -> float:
        # transformers' own loss path: mean cross-entropy over every non-ignored next token
        with apply_plan(plan), torch.no_grad():
            return smollm2.model(input_ids=data.input_ids, attention_mask=data.attention_mask, labels=labels).loss.item()

    full = hf_loss(PruningPlan())
    for unit, value in zip(chosen, result.table["value"]):
        assert value == pytest.approx(hf_loss(PruningPlan.of([unit])) - full, rel=1e-4, abs=1e-5)
    # early blocks matter more than a late middle block on Wikipedia text
    assert result.table["value"].iloc[0] > result.table["value"].iloc[1] > 0


@pytest.mark.real
def test_real_model_mmlu_objective_is_gold_letter_cross_entropy(smollm2):
    """The MMLU loss objective of the full model equals the letter-format evaluator's mean loss."""
    from pruneviz.evaluation.mmlu import evaluate_mmlu

    data = objective_data(smollm2, "mmlu:high school biology", samples=4, seq_len=0)
    (value,) = subnetwork_values(smollm2, data, "loss", [PruningPlan()])
    evaluation = evaluate_mmlu(smollm2, PruningPlan(), "high school biology", "letter", per_subject=4)
    assert value == pytest.approx(evaluation.metrics["loss"], rel=1e-5)
