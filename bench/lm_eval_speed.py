"""Benchmark: lm-eval's HFLM (through pruneviz's lm-eval backend) vs pruneviz's own evaluator, side by side.

Both evaluate the same MMLU questions (letter format, 0-shot, 2 questions per subject by default) and
the same Wikipedia windows in one process, alternating which goes first, best of ``--repeats`` runs
(result cache and per-batch checkpoints bypassed; pruneviz starts every cold run with an empty
block-boundary state store). Prints wall times and their ratio, whether the predictions agree (they
must be identical), and each method's peak memory above its start (CUDA: ``torch.cuda.max_memory_allocated``;
CPU: resident set size sampled every 2 ms). Then the toggle-to-result latency: re-evaluating after
pruning one late attention sublayer vs one early block, starting from an evaluation of the unpruned
model (lm-eval recomputes everything; pruneviz resumes from the stored block-boundary states).

For the letter format it also times, on the MMLU part, the recipe once named as the floor of a cold
evaluation: a plain batched forward pass (stock decoder over length-sorted, right-padded batches of
16 prompts) with the output head only at each prompt's answer position, and no packing or stored states.

Run: ``.venv/bin/python bench/lm_eval_speed.py [--subjects K|NAMES] [--per-subject N] [--repeats R]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import resource
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

from pruneviz import api  # noqa: E402
from pruneviz.core.gating import apply_plan  # noqa: E402
from pruneviz.core.loading import load_model  # noqa: E402
from pruneviz.core.plan import PruningPlan  # noqa: E402
from pruneviz.data.mmlu import SUBJECTS  # noqa: E402
from pruneviz.engine.hidden_store import HiddenStateStore, format_usage  # noqa: E402
from pruneviz.engine.incremental import budgets_from_environment, using_store  # noqa: E402
from pruneviz.engine.scoring import pad_right  # noqa: E402
from pruneviz.evaluation import lm_eval_backend  # noqa: E402
from pruneviz.evaluation.mmlu import mmlu_questions, mmlu_requests  # noqa: E402

BACKENDS = ("lm-eval", "pruneviz")
RSS_INTERVAL_S = 0.002


@dataclass
class Run:
    """One timed evaluation: its results (MMLU, wiki), wall seconds and peak memory (bytes above its start)."""

    mmlu: object
    wiki: object
    seconds: float
    peak_bytes: int


def _rss_bytes() -> int:
    """Current resident set size of this process (Linux ``/proc``)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def peak_memory(device: torch.device):
    """Yield a one-item list that holds, on exit, the peak memory above the start of the block (bytes).

    CUDA: the allocator's exact peak of allocated tensor memory. CPU: the resident set size sampled by a
    background thread (allocations shorter than the interval can be missed; memory freed by the
    allocator but not returned to the system counts as resident).
    """
    peak = [0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        yield peak
        torch.cuda.synchronize(device)
        peak[0] = torch.cuda.max_memory_allocated(device) - start
        return
    start, done = _rss_bytes(), threading.Event()
    highest = [start]

    def sample() -> None:
        while not done.wait(RSS_INTERVAL_S):
            highest[0] = max(highest[0], _rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join()
        peak[0] = max(highest[0], _rss_bytes()) - start


def fresh_store() -> HiddenStateStore:
    """An empty store of block-boundary states with the budgets the app and CLI get (``PRUNEVIZ_STATE_*_MB``,
    default 1 GiB GPU when there is one, 1 GiB CPU, 4 GiB disk): what a cold pruneviz session has."""
    budgets = budgets_from_environment()
    return HiddenStateStore(budgets["gpu"], budgets["cpu"], budgets["disk"])


def evaluate_both(loaded, plan: PruningPlan, backend: str, args, store: HiddenStateStore | None = None) -> Run:
    """The MMLU subset and the Wikipedia windows under ``plan`` with one backend, timed together.

    pruneviz uses ``store`` (default: a fresh, empty one, i.e. a cold evaluation).
    """
    with peak_memory(loaded.device) as peak, using_store(store or fresh_store()):
        started = time.perf_counter()
        if backend == "lm-eval":
            subset = args.task.partition(":")[2] or None
            mmlu = lm_eval_backend.evaluate_mmlu(loaded, plan, subset, args.format, args.shots, args.per_subject,
                                                 batch_size=args.lm_eval_batch_size, logits_cache=not args.no_logits_cache)
            wiki = lm_eval_backend.evaluate_perplexity(loaded, plan, "wiki", args.windows, args.window_len,
                                                       batch_size=args.lm_eval_batch_size)
        else:
            mmlu = api.evaluate(loaded, plan, args.task, fmt=args.format, shots=args.shots, per_subject=args.per_subject,
                                use_cache=False, compare=False)
            wiki = api.evaluate(loaded, plan, "wiki", windows=args.windows, seq_len=args.window_len, use_cache=False)
        if loaded.device.type == "cuda":
            torch.cuda.synchronize(loaded.device)
        seconds = time.perf_counter() - started
    return Run(mmlu, wiki, seconds, peak[0])


@dataclass
class PlainRun:
    """One timed plain batched forward over the MMLU letter prompts: predicted letters and wall seconds."""

    predictions: list[int]
    seconds: float


def plain_batched_forward(loaded, plan: PruningPlan, args, batch_size: int = 16) -> PlainRun:
    """The MMLU letter prompts through the stock decoder in length-sorted, right-padded batches of
    ``batch_size``, the output head applied at each prompt's last token only (the reference recipe)."""
    subset = args.task.partition(":")[2] or None
    started = time.perf_counter()
    exemplars, scored = mmlu_questions("letter", "mmlu", subset, args.shots, args.per_subject, "all")
    requests = mmlu_requests(loaded.tokenizer, exemplars, scored, "letter")
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i].tokens))
    predictions = [0] * len(requests)
    with torch.no_grad(), apply_plan(plan):
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            ids, mask = pad_right([requests[i].tokens for i in batch], loaded.tokenizer.pad_token_id)
            hidden = loaded.hidden_states(ids, mask)  # [B, T, d]
            last = (mask.sum(1) - 1).to(hidden.device)
            log_probs = torch.log_softmax(loaded.logits(hidden[torch.arange(len(batch), device=hidden.device), last]), dim=-1)
            letters = torch.tensor([requests[i].candidates[0] for i in batch], device=hidden.device)  # [B, 4]
            for i, choice in zip(batch, log_probs.gather(1, letters).argmax(1).tolist()):
                predictions[i] = choice
    if loaded.device.type == "cuda":
        torch.cuda.synchronize(loaded.device)
    return PlainRun(predictions, time.perf_counter() - started)


