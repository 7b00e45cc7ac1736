"""Benchmark: what each embedded model is good for, measured side by side in one run (the model picker's numbers).

For each model, loaded in ``--dtype`` (default ``auto``: bf16 on a CPU with native bf16):

- **MMLU**: letter format, 0-shot, ``--per-subject`` questions from each of the 57 subjects: acc with its
  standard error and n, and the chance level (25 %) it is or is not distinguishable from (two SE);
- **cloze MMLU**: the same questions scored by answer likelihood (acc, acc_norm), the format small models read best;
- **perplexity**: Wikipedia, ``--windows`` x ``--window-len`` tokens of the evaluation half;
- **speed**: seconds of the unpruned evaluation of all of the above (result cache and block-boundary store
  bypassed), and the forward throughput in tokens/s on ``--window-len``-token windows.

Run: ``.venv/bin/python bench/model_cards.py [--models smollm2,gemma3-270m,qwen2.5-coder-0.5b,qwen2.5-coder-1.5b]``
(``make models`` installs the larger ones). Prints one markdown row per model.
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

import torch  # noqa: E402

from pruneviz import api  # noqa: E402
from pruneviz.core.assets import EMBEDDED_MODELS  # noqa: E402
from pruneviz.core.loading import load_model  # noqa: E402
from pruneviz.core.plan import PruningPlan  # noqa: E402
from pruneviz.engine.incremental import using_store  # noqa: E402


def card(name: str, args) -> str:
    loaded = load_model(name, dtype=args.dtype)
    options = dict(use_cache=False)
    started = time.perf_counter()
    with using_store(None):
        letter = api.evaluate(loaded, PruningPlan(), "mmlu", fmt="letter", per_subject=args.per_subject, **options)
        cloze = api.evaluate(loaded, PruningPlan(), "mmlu", fmt="cloze", per_subject=args.per_subject, **options)
        wiki = api.evaluate(loaded, PruningPlan(), "wiki", windows=args.windows, seq_len=args.window_len, **options)
    seconds = time.perf_counter() - started
    ids = torch.randint(100, 1000, (4, args.window_len))
    with torch.no_grad():
        loaded.hidden_states(ids, torch.ones_like(ids))
        timed = time.perf_counter()
        loaded.hidden_states(ids, torch.ones_like(ids))
        throughput = ids.numel() / (time.perf_counter() - timed)
    acc, se = letter.metrics["acc"], letter.stderr["acc"]
    verdict = "above chance" if acc - 0.25 > 2 * se else "at chance (within 2 SE of 25 %)"
    return (
        f"| {name} | {loaded.info.params_total / 1e6:,.0f}M | {loaded.dtype_name} | {100 * acc:.1f} ± {100 * se:.1f} ({verdict}) "
        f"| {100 * cloze.metrics['acc']:.1f} ± {100 * cloze.stderr['acc']:.1f} / {100 * cloze.metrics['acc_norm']:.1f} "
        f"| {letter.n} | {wiki.metrics['perplexity']:.2f} ± {wiki.stderr['perplexity']:.2f} | {seconds:.1f} | {throughput:,.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(EMBEDDED_MODELS))
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--per-subject", type=int, default=2)
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--window-len", type=int, default=128)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; MMLU {args.per_subject} per subject, 0-shot; "
          f"wiki {args.windows} x {args.window_len} tokens; ± = 1 standard error")
    print("| model | params | dtype | MMLU letter acc % (n) | cloze acc / acc_norm % | n | wiki perplexity | seconds (all, unpruned) | forward tokens/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        print(card(name, args), flush=True)


if __name__ == "__main__":
    main()
