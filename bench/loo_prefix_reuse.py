"""Benchmark: leave-one-out Shapley with prefix reuse vs the naive method, measured side by side.

Prints block forwards and wall time of both, their ratios, and the largest difference between the
two results (they must agree to 1e-5). Run: ``.venv/bin/python bench/loo_prefix_reuse.py [--samples N]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pruneviz.core.loading import load_model  # noqa: E402
from pruneviz.core.plan import units_of  # noqa: E402
from pruneviz.influence.objectives import objective_data  # noqa: E402
from pruneviz.influence.shapley import adaptive_influence  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--data", default="wiki", help="wiki or mmlu[:subset]")
    parser.add_argument("--samples", type=int, default=4, help="wiki: documents; mmlu: questions per subject")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--granularity", default="block", choices=["block", "sublayer"])
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each method")
    args = parser.parse_args()

    loaded = load_model(args.model)
    data = objective_data(loaded, args.data, args.samples, args.seq_len)
    units = units_of(loaded.n_blocks, args.granularity)
    times = {True: [], False: []}
    results = {}
    for _ in range(args.repeats):
        for reuse in (True, False):  # alternate so that machine noise hits both methods alike
            started = time.perf_counter()
            results[reuse] = adaptive_influence(loaded, data, units, "loss", "loo", reuse_prefix=reuse)
            times[reuse].append(time.perf_counter() - started)
    reused, naive = results[True], results[False]
    difference = (reused.table["value"] - naive.table["value"]).abs().max()
    fast, slow = min(times[True]), min(times[False])
    print(f"model {loaded.name}, data {data.label}, {len(data)} sequences, {len(units)} units ({args.granularity})")
    print(f"{'method':<14}{'block forwards':>16}{'best seconds':>14}")
    print(f"{'prefix reuse':<14}{reused.count.computed:>16}{fast:>14.2f}")
    print(f"{'naive':<14}{naive.count.computed:>16}{slow:>14.2f}")
    print(f"block-forward ratio naive/reuse: {naive.count.computed / reused.count.computed:.2f}x")
    print(f"wall-time ratio naive/reuse:     {slow / fast:.2f}x")
    print(f"max |difference| of influences:  {difference:.2e} (must be < 1e-5)")


if __name__ == "__main__":
    main()