def side_by_side(loaded, plan: PruningPlan, args) -> tuple[dict[str, list[Run]], list[PlainRun]]:
    """``repeats`` runs of each backend, alternating which goes first so that machine noise hits both alike,
    and (letter format) as many plain batched forward passes over the MMLU prompts between them."""
    runs: dict[str, list[Run]] = {backend: [] for backend in BACKENDS}
    plain: list[PlainRun] = []
    for repeat in range(args.repeats):
        for backend in BACKENDS if repeat % 2 == 0 else BACKENDS[::-1]:
            runs[backend].append(evaluate_both(loaded, plan, backend, args))
            if args.format == "letter" and backend == BACKENDS[0]:
                plain.append(plain_batched_forward(loaded, plan, args))
    return runs, plain


def agreement(lm_eval_run: Run, pruneviz_run: Run) -> str:
    """A line saying whether both backends predicted the same MMLU answers and the same perplexity."""
    theirs, ours = lm_eval_run.mmlu.items, pruneviz_run.mmlu.items
    same = int((theirs["pred"].to_numpy() == ours["pred"].to_numpy()).sum())
    verdict = "IDENTICAL" if same == len(ours) else f"DIFFER in {len(ours) - same}"
    # letter format only: the 4-way cross-entropy of the gold letter
    loss = f"; max |delta loss| {(theirs['loss'] - ours['loss']).abs().max():.1e} nats" if "loss" in ours else ""
    ppl_theirs, ppl_ours = lm_eval_run.wiki.metrics["perplexity"], pruneviz_run.wiki.metrics["perplexity"]
    return (
        f"MMLU predictions: {same}/{len(ours)} equal ({verdict}); acc {lm_eval_run.mmlu.metrics['acc']:.4f} vs "
        f"{pruneviz_run.mmlu.metrics['acc']:.4f}{loss}; wiki perplexity {ppl_theirs:.5f} vs {ppl_ours:.5f} "
        f"(relative difference {abs(ppl_theirs / ppl_ours - 1):.1e})"
    )


