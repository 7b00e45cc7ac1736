"""Benchmark: bf16 against fp32 on the same machine, side by side in one process.

For each model, both dtypes are loaded and measured alternately (which goes first alternates between
repeats, so machine noise hits both alike; best of ``--repeats``):

- **cold**: MMLU letter 0-shot (``--per-subject`` questions from each of the 57 subjects) plus
  ``--windows`` x ``--window-len`` Wikipedia windows, result cache bypassed, empty block-boundary store;
- **agreement**: the share of MMLU questions with the same prediction in both dtypes, and the relative
  difference of the perplexities;
- **toggle loop**: from the store that cold evaluation filled (the unpruned baseline, as in the app), prune
  one attention sublayer in the last quarter of the model, then one early block: seconds to the first
  provisional MMLU estimate and to the final result (MMLU + wiki);
- **physical limit**: the cold evaluation's matrix-multiply FLOPs (blocks on every token, attention scores,
  the output head where something is scored) over its seconds, as a share of this machine's measured
  throughput for an ``[tokens x d] @ [d x intermediate]`` product in that dtype;
- **lm-eval**: lm-evaluation-harness's HFLM on the same questions and windows in the same dtype, once
  (``--no-lm-eval`` skips it).

Run: ``.venv/bin/python bench/dtype_speed.py [--models smollm2,qwen2.5-coder-1.5b] [--repeats 2] [--device cuda]``
(``make models`` installs the Qwen parts). Prints one block per model.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402
from lm_eval_speed import evaluate_both, fresh_store, machine  # noqa: E402

from pruneviz import api  # noqa: E402
from pruneviz.core.loading import load_model  # noqa: E402
from pruneviz.core.plan import PruningPlan  # noqa: E402
from pruneviz.engine.hidden_store import HiddenStateStore  # noqa: E402
from pruneviz.engine.incremental import using_store  # noqa: E402
from pruneviz.evaluation.mmlu import mmlu_questions, mmlu_requests  # noqa: E402
from pruneviz.evaluation.results import Z_95  # noqa: E402

DTYPES = ("float32", "bfloat16")


@dataclass
class Toggle:
    """One re-evaluation after a toggle: seconds to the first provisional MMLU estimate and to the end."""

    first: float
    final: float


@dataclass
class Measured:
    """Everything measured for one model in one dtype."""

    cold: list[float] = field(default_factory=list)
    runs: list = field(default_factory=list)
    late: list[Toggle] = field(default_factory=list)
    early: list[Toggle] = field(default_factory=list)
    lm_eval: float | None = None
    gflops: float = 0.0


def matmul_gflops(dtype: torch.dtype, device: torch.device, m: int, k: int, n: int, repeats: int = 5) -> float:
    """Best-of-``repeats`` throughput of an ``[m, k] @ [k, n]`` product in ``dtype`` on ``device`` (GFLOP/s, 2mkn FLOPs)."""
    a, b = torch.randn(m, k).to(device, dtype), torch.randn(k, n).to(device, dtype)
    a @ b  # warm-up: oneDNN (or cuBLAS) picks its kernel on the first call
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * m * k * n / best / 1e9


def cold_flops(loaded, args) -> float:
    """Matrix-multiply FLOPs of the cold evaluation: 2 x block parameters per token, 2 T² d per block and
    sequence for the attention scores and values (causal), 2 d V per position the output head scores."""
    _, scored = mmlu_questions("letter", "mmlu", None, 0, args.per_subject, "all")
    lengths = [len(r.tokens) for r in mmlu_requests(loaded.tokenizer, scored.iloc[:0], scored, "letter")]
    lengths += [args.window_len] * args.windows
    info = loaded.info
    per_token = 2 * info.n_blocks * (info.params_attn + info.params_mlp)
    attention = sum(2 * info.n_blocks * info.hidden_size * t * t for t in lengths)
    head_positions = len(scored) + args.windows * (args.window_len - 1)
    return per_token * sum(lengths) + attention + 2 * info.hidden_size * info.vocab_size * head_positions


def timed_toggle(loaded, plan: PruningPlan, store: HiddenStateStore, args) -> Toggle:
    """Re-evaluate MMLU then wiki under ``plan`` with ``store``; when the first provisional estimate arrived, and the end."""
    first: list[float] = []
    with using_store(store):
        started = time.perf_counter()
        api.evaluate(loaded, plan, "mmlu", fmt="letter", per_subject=args.per_subject, use_cache=False, compare=False,
                     partial=lambda _: first or first.append(time.perf_counter() - started))
        api.evaluate(loaded, plan, "wiki", windows=args.windows, seq_len=args.window_len, use_cache=False)
        final = time.perf_counter() - started
    return Toggle(first[0] if first else final, final)


def measure(models: dict, args) -> dict[str, Measured]:
    """Alternate the dtypes over ``repeats`` rounds of cold evaluation and toggles; then lm-eval once each."""
    measured = {dtype: Measured() for dtype in models}
    for repeat in range(args.repeats):
        for dtype in DTYPES if repeat % 2 == 0 else DTYPES[::-1]:
            loaded, store = models[dtype], fresh_store()
            run = evaluate_both(loaded, PruningPlan(), "pruneviz", args, store)
            measured[dtype].cold.append(run.seconds)
            measured[dtype].runs.append(run)
            measured[dtype].late.append(timed_toggle(loaded, args.late, store, args))
            measured[dtype].early.append(timed_toggle(loaded, args.early, store, args))
    if not args.no_lm_eval:
        for dtype, loaded in models.items():
            measured[dtype].lm_eval = evaluate_both(loaded, PruningPlan(), "lm-eval", args).seconds
    return measured


def report(name: str, models: dict, measured: dict[str, Measured], args) -> None:
    reference = models["float32"]
    info = reference.info
    tokens = 16 * 128  # a typical packed batch of the cold evaluation: rows x tokens
    flops = cold_flops(reference, args)
    print(f"\n## {name}: {info.n_blocks} blocks, d {info.hidden_size}, {info.params_total / 1e6:,.0f}M parameters")
    print(f"machine: {machine(reference)}")
    print(f"cold = MMLU letter 0-shot, {measured['float32'].runs[0].mmlu.n} questions + wiki {args.windows} x {args.window_len}; "
          f"{flops / 1e12:.2f} TFLOP of matrix products; best of {args.repeats}")
    print(f"{'dtype':<10}{'cold s':>8}{'all runs':>16}{'MMLU acc ± 95% CI':>20}{'ppl':>8}{'GFLOP/s':>9}{'matmul peak':>12}"
          f"{'share':>7}{'lm-eval s':>10}{'lm-eval/ours':>13}")
    for dtype, m in measured.items():
        best = min(m.cold)
        run = m.runs[0]
        m.gflops = matmul_gflops(models[dtype].dtype, models[dtype].device, tokens, info.hidden_size, info.intermediate_size)
        achieved = flops / best / 1e9
        acc, se = run.mmlu.metrics["acc"], run.mmlu.stderr["acc"]
        lm_eval = f"{m.lm_eval:>10.2f}{m.lm_eval / best:>12.2f}x" if m.lm_eval else f"{'-':>10}{'-':>13}"
        print(f"{dtype:<10}{best:>8.2f}{' '.join(f'{t:.1f}' for t in m.cold):>16}{f'{acc:.3f} ± {Z_95 * se:.3f}':>20}"
              f"{run.wiki.metrics['perplexity']:>8.3f}{achieved:>9.0f}{m.gflops:>12.0f}{achieved / m.gflops:>7.0%}{lm_eval}")
    fp32, bf16 = measured["float32"], measured["bfloat16"]
    same = (fp32.runs[0].mmlu.items["pred"].to_numpy() == bf16.runs[0].mmlu.items["pred"].to_numpy())
    ppl = [m.runs[0].wiki.metrics["perplexity"] for m in (fp32, bf16)]
    print(f"bf16 / fp32: cold {min(fp32.cold) / min(bf16.cold):.2f}x faster; same MMLU prediction on {same.sum()}/{len(same)} "
          f"({same.mean():.1%}); perplexity {ppl[1]:.4f} vs {ppl[0]:.4f} ({(ppl[1] / ppl[0] - 1):+.2%}); "
          f"matmul peak {bf16.gflops / fp32.gflops:.2f}x")
    print(f"toggle loop from the cached unpruned baseline (best of {args.repeats}), s: first MMLU estimate / final (MMLU + wiki)")
    for dtype, m in measured.items():
        late = (min(t.first for t in m.late), min(t.final for t in m.late))
        early = (min(t.first for t in m.early), min(t.final for t in m.early))
        print(f"  {dtype:<9} late {str(args.late):<8} {late[0]:6.2f} / {late[1]:6.2f}    early block {str(args.early):<3} "
              f"{early[0]:6.2f} / {early[1]:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2,qwen2.5-coder-1.5b", help="comma list of model specs")
    parser.add_argument("--device", default="cpu", help="cpu (the machine's CPU), cuda, cuda:N or auto")
    parser.add_argument("--per-subject", type=int, default=1, help="MMLU questions per subject (57 subjects)")
    parser.add_argument("--windows", type=int, default=8, help="Wikipedia windows")
    parser.add_argument("--window-len", type=int, default=128, help="tokens per window")
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds per dtype (best is reported)")
    parser.add_argument("--no-lm-eval", action="store_true", help="skip lm-eval's HFLM")
    args = parser.parse_args()
    # what evaluate_both reads
    args.task, args.format, args.shots, args.lm_eval_batch_size, args.no_logits_cache = "mmlu", "letter", 0, 16, False
    for name in args.models.split(","):
        models = {dtype: load_model(name, device=args.device, dtype=dtype) for dtype in DTYPES}
        n_blocks = models["float32"].n_blocks
        # an attention sublayer in the last quarter, and an early block
        args.late = PruningPlan.parse(f"{n_blocks - n_blocks // 8}.attn", n_blocks)
        args.early = PruningPlan.parse("2", n_blocks)
        report(name, models, measure(models, args), args)
        del models
    print(f"\nload average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
