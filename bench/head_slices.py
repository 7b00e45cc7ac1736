"""Benchmark: a late toggle's Wikipedia evaluation with the work over the vocabulary in slices, side by side.

After the output head, each scored position's log-softmax, and with ``kl`` the KL divergence from the unpruned
model, run over the whole vocabulary (151,936 tokens on Qwen2.5). Over 512 positions at once every pass streams a
0.3 GB fp32 tensor through memory; in slices of :data:`pruneviz.engine.scoring.SLICE_POSITIONS` rows the slice stays
in the processor's cache. This times the prune page's first evaluation after a toggle (8 x 128 Wikipedia windows,
``25.attn`` pruned, the unpruned states in the block-boundary store, the KL from the unpruned model measured) with
slices of 512 rows (no slicing) and of 32, alternating which goes first, and checks that the KL is unchanged.

Run: ``.venv/bin/python bench/head_slices.py [--model qwen2.5-coder-1.5b] [--repeats 2]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from lm_eval_speed import fresh_store  # noqa: E402

from pruneviz import api  # noqa: E402
from pruneviz.core.loading import load_model  # noqa: E402
from pruneviz.core.plan import PruningPlan  # noqa: E402
from pruneviz.engine import scoring  # noqa: E402
from pruneviz.engine.incremental import using_store  # noqa: E402

WIKI = {"task": "wiki", "windows": 8, "seq_len": 128}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    loaded = load_model(args.model, device="cpu", dtype="auto")
    plan = PruningPlan.parse(f"{loaded.n_blocks - 3}.attn", loaded.n_blocks)
    sizes, seconds, kl = (512, scoring.SLICE_POSITIONS), {}, {}
    with tempfile.TemporaryDirectory() as cache, using_store(fresh_store()):
        os.environ["PRUNEVIZ_CACHE_DIR"] = cache
        (Path(cache) / "models").symlink_to(Path(__file__).resolve().parent.parent / "cache" / "models")
        api.evaluate(loaded, PruningPlan(), **WIKI)  # the baseline fills the store, as in the app
        for repeat in range(args.repeats):
            for size in sizes if repeat % 2 == 0 else sizes[::-1]:
                scoring.SLICE_POSITIONS = size
                started = time.perf_counter()
                result = api.evaluate(loaded, plan, use_cache=False, **WIKI)
                seconds.setdefault(size, []).append(time.perf_counter() - started)
                kl[size] = result.metrics["kl"]
    print(f"{args.model} {loaded.dtype_name}, late toggle {plan}, 8 x 128 Wikipedia windows with KL, best of {args.repeats}:")
    for size in sizes:
        print(f"slices of {size:>3} rows: {min(seconds[size]):.2f} s (runs {', '.join(f'{s:.2f}' for s in seconds[size])}), KL {kl[size]:.6f}")
    print(f"slices of {sizes[1]} are {min(seconds[512]) / min(seconds[sizes[1]]):.2f}x faster")


if __name__ == "__main__":
    main()