def toggle_latency(loaded, late: PruningPlan, early: PruningPlan, args) -> tuple[dict[tuple[str, str], tuple[float, float, float]], str]:
    """Best-of-``repeats`` seconds ``(all, MMLU, wiki)`` to re-evaluate after one toggle from the unpruned model,
    keyed by ``(backend, plan)``, and what the state store held after its warm-up evaluation.

    Each pruneviz measurement starts from a fresh store warmed by one (untimed) evaluation of the unpruned
    model, as in the app after the first evaluation; lm-eval has no such state and recomputes everything.
    """
    best: dict[tuple[str, str], tuple[float, float, float]] = {}
    held = ""
    for repeat in range(args.repeats):
        for plan in (late, early) if repeat % 2 == 0 else (early, late):
            for backend in BACKENDS if repeat % 2 == 0 else BACKENDS[::-1]:
                store = fresh_store()
                if backend == "pruneviz":
                    evaluate_both(loaded, PruningPlan(), backend, args, store)
                    held = format_usage(store.usage())
                run = evaluate_both(loaded, plan, backend, args, store)
                times = (run.seconds, run.mmlu.seconds, run.wiki.seconds)
                previous = best.get((backend, str(plan)), (float("inf"),) * 3)
                best[backend, str(plan)] = tuple(min(a, b) for a, b in zip(times, previous))
    return best, held


