"""Static metrics equal an independent computation from activations captured with plain hooks."""

from __future__ import annotations

import math

import pytest
import torch
from reference import ResidualHooks, static_metrics_by_hand

from pruneviz import api
from pruneviz.core.errors import SettingError
from pruneviz.core.plan import PruningPlan
from pruneviz.influence.static import CSV_COLUMNS, STATIC_METRICS, static_influence

METRICS = ["cosine", "angular", "l1", "l2", "rel_l1", "rel_l2"]
KINDS = ["block", "attn", "mlp"]


def _padded_batch():
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 128, (5, 11), generator=generator)
    lengths = [11, 7, 3, 9, 1]
    mask = torch.zeros(5, 11, dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    ids = ids.masked_fill(mask == 0, 0)
    return {"input_ids": ids, "attention_mask": mask}


def _by_hand(loaded, batch, batch_size, metrics=METRICS, kinds=KINDS, plan=PruningPlan()):
    from pruneviz.core.gating import apply_plan

    masks = []
    with ResidualHooks(loaded.model.model.layers) as hooks, torch.no_grad(), apply_plan(plan):
        for start in range(0, len(batch["input_ids"]), batch_size):
            ids = batch["input_ids"][start : start + batch_size]
            mask = batch["attention_mask"][start : start + batch_size]
            loaded.model.model(input_ids=ids, attention_mask=mask)
            masks.append(mask)
    return static_metrics_by_hand(hooks.captured, masks, loaded.n_blocks, metrics, kinds)


def _assert_table_matches(table, expected, dataset, columns=CSV_COLUMNS):
    assert list(table.columns) == columns
    assert len(table) == len(expected)
    for row in table.itertuples():
        key = (row.layer, row.sublayer, row.metric)
        assert row.value == pytest.approx(expected[key], rel=1e-5, abs=1e-9), key
        assert row.unit == (str(row.layer) if row.sublayer == "block" else f"{row.layer}.{row.sublayer}")
        assert math.isnan(row.stderr) and row.dataset == dataset


@pytest.mark.parametrize("batch_size", [2, 8])
def test_static_influence_matches_hooks_on_tiny(tiny, batch_size):
    batch = _padded_batch()
    table = static_influence(tiny, batch, METRICS, KINDS, "synthetic", batch_size=batch_size)
    # the hand computation pads each forward pass the same way, but the metric means are over real tokens
    expected = _by_hand(tiny, batch, batch_size=5)
    assert len(table) == tiny.n_blocks * len(KINDS) * len(METRICS)
    _assert_table_matches(table, expected, "synthetic")


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
    table = static_influence(tiny, batch, ["l2", "cosine"], KINDS, "synthetic", plan=plan)
    expected = _by_hand(tiny, batch, batch_size=8, metrics=["l2", "cosine"], plan=plan)
    _assert_table_matches(table, expected, "synthetic")
    values = table.set_index(["unit", "metric"])["value"]
    assert values[("1.attn", "l2")] == 0 and values[("1.attn", "cosine")] == pytest.approx(0, abs=1e-6)


def test_invariants_on_tiny(tiny):
    table = static_influence(tiny, _padded_batch(), METRICS, KINDS, "synthetic")
    _check_invariants(table)


def _check_invariants(table):
    by_metric = {m: g["value"] for m, g in table.groupby("metric")}
    assert ((by_metric["cosine"] >= 0) & (by_metric["cosine"] <= 2)).all()
    assert ((by_metric["angular"] >= 0) & (by_metric["angular"] <= 1)).all()
    for name in ["l1", "l2", "rel_l1", "rel_l2"]:
        assert (by_metric[name] > 0).all()
    assert table["value"].map(math.isfinite).all()


def test_metric_registry_formulas():
    x = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    y = torch.tensor([[0.0, 1.0], [3.0, 4.0]])
    per = {name: STATIC_METRICS[name].per_token(x, y).tolist() for name in METRICS}
    assert per["cosine"] == pytest.approx([1.0, 0.0], abs=1e-6)
    assert per["angular"] == pytest.approx([0.5, 0.0], abs=1e-3)
    assert per["l1"] == pytest.approx([2.0, 0.0])
    assert per["l2"] == pytest.approx([math.sqrt(2), 0.0])
    assert per["rel_l1"] == pytest.approx([2.0, 0.0])
    assert per["rel_l2"] == pytest.approx([math.sqrt(2), 0.0])
    opposite = STATIC_METRICS["cosine"].per_token(x[:1], -x[:1]).item()
    assert opposite == pytest.approx(2.0)
    assert STATIC_METRICS["angular"].per_token(x[:1], -x[:1]).item() == pytest.approx(1.0)


@pytest.mark.real
def test_api_influence_matches_hooks_on_real_model(smollm2, tmp_path):
    # a text file of short documents of different lengths, so the calibration batch has padding
    words = "the quick brown fox jumps over the lazy dog while a small bird sings near the river".split()
    docs = [" ".join(words[: 3 + (5 * i) % 16]).capitalize() + "." for i in range(16)]
    path = tmp_path / "short.txt"
    path.write_text("\n\n".join(docs))
    batch, label, _ = api.calibration_batch(smollm2, str(path), 4, 48)
    assert (batch["attention_mask"] == 0).any(), "the test needs padding in the batch"
    table = api.influence(smollm2, str(path), METRICS, "all", samples=4, seq_len=48, use_cache=False)
    expected = _by_hand(smollm2, batch, batch_size=4)
    assert len(table) == 30 * 3 * 6
    _assert_table_matches(table, expected, label, [*CSV_COLUMNS, "dtype"])  # api tables name the model's dtype
    assert set(table["dtype"]) == {"float32"}
    _check_invariants(table)


def test_influence_rejects_unknown_metric_and_granularity(tiny):
    with pytest.raises(SettingError, match="'cosin'"):
        api.influence(tiny, "wiki", ["cosine", "cosin"])
    with pytest.raises(SettingError, match="'layer'"):
        api.influence(tiny, "wiki", ["cosine"], granularity="layer")
