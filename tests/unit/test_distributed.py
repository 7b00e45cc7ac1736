"""Data-parallel helpers without a launcher. The 2-process runs: ``tests/real/test_distributed_real.py``."""

from __future__ import annotations

from pruneviz.core import distributed


def test_helpers_without_a_launcher():
    here = distributed.init()
    assert (here.rank, here.size) == (0, 1) and distributed.is_main()
    items = list(range(7))
    assert distributed.shard(items) == items and distributed.gather("mine") == ["mine"]
    # what 3 processes would hold, and back
    shares = [items[rank::3] for rank in range(3)]
    assert shares == [[0, 3, 6], [1, 4], [2, 5]] and distributed.unshard(shares) == items
    assert distributed.local_device("cpu") == "cpu"
