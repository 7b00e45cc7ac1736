"""Benchmark: a late toggle's first and final Wikipedia numbers, as this session's changes left them and as before.

On a 151,936-token vocabulary (Qwen2.5) most of a late toggle's Wikipedia evaluation is the output head: the log-
softmax at every position, and the KL divergence from the unpruned model, over the whole vocabulary. Two changes
are measured side by side, alternating which goes first:

- **before**: the work over the vocabulary on 512 positions at once (each pass streams a 0.3 GB fp32 tensor through
  memory), and the first provisional value after the first packed row (4 windows of 128 tokens);
- **now**: that work in slices of :data:`pruneviz.engine.scoring.SLICE_POSITIONS` rows, which stay in cache, and
  the first :data:`pruneviz.evaluation.perplexity.FIRST_WINDOWS` windows scored on their own, so the first value
  comes after one short forward pass.

Each run is the prune page's evaluation after a toggle: 8 x 128 Wikipedia windows, an attention sublayer three
blocks from the end pruned, the unpruned states in the block-boundary store, the KL from the unpruned model
measured. Prints seconds to the first provisional value and to the final one, and the two KL values.

Run: ``.venv/bin/python bench/first_number.py [--model qwen2.5-coder-1.5b] [--repeats 2]``.
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
from pruneviz.evaluation import perplexity  # noqa: E402

WIKI = {"task": "wiki", "windows": 8, "seq_len": 128}
WAYS = {"before": (512, 0), "now": (scoring.SLICE_POSITIONS, perplexity.FIRST_WINDOWS)}


def timed(loaded, plan: PruningPlan) -> tuple[float, float, float]:
    """``(first provisional s, final s, KL)`` of one evaluation, from scratch (no result cache, no checkpoints)."""
    started, first = time.perf_counter(), []
    result = api.evaluate(loaded, plan, use_cache=False, partial=lambda _: first.append(time.perf_counter() - started), **WIKI)
    final = time.perf_counter() - started
    return (first[0] if first else final), final, result.metrics["kl"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    loaded = load_model(args.model, device="cpu", dtype="auto")
    plan = PruningPlan.parse(f"{loaded.n_blocks - 3}.attn", loaded.n_blocks)
    runs: dict[str, list] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory() as cache, using_store(fresh_store()):
        os.environ["PRUNEVIZ_CACHE_DIR"] = cache
        (Path(cache) / "models").symlink_to(Path(__file__).resolve().parent.parent / "cache" / "models")
        for way, (slices, first) in WAYS.items():
            # the baseline fills the store, as in the app, under each way: the windows' batches differ between them
            scoring.SLICE_POSITIONS, perplexity.FIRST_WINDOWS = slices, first
            api.evaluate(loaded, PruningPlan(), use_cache=False, **WIKI)
        for repeat in range(args.repeats):
            for way in list(WAYS) if repeat % 2 == 0 else list(WAYS)[::-1]:
                scoring.SLICE_POSITIONS, perplexity.FIRST_WINDOWS = WAYS[way]
                runs[way].append(timed(loaded, plan))
    print(f"{args.model} {loaded.dtype_name}, late toggle {plan}, 8 x 128 Wikipedia windows with KL, best of {args.repeats}:")
    best = {way: (min(r[0] for r in found), min(r[1] for r in found)) for way, found in runs.items()}
    for way, found in runs.items():
        print(f"{way:>6}: first number {best[way][0]:.2f} s, final {best[way][1]:.2f} s (runs: "
              f"{'; '.join(f'{a:.2f} / {b:.2f}' for a, b, _ in found)}), KL {found[-1][2]:.6f}")
    print(f"now against before: first number {best['before'][0] / best['now'][0]:.2f}x sooner, final {best['before'][1] / best['now'][1]:.2f}x sooner")


if __name__ == "__main__":
    main()
