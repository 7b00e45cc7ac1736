"""Benchmark: the prune page's loop as the app runs it, for a few sizes of the default MMLU set, side by side.

For each number of MMLU questions per subject (letter format unless the model is under 1B parameters), in a
fresh result cache and block-boundary store, as a session that has just loaded the model:

- **baseline**: the unpruned evaluation of the default set (Wikipedia 8 x 128 tokens, then MMLU 0-shot), which
  the app starts in the background at load: seconds;
- **late toggle** (one attention sublayer in the last quarter) and **early toggle** (one block in the first
  tenth), each evaluated as the page does (wiki, then MMLU, with answer changes and KL): seconds to the first
  number on screen (the first provisional result of any task), to the first MMLU estimate, and to the end;
- **noise**: the 95 % CI half-width of the pruned accuracy and of its paired difference from the unpruned model,
  in pp; the same for perplexity's relative change, in %.

Ratios against the app's default (``--default``) are measured in the same run. Run:
``.venv/bin/python bench/app_loop.py [--model qwen2.5-coder-1.5b] [--per-subject 2,5]``.
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
from pruneviz.engine.incremental import using_store  # noqa: E402
from pruneviz.evaluation.evaluation_set import default_evaluation_set  # noqa: E402
from pruneviz.evaluation.mmlu import default_format, default_questions_per_subject  # noqa: E402


def toggle(loaded, plan: PruningPlan, tasks: list[dict]) -> dict:
    """Evaluate ``plan`` task by task as the page does; when numbers arrived and how noisy the final ones are."""
    started, marks, pairs = time.perf_counter(), {}, {}

    def first(name: str):
        return lambda _: marks.setdefault(name, time.perf_counter() - started)

    for settings in tasks:
        name = settings["task"]
        baseline = api.evaluate(loaded, PruningPlan(), **settings)
        pruned = api.evaluate(loaded, plan, partial=first(name), **settings)
        marks.setdefault(name, time.perf_counter() - started)  # no provisional result: the final one came first
        pairs[name] = (baseline, pruned)
    final = time.perf_counter() - started
    wiki, mmlu = pairs["wiki"], pairs["mmlu"]
    _, d, se, _ = api.difference_and_noise(*mmlu, "acc")
    change, low, high = api.perplexity_change(*wiki)
    return {
        "first": min(marks.values()), "mmlu_first": marks["mmlu"], "final": final,
        "acc_ci": 100 * api.confidence_halfwidth(mmlu[1].stderr["acc"]), "delta_acc": 100 * d,
        "delta_ci": 100 * api.confidence_halfwidth(se), "ppl_change": change, "ppl_ci": (high - low) / 2,
        "n": mmlu[1].n,
    }


def measure(loaded, per_subject: int, toggles: dict[str, PruningPlan]) -> dict:
    tasks = default_evaluation_set(loaded.info.params_total, per_subject)
    with tempfile.TemporaryDirectory() as cache, using_store(fresh_store()):
        os.environ["PRUNEVIZ_CACHE_DIR"] = cache
        (Path(cache) / "models").symlink_to(Path(__file__).resolve().parent.parent / "cache" / "models")
        started = time.perf_counter()
        for settings in tasks:
            api.evaluate(loaded, PruningPlan(), **settings)
        baseline = time.perf_counter() - started
        return {"baseline": baseline, **{which: toggle(loaded, plan, tasks) for which, plan in toggles.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--per-subject", default="2,5", help="comma-separated questions per subject to compare")
    parser.add_argument("--toggles", default="late,early", help="comma list of the toggles to time: late, early")
    args = parser.parse_args()
    loaded = load_model(args.model, device="cpu", dtype=args.dtype)
    n = loaded.n_blocks
    late, early = PruningPlan.parse(f"{n - 3}.attn", n), PruningPlan.parse(str(max(1, n // 10)), n)
    default = default_questions_per_subject(default_format(loaded.info.params_total))
    sizes = sorted({int(x) for x in args.per_subject.split(",")} | {default})
    toggles = {which: plan for which, plan in (("late", late), ("early", early)) if which in args.toggles.split(",")}
    results = {size: measure(loaded, size, toggles) for size in sizes}
    print(f"{args.model} in {loaded.dtype_name} on {loaded.device}, {os.cpu_count()} cores; late toggle {late}, early toggle {early}")
    print("per subject | n | baseline s | toggle | first number s | first MMLU s | final s | acc ± pp | Δacc ± pp (paired) | ppl change ± %")
    for size, result in results.items():
        for which in toggles:
            t = result[which]
            print(f"{size} | {t['n']} | {result['baseline']:.1f} | {which} | {t['first']:.2f} | {t['mmlu_first']:.2f} | {t['final']:.1f} | "
                  f"{t['acc_ci']:.1f} | {t['delta_acc']:+.1f} ± {t['delta_ci']:.1f} | {t['ppl_change']:+.1f} ± {t['ppl_ci']:.1f}")
    print(f"ratios against the default ({default} per subject), same run:")
    for size, result in results.items():
        finals = ", ".join(f"{k} toggle final {result[k]['final'] / results[default][k]['final']:.2f}x, paired Δacc CI "
                           f"{result[k]['delta_ci'] / max(results[default][k]['delta_ci'], 1e-9):.2f}x" for k in toggles)
        print(f"{size} per subject: baseline {result['baseline'] / results[default]['baseline']:.2f}x, {finals}")


if __name__ == "__main__":
    main()
