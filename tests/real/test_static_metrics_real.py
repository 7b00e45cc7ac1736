"""Static metrics of the embedded model through ``api.influence`` equal an independent computation from activations
captured with plain hooks."""

from __future__ import annotations

import pytest
from helpers import STATIC_METRIC_NAMES, assert_static_table_matches, check_static_invariants, static_metrics_with_hooks

from pruneviz import api
from pruneviz.influence.static import CSV_COLUMNS


@pytest.mark.real
def test_api_influence_matches_hooks_on_real_model(smollm2, tmp_path):
    # a text file of short documents of different lengths, so the calibration batch has padding
    words = "the quick brown fox jumps over the lazy dog while a small bird sings near the river".split()
    docs = [" ".join(words[: 3 + (5 * i) % 16]).capitalize() + "." for i in range(16)]
    path = tmp_path / "short.txt"
    path.write_text("\n\n".join(docs))
    batch, label, _ = api.calibration_batch(smollm2, str(path), 4, 48)
    assert (batch["attention_mask"] == 0).any(), "the test needs padding in the batch"
    table = api.influence(smollm2, str(path), STATIC_METRIC_NAMES, "all", samples=4, seq_len=48, use_cache=False)
    expected = static_metrics_with_hooks(smollm2, batch, batch_size=4)
    assert len(table) == 30 * 3 * 6
    assert_static_table_matches(table, expected, label, [*CSV_COLUMNS, "dtype"])  # api tables name the model's dtype
    assert set(table["dtype"]) == {"float32"}
    check_static_invariants(table)
