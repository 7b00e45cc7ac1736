"""Benchmark: which recovery defaults help, on one model, measured side by side.

A plan removes the quarter of the attention sublayers with the lowest cosine distance on Wikipedia calibration
text (the plan a user builds first). Stand-ins are fitted for it with each method at a few calibration sizes,
and Wikipedia perplexity (evaluation half, 8 x 128 tokens) is compared with the plan without stand-ins, paired
per window: a stand-in "helps" only when the change is beyond two paired standard errors.

The question it answers: a least-squares stand-in of a d-dimensional update fitted on fewer calibration tokens
than d has more unknowns than equations and memorises them; how many tokens does each method need?

Run: ``.venv/bin/python bench/recovery_defaults.py [--model smollm2] [--sizes 8x64,32x128]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from pruneviz import api  # noqa: E402
from pruneviz.core.loading import load_model  # noqa: E402
from pruneviz.core.plan import PruningPlan  # noqa: E402

WIKI = {"task": "wiki", "windows": 8, "seq_len": 128}
METHODS = (("bias", 0), ("lowrank", 8), ("linear", 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--sizes", default="8x64,32x128", help="calibration documents x tokens, comma-separated")
    args = parser.parse_args()
    loaded = load_model(args.model, device="cpu", dtype="auto")
    table = api.influence(loaded, "wiki", ["cosine"], "sublayer", 8, 128)
    count = loaded.n_blocks // 4
    plan = api.lowest_plan(table, "cosine", "attn", count, loaded.n_blocks)
    none = api.evaluate(loaded, plan, **WIKI)
    unpruned = api.evaluate(loaded, PruningPlan(), **WIKI)
    d = loaded.info.hidden_size
    print(f"{args.model} ({loaded.dtype_name}, d = {d}); plan: the {count} attention sublayers of lowest cosine: {plan}")
    print(f"unpruned perplexity {api.with_ci(unpruned.metrics['perplexity'], unpruned.stderr['perplexity'])}; "
          f"plan without stand-ins {api.with_ci(none.metrics['perplexity'], none.stderr['perplexity'])} (n = {none.n} windows)")
    print("method | calibration | tokens / d | perplexity | change vs no stand-in, % (95 % CI, paired) | verdict | fit s")
    for size in args.sizes.split(","):
        samples, seq_len = (int(x) for x in size.split("x"))
        for method, rank in METHODS:
            started = time.perf_counter()
            recovery = api.recover(loaded, plan, method=method, rank=rank or 8, samples=samples, seq_len=seq_len)
            seconds = time.perf_counter() - started
            result = api.evaluate(loaded, plan, recovery=recovery, **WIKI)
            change, low, high = api.perplexity_change(none, result)
            verdict = "within noise" if api.within_noise(none, result, "perplexity") else ("helps" if change < 0 else "hurts")
            label = f"{method} r={rank}" if rank else method
            print(f"{label} | {samples} x {seq_len} | {samples * seq_len / d:.1f} | "
                  f"{api.with_ci(result.metrics['perplexity'], result.stderr['perplexity'])} | {change:+.1f} ({low:+.1f} to {high:+.1f}) | "
                  f"{verdict} | {seconds:.1f}")


if __name__ == "__main__":
    main()