def machine(loaded) -> str:
    """One line describing the hardware, threads and current load."""
    if loaded.device.type == "cuda":
        hardware = torch.cuda.get_device_name(loaded.device)
    else:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        hardware = f"{names[0] if names else platform.processor()} x {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{hardware}; {loaded.dtype}; torch {torch.__version__}; load average (1/5/15 min) {load}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32", help="float32 (the dtype of the numbers in docs/PERFORMANCE.md), bfloat16, float16 or auto")
    parser.add_argument("--subjects", default="all", help="number K (the first K subjects alphabetically), or a subject/category list")
    parser.add_argument("--per-subject", type=int, default=2, help="MMLU questions per subject")
    parser.add_argument("--format", default="letter", choices=["letter", "cloze"])
    parser.add_argument("--shots", type=int, default=0)
    parser.add_argument("--windows", type=int, default=8, help="Wikipedia windows")
    parser.add_argument("--window-len", type=int, default=256, help="tokens per window")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each method (best is reported)")
    parser.add_argument("--lm-eval-batch-size", type=int, default=16,
                        help="HFLM batch size (its default is 1: no padding, but one forward pass per request)")
    parser.add_argument("--no-logits-cache", action="store_true",
                        help="HFLM without its logits cache: one forward pass per MMLU letter, as lm-eval before February 2024 (PR #1425)")
    parser.add_argument("--no-toggle", action="store_true", help="skip the toggle-to-result latency")
    args = parser.parse_args()
    subset = ",".join(SUBJECTS[: int(args.subjects)]) if args.subjects.isdigit() else args.subjects
    args.task = "mmlu" if subset == "all" else f"mmlu:{subset}"

    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    print(f"machine: {machine(loaded)}")
    plan = PruningPlan()
    runs, plain = side_by_side(loaded, plan, args)
    first = {backend: runs[backend][0] for backend in BACKENDS}
    print(f"model {loaded.name} ({loaded.info.n_blocks} blocks) on {loaded.device}; MMLU {args.format} {args.shots}-shot, "
          f"{first['pruneviz'].mmlu.n} questions ({args.per_subject} per subject, subjects: {args.subjects}); "
          f"wiki {args.windows} windows x {args.window_len} tokens; best of {args.repeats}; lm-eval batch size "
          f"{args.lm_eval_batch_size}, logits cache {'off' if args.no_logits_cache else 'on'}")
    print(f"{'backend':<10}{'best s':>9}{'all runs s':>22}{'best MMLU s':>13}{'best wiki s':>13}{'peak MiB':>10}")
    best = {}
    for backend in BACKENDS:
        times = [r.seconds for r in runs[backend]]
        best[backend] = (min(times), min(r.mmlu.seconds for r in runs[backend]), min(r.wiki.seconds for r in runs[backend]))
        peak = max(r.peak_bytes for r in runs[backend]) / 2**20
        print(f"{backend:<10}{best[backend][0]:>9.2f}{' '.join(f'{t:.2f}' for t in times):>22}"
              f"{best[backend][1]:>13.2f}{best[backend][2]:>13.2f}{peak:>10.0f}")
    ratios = [theirs / ours for theirs, ours in zip(best["lm-eval"], best["pruneviz"])]
    print(f"speed ratio lm-eval / pruneviz: {ratios[0]:.2f}x in all (MMLU {ratios[1]:.2f}x, wiki {ratios[2]:.2f}x)")
    print(agreement(first["lm-eval"], first["pruneviz"]))
    if plain:
        plain_s = min(run.seconds for run in plain)
        same = sum(a == b for a, b in zip(plain[0].predictions, first["pruneviz"].mmlu.items["pred"]))
        print(f"plain batched forward, head at the answer only (MMLU): best {plain_s:.2f} s "
              f"({' '.join(f'{run.seconds:.2f}' for run in plain)}); lm-eval / plain {best['lm-eval'][1] / plain_s:.2f}x, "
              f"plain / pruneviz {plain_s / best['pruneviz'][1]:.2f}x; predictions {same}/{len(plain[0].predictions)} equal to pruneviz's")
    print(f"process peak RSS (ru_maxrss): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if not args.no_toggle:
        late = PruningPlan.parse(f"{loaded.n_blocks - 2}.attn", loaded.n_blocks)
        early = PruningPlan.parse("1", loaded.n_blocks)
        best_toggle, held = toggle_latency(loaded, late, early, args)
        print(f"state store after evaluating the unpruned model: {held}")
        print("toggle-to-result latency from the unpruned model (result cache bypassed, best of repeats), s: all (MMLU + wiki)")
        for backend in BACKENDS:
            late_s, early_s = best_toggle[backend, str(late)], best_toggle[backend, str(early)]
            print(f"  {backend:<9} prune {str(late):<8} {late_s[0]:6.2f} ({late_s[1]:.2f} + {late_s[2]:.2f})   "
                  f"prune block {str(early):<3} {early_s[0]:6.2f} ({early_s[1]:.2f} + {early_s[2]:.2f})")
        theirs, ours = best_toggle["lm-eval", str(late)], best_toggle["pruneviz", str(late)]
        early_ours = best_toggle["pruneviz", str(early)]
        print(f"late toggle, lm-eval / pruneviz: {theirs[0] / ours[0]:.1f}x in all (MMLU {theirs[1] / ours[1]:.1f}x, wiki "
              f"{theirs[2] / ours[2]:.1f}x; target >= 10x)")
        print(f"pruneviz early-block / late-attn toggle: {early_ours[0] / ours[0]:.1f}x in all (MMLU {early_ours[1] / ours[1]:.1f}x, "
              f"wiki {early_ours[2] / ours[2]:.1f}x; target >= 3x)")
        print(f"cold, lm-eval / pruneviz: {ratios[0]:.2f}x in all (MMLU {ratios[1]:.2f}x, wiki {ratios[2]:.2f}x; target >= 3x)")
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
