"""Static metrics equal an independent computation from activations captured with plain hooks (tiny model)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import (
    STATIC_KINDS,
    STATIC_METRIC_NAMES,
    assert_static_table_matches,
    check_static_invariants,
    static_metrics_with_hooks,
)

from pruneviz import api
from pruneviz.core.errors import SettingError
from pruneviz.core.plan import PruningPlan
from pruneviz.influence.static import STATIC_METRICS, static_influence


def _padded_batch():
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 128, (5, 11), generator=generator)
    lengths = [11, 7, 3, 9, 1]
    mask = torch.zeros(5, 11, dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    ids = ids.masked_fill(mask == 0, 0)
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("batch_size", [2, 8])
def test_static_influence_matches_hooks_on_tiny(tiny, batch_size):
    batch = _padded_batch()
    table = static_influence(tiny, batch, STATIC_METRIC_NAMES, STATIC_KINDS, "synthetic", batch_size=batch_size)
    # the hand computation pads each forward pass the same way, but the metric means are over real tokens
    expected = static_metrics_with_hooks(tiny, batch, batch_size=5)
    assert len(table) == tiny.n_blocks * len(STATIC_KINDS) * len(STATIC_METRIC_NAMES)
    assert_static_table_matches(table, expected, "synthetic")


def test_padding_is_excluded(tiny):
    """A sequence's metrics do not depend on how much padding follows it."""
    batch = _padded_batch()
    row = {k: v[1:2, :7] for k, v in batch.items()}  # the 7-token sequence alone, no padding
    alone = static_influence(tiny, row, ["l2", "cosine"], ["block"], "x")
    padded = {k: v[1:2] for k, v in batch.items()}  # same sequence with 4 padding tokens
    with_pad = static_influence(tiny, padded, ["l2", "cosine"], ["block"], "x")
    assert with_pad["value"].to_list() == pytest.approx(alone["value"].to_list(), rel=1e-5)


def test_static_influence_under_a_plan(tiny):
    batch = _padded_batch()
    plan = PruningPlan.parse("1.attn")
    table = static_influence(tiny, batch, ["l2", "cosine"], STATIC_KINDS, "synthetic", plan=plan)
    expected = static_metrics_with_hooks(tiny, batch, batch_size=8, metrics=["l2", "cosine"], plan=plan)
    assert_static_table_matches(table, expected, "synthetic")
    values = table.set_index(["unit", "metric"])["value"]
    assert values[("1.attn", "l2")] == 0 and values[("1.attn", "cosine")] == pytest.approx(0, abs=1e-6)


def test_invariants_on_tiny(tiny):
    table = static_influence(tiny, _padded_batch(), STATIC_METRIC_NAMES, STATIC_KINDS, "synthetic")
    check_static_invariants(table)


def test_metric_registry_formulas():
    x = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    y = torch.tensor([[0.0, 1.0], [3.0, 4.0]])
    per = {name: STATIC_METRICS[name].per_token(x, y).tolist() for name in STATIC_METRIC_NAMES}
    assert per["cosine"] == pytest.approx([1.0, 0.0], abs=1e-6)
    assert per["angular"] == pytest.approx([0.5, 0.0], abs=1e-3)
    assert per["l1"] == pytest.approx([2.0, 0.0])
    assert per["l2"] == pytest.approx([math.sqrt(2), 0.0])
    assert per["rel_l1"] == pytest.approx([2.0, 0.0])
    assert per["rel_l2"] == pytest.approx([math.sqrt(2), 0.0])
    opposite = STATIC_METRICS["cosine"].per_token(x[:1], -x[:1]).item()
    assert opposite == pytest.approx(2.0)
    assert STATIC_METRICS["angular"].per_token(x[:1], -x[:1]).item() == pytest.approx(1.0)


def test_influence_rejects_unknown_metric_and_granularity(tiny):
    with pytest.raises(SettingError, match="'cosin'"):
        api.influence(tiny, "wiki", ["cosine", "cosin"])
    with pytest.raises(SettingError, match="'layer'"):
        api.influence(tiny, "wiki", ["cosine"], granularity="layer")
