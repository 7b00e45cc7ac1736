"""The one line that says what an adaptive metric cost, and whether it resumed or came from the cache."""

from __future__ import annotations

from pruneviz.influence.run import cost_summary

COST = {"estimator": "loo", "subnetworks": 61, "block_forwards": 1200, "naive_block_forwards": 1860, "seconds": 12.34}


def test_a_fresh_run_says_its_work_and_what_prefix_reuse_saved():
    assert cost_summary("loss_shapley/sublayer", {**COST, "resumed": 0, "from_cache": False}) == (
        "loss_shapley/sublayer: loo, 61 subnetworks, 1,200 block forwards (naive: 1,860, 35% saved by prefix reuse), 12.3 s"
    )


def test_a_resumed_run_says_how_much_it_read_back():
    assert cost_summary("m", {**COST, "resumed": 20, "from_cache": False}).endswith(
        "; resumed: 20 of the 61 subnetworks were read from an earlier run"
    )


def test_a_cached_result_does_not_pass_the_first_runs_numbers_off_as_new():
    assert cost_summary("m", {**COST, "resumed": 20, "from_cache": True}).endswith(
        "(read from the result cache: these are the first run's numbers)"
    )
