"""Does generation break before classification? The same depth-pruning plans on MMLU, HumanEval and arithmetic.

Issue #16: Minitron-style depth pruning (arXiv 2602.01997) keeps MMLU long after generation (GSM8K, HumanEval,
arithmetic) has broken. This script evaluates the plans of docs/FINDINGS.md (attention sublayers ranked by cosine
distance on Wikipedia, exactly as ``bench/findings.py`` ranks them, plus MLP and whole blocks at K = 2) on

* MMLU: the 171 held-out questions of FINDINGS (the same call as ``bench/findings.py``, so the results come from
  its cache when the model fingerprint matches);
* HumanEval pass@1 and arithmetic exact_match, through :func:`pruneviz.evaluation.run.evaluate` (greedy decoding
  under the plan; the first N items, the same for every plan).

Every plan is compared with the unpruned model on the same items (paired:
:func:`pruneviz.evaluation.statistics.paired_difference`); a change is called only beyond 2 standard errors.
Relative retention (pruned / unpruned, with a paired delta-method SE) makes tasks comparable.

The section is written into docs/FINDINGS.md between ``<!-- generative:start -->`` and ``<!-- generative:end -->``
(inserted before "## Earlier version" if absent), with one summary bullet in a second marked block at the end of
"## Summary"; the rest of the file is left byte for byte. Every evaluation is cached by the library (generations per
batch), so the script can be stopped and rerun: it resumes.

Run: ``HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python bench/generation_findings.py --humaneval 40 --arithmetic 150``.
``--quick`` checks the script on smollm2 with a few items and writes to a temporary copy of FINDINGS.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402

from pruneviz.core.errors import Cancelled  # noqa: E402
from pruneviz.core.loading import load_model  # noqa: E402
from pruneviz.core.plan import PruningPlan  # noqa: E402
from pruneviz.data.generative import generative_items  # noqa: E402
from pruneviz.evaluation.results import Z_95, proportion_interval  # noqa: E402
from pruneviz.evaluation.run import evaluate  # noqa: E402
from pruneviz.evaluation.statistics import ITEM_COLUMNS, paired_difference, with_ci  # noqa: E402
from pruneviz.studies.curves import Ranking  # noqa: E402

START, END = "<!-- generative:start -->", "<!-- generative:end -->"
SUMMARY_START, SUMMARY_END = "<!-- generative-summary:start -->", "<!-- generative-summary:end -->"
TASKS = ("mmlu", "humaneval", "arithmetic")
METRIC = {"mmlu": "acc", "humaneval": "pass@1", "arithmetic": "exact_match"}
LABEL = {"mmlu": "MMLU acc", "humaneval": "HumanEval pass@1", "arithmetic": "Arithmetic exact match"}
MMLU_CHANCE = 0.25


def settings(quick: bool) -> dict:
    if quick:
        return dict(model="smollm2", mmlu="mmlu:STEM", mmlu_options={"fmt": "letter", "per_subject": 2, "half": "test"},
                    calibration={"samples": 3, "seq_len": 48}, attn_ks=[1, 2], mlp_ks=[1], block_ks=[1])
    return dict(
        model="qwen2.5-coder-1.5b",
        mmlu="mmlu",
        # bench/findings.py's Run.mmlu_options: the test half of the first 6 questions per subject (171 questions)
        mmlu_options={"fmt": "letter", "per_subject": 6, "half": "test"},
        # bench/findings.py's cosine Ranking: 8 documents x 128 tokens of the Wikipedia calibration half
        calibration={"samples": 8, "seq_len": 128},
        attn_ks=[2, 4, 8], mlp_ks=[2], block_ks=[2],
    )


@dataclass
class PlanSpec:
    name: str          # "unpruned", "attn K=4"
    scheme: str        # "none", "attn", "mlp", "block"
    k: int
    plan: PruningPlan
    removed: str


@dataclass
class Run:
    loaded: object
    s: dict
    n: dict                        # task -> items (None for MMLU: the settings fix them)
    stop_at: datetime.datetime | None
    timing_path: Path
    results: dict = field(default_factory=dict)   # (plan name, task) -> EvaluationResult
    cut: dict = field(default_factory=dict)       # (plan name, task) -> why not computed
    seconds: dict = field(default_factory=dict)   # (plan name, task) -> seconds as first computed

    def key(self, spec: PlanSpec, task: str) -> str:
        return f"{self.loaded.fingerprint}|{spec.plan}|{task}|{self.n.get(task)}"

    def past_stop(self) -> bool:
        return self.stop_at is not None and datetime.datetime.now(datetime.timezone.utc) >= self.stop_at

    def evaluate(self, spec: PlanSpec, task: str):
        key = (spec.name, task)
        if key in self.results or key in self.cut:
            return self.results.get(key)
        timing = read_json(self.timing_path)
        done_before = self.key(spec, task) in timing
        if self.past_stop() and not done_before:
            self.cut[key] = "no time left"
            print(f"  {task:10s} {spec.name}: skipped (past --stop-at)", flush=True)
            return None
        started = time.perf_counter()
        marks = [started]

        def progress(done: int, total: int) -> None:
            now = time.perf_counter()
            print(f"    {task} {spec.name}: {done}/{total} items, batch {now - marks[-1]:.0f} s, "
                  f"{now - started:.0f} s so far ({utc_now():%H:%M} UTC)", flush=True)
            marks.append(now)
            if self.past_stop() and done < total:
                raise Cancelled("past --stop-at")

        try:
            if task == "mmlu":
                result = evaluate(self.loaded, spec.plan, self.s["mmlu"], progress=progress, **self.s["mmlu_options"])
            else:
                result = evaluate(self.loaded, spec.plan, task, per_task=self.n[task], progress=progress)
        except Cancelled:
            self.cut[key] = "stopped at --stop-at (finished batches are checkpointed; a rerun resumes)"
            print(f"  {task:10s} {spec.name}: stopped at --stop-at", flush=True)
            return None
        elapsed = time.perf_counter() - started
        # the compute time as first computed: this call's, or (a cache hit never seen here, e.g. bench/findings.py's
        # MMLU) the time the stored result records
        timing = read_json(self.timing_path)
        name = self.key(spec, task)
        if not result.from_cache:
            timing[name] = max(float(timing.get(name, 0.0)), elapsed)
        elif name not in timing:
            timing[name] = float(result.seconds or 0.0)
        write_json(self.timing_path, timing)
        self.seconds[key] = timing[name]
        self.results[key] = result
        metric = METRIC[task]
        print(f"  {task:10s} {spec.name}: {metric} {result.metrics[metric]:.4f} n={result.n} {elapsed:.1f} s"
              f"{' (cache)' if result.from_cache else ''}", flush=True)
        if task != "mmlu":
            wrong = result.items.loc[result.items["correct"] < 1, "item"].tolist()
            print(f"    wrong: {', '.join(wrong) or 'none'}", flush=True)
        return result


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_json(path: Path, value: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value, indent=1))
    except OSError:
        pass


def plans(loaded, s: dict, calibration_ranking: Ranking) -> list[PlanSpec]:
    """Unpruned, then the FINDINGS plans: attention sublayers by cosine at each K, MLP and blocks at their K."""
    out = [PlanSpec("unpruned", "none", 0, PruningPlan(), "-")]
    for scheme, ks in (("attn", s["attn_ks"]), ("mlp", s["mlp_ks"]), ("block", s["block_ks"])):
        order = calibration_ranking.order(loaded, scheme)
        for k in sorted(ks):
            units = order[:k]
            out.append(PlanSpec(f"{scheme} K={k}", scheme, k, PruningPlan.of(units),
                                ", ".join(str(u) for u in units)))
    return out


# ---------------------------------------------------------------- statistics


def beyond(d: float, se: float) -> bool:
    """|d| > 2 SE (a nonzero d with SE 0, every item moving alike, is beyond)."""
    if math.isnan(d) or math.isnan(se):
        return False
    return abs(d) > 2 * se if se > 0 else d != 0


def verdict(d: float, se: float) -> str:
    if math.isnan(se):
        return ""
    if not beyond(d, se):
        return "within noise"
    return "**worse, beyond noise**" if d < 0 else "**better, beyond noise**"


def item_values(result, metric: str) -> np.ndarray:
    return result.items[ITEM_COLUMNS[metric]].to_numpy(dtype=float)


def retention(base, pruned, metric: str, floor: float = 0.0) -> tuple[float, float]:
    """(R, SE): R = (mean pruned − floor) / (mean unpruned − floor) on the same items, its SE by the delta method
    for a ratio of paired means: sd(y_i − R x_i) / (sqrt(n) · mean x), with x, y shifted by ``floor``."""
    if paired_difference(base, pruned, metric) is None:
        raise RuntimeError(f"{metric}: the two results did not score the same items")
    x, y = item_values(base, metric) - floor, item_values(pruned, metric) - floor
    if x.mean() <= 0:
        return float("nan"), float("nan")
    r = y.mean() / x.mean()
    return float(r), float((y - r * x).std(ddof=1) / (math.sqrt(len(x)) * x.mean()))


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def share(result, metric: str, unit: str = "") -> str:
    """A share of the result's n items in % with its 95 % CI: ``± half-width``, or Wilson's range where the normal
    interval would pass 0 or 100 % or have no width (:func:`pruneviz.evaluation.statistics.with_ci`)."""
    return with_ci(result.metrics[metric], result.stderr[metric], 100, 1, unit, result.n)


def ratio(r: float, r_se: float, n: int, unpruned: float) -> str:
    """A retention ± SE. At 0 (no item right under the plan) the delta-method SE is 0 and says nothing: the 95 %
    upper bound is given instead, Wilson's upper bound of the pruned share (0 of ``n``) over the ``unpruned`` share."""
    if r == 0:
        return f"0.00 (no item right; 95 % upper bound {proportion_interval(0.0, n)[1] / unpruned:.2f})"
    return f"{r:.2f} ± {r_se:.2f}"


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smollm2, a few items, written to a temporary file")
    parser.add_argument("--model", default=None)
    parser.add_argument("--humaneval", type=int, default=40, help="the first N HumanEval problems (every plan)")
    parser.add_argument("--arithmetic", type=int, default=150, help="the first N arithmetic items (every plan)")
    parser.add_argument("--attn-ks", default=None, help="comma list of K for the attention plans (default 2,4,8)")
    parser.add_argument("--order", default=None,
                        help="comma list of plan names in the order they are evaluated on the generative tasks, e.g. "
                             "'unpruned,attn K=8,attn K=4'; the rest follow (MMLU, then arithmetic, run first for all)")
    parser.add_argument("--schedule", default=None,
                        help="comma list of task@plan evaluated first, e.g. 'arithmetic@attn K=8,humaneval@attn K=8'; the "
                             "rest follow: arithmetic for every plan in --order, then HumanEval")
    parser.add_argument("--stop-at", default=None, help="HH:MM UTC: start no new evaluation after it, and stop a running "
                        "one at its next batch (checkpointed); the report says what was cut")
    parser.add_argument("--full-unpruned-humaneval", action="store_true",
                        help="after the plans, evaluate the unpruned model on all 164 HumanEval problems")
    parser.add_argument("--out", default=None, help="the FINDINGS file to write the section into")
    parser.add_argument("--note", default="", help="a sentence on the run's conditions, stated in the section's settings")
    parser.add_argument("--wall-minutes", type=float, default=None,
                        help="wall-clock minutes of the whole generation when it ran in pieces (stated in the report)")
    args = parser.parse_args()
    s = settings(args.quick)
    if args.model:
        s["model"] = args.model
    if args.attn_ks:
        s["attn_ks"] = [int(k) for k in args.attn_ks.split(",") if k]
    n = {"humaneval": args.humaneval, "arithmetic": args.arithmetic}
    if args.quick:
        n = {"humaneval": min(args.humaneval, 2), "arithmetic": min(args.arithmetic, 6)}
    out = Path(args.out) if args.out else None
    if out is None:
        if args.quick:
            out = Path(tempfile.mkdtemp(prefix="generation-findings-")) / "FINDINGS.md"
            shutil.copyfile(ROOT / "docs" / "FINDINGS.md", out)
        else:
            out = ROOT / "docs" / "FINDINGS.md"
    stop_at = None
    if args.stop_at:
        hour, minute = (int(x) for x in args.stop_at.split(":"))
        stop_at = utc_now().replace(hour=hour, minute=minute, second=0, microsecond=0)

    wall_start = time.perf_counter()
    loaded = load_model(s["model"], device="cpu", dtype="bfloat16")
    load_seconds = time.perf_counter() - wall_start
    print(f"loaded {s['model']} ({loaded.dtype_name}, {loaded.n_blocks} blocks, fingerprint {loaded.fingerprint}) "
          f"in {load_seconds:.0f} s", flush=True)
    timing_path = ROOT / "cache" / f"generation-findings-timing-{s['model']}{'-quick' if args.quick else ''}.json"
    run = Run(loaded, s, n, stop_at, timing_path)
    cosine = Ranking("cosine", "wiki", s["calibration"])
    started = time.perf_counter()
    specs = plans(loaded, s, cosine)
    print(f"cosine ranking: {time.perf_counter() - started:.1f} s; plans: " +
          "; ".join(f"{p.name} = {p.plan or '-'}" for p in specs), flush=True)

    # MMLU first for every plan (cached by bench/findings.py where the keys match), then arithmetic for every plan
    # (short answers: a few minutes a plan), then HumanEval plan by plan in --order (unpruned first)
    for spec in specs:
        run.evaluate(spec, "mmlu")
    order = [name.strip() for name in (args.order or "").split(",") if name.strip()]
    by_name = {spec.name: spec for spec in specs}
    unknown = [name for name in order if name not in by_name]
    if unknown:
        raise SystemExit(f"--order names unknown plans: {unknown}; known: {list(by_name)}")
    plan_order = [by_name["unpruned"]] + [by_name[name] for name in order if name != "unpruned"]
    plan_order += [spec for spec in specs if spec not in plan_order]
    schedule = []
    for entry in (args.schedule or "").split(","):
        if entry.strip():
            task, _, name = entry.strip().partition("@")
            if task not in ("arithmetic", "humaneval") or name not in by_name:
                raise SystemExit(f"--schedule entry '{entry}' is not task@plan (task arithmetic or humaneval; plans: {list(by_name)})")
            schedule.append((task, by_name[name]))
    schedule += [("arithmetic", spec) for spec in plan_order] + [("humaneval", spec) for spec in plan_order]
    for task, spec in schedule:
        run.evaluate(spec, task)
    full = None
    if args.full_unpruned_humaneval:
        full_run = Run(loaded, s, {"humaneval": None}, stop_at, timing_path)
        full = full_run.evaluate(PlanSpec("unpruned (all problems)", "none", 0, PruningPlan(), "-"), "humaneval")
    wall = time.perf_counter() - wall_start
    section, summary = report(run, specs, s, n, wall, args, full)
    write_section(out, section, summary)
    print(f"wrote the section into {out} after {wall / 60:.1f} min", flush=True)


# ---------------------------------------------------------------- report


def generation_stats(result) -> str:
    """Mean new tokens (± 95 % CI) and the share that hit the token limit."""
    tokens = result.items["new_tokens"].to_numpy(dtype=float)
    limit = float((result.items["finish"] == "length").mean())
    se = tokens.std(ddof=1) / math.sqrt(len(tokens)) if len(tokens) > 1 else float("nan")
    return f"{tokens.mean():.0f} ± {Z_95 * se:.0f} tokens, {pct(limit)} % at the limit"


def report(run: Run, specs: list[PlanSpec], s: dict, n: dict, wall: float, args, full) -> tuple[str, str]:
    loaded = run.loaded
    L = loaded.n_blocks
    base = {task: run.results.get(("unpruned", task)) for task in TASKS}
    rows, ret_rows = [], []
    stats = {}  # (plan name, task) -> dict(d, se, r, r_se)
    for spec in specs:
        for task in TASKS:
            result = run.results.get((spec.name, task))
            metric = METRIC[task]
            if result is None:
                why = run.cut.get((spec.name, task), "not computed")
                rows.append(f"| {spec.name} | {task_label(task)} | not computed ({why}) | | | | |")
                continue
            value = share(result, metric)
            if spec.name == "unpruned" or base[task] is None:
                extra = f" ({generation_stats(result)})" if task != "mmlu" else ""
                rows.append(f"| {spec.name} | {task_label(task)} | {value} | {result.n} | - | - | -{extra} |")
                continue
            pair = paired_difference(base[task], result, metric)
            if pair is None:
                raise RuntimeError(f"{spec.name} {task}: not the same items as the unpruned result")
            d, se = pair
            r, r_se = retention(base[task], result, metric)
            entry = dict(d=d, se=se, r=r, r_se=r_se, n=result.n,
                         r_text=ratio(r, r_se, result.n, base[task].metrics[metric]))
            if task == "mmlu":
                entry["rc"], entry["rc_se"] = retention(base[task], result, metric, MMLU_CHANCE)
            stats[(spec.name, task)] = entry
            m = result.metrics
            flips = (f"{pct(m['flips'])} % changed (lost {share(result, 'flips_lost')}, gained {share(result, 'flips_gained')})"
                     if "flips" in m else "not computed")
            if task != "mmlu":
                flips += f"; {generation_stats(result)}"
            rows.append(f"| {spec.name} | {task_label(task)} | {value} | {result.n} | {100 * d:+.1f} ± {100 * se:.1f} "
                        f"({verdict(d, se)}) | {entry['r_text']} | {flips} |")
    # retention side by side, and generation minus MMLU (independent items: combined SE)
    for spec in specs[1:]:
        cells = []
        mm = stats.get((spec.name, "mmlu"))
        for task in TASKS:
            e = stats.get((spec.name, task))
            cells.append("n/a" if e is None else e["r_text"])
        cells.insert(1, "n/a" if mm is None or math.isnan(mm["rc"]) else f"{mm['rc']:.2f} ± {mm['rc_se']:.2f}")
        for task in ("humaneval", "arithmetic"):
            e = stats.get((spec.name, task))
            if e is None or mm is None:
                cells.append("n/a")
                continue
            dr, dr_se = e["r"] - mm["rc"], math.hypot(e["r_se"], mm["rc_se"])
            call = "within noise" if not beyond(dr, dr_se) else ("**lower, beyond noise**" if dr < 0 else "**higher, beyond noise**")
            cells.append(f"{dr:+.2f} ± {dr_se:.2f} ({call})")
        ret_rows.append(f"| {spec.name} | {spec.removed} | " + " | ".join(cells) + " |")

    # the verdict
    gen_first, mmlu_drops = [], []
    for spec in specs[1:]:
        mm = stats.get((spec.name, "mmlu"))
        if mm is None:
            continue
        mmlu_down = mm["d"] < 0 and beyond(mm["d"], mm["se"])
        if mmlu_down:
            mmlu_drops.append(spec.name)
        for task in ("humaneval", "arithmetic"):
            e = stats.get((spec.name, task))
            if e is None:
                continue
            if e["d"] < 0 and beyond(e["d"], e["se"]) and not mmlu_down:
                gen_first.append((spec, task, e, mm))
    computed = [spec.name for spec in specs[1:] if all((spec.name, t) in stats for t in TASKS)]
    if gen_first:
        parts = [f"{spec.name} ({spec.removed}): {LABEL[task]} {100 * e['d']:+.1f} ± {100 * e['se']:.1f} pp "
                 f"(n = {e['n']}, retention {e['r_text']}) while MMLU moves {100 * mm['d']:+.1f} ± "
                 f"{100 * mm['se']:.1f} pp (n = {mm['n']}, within 2 SE; retention {mm['r']:.2f} ± {mm['r_se']:.2f})"
                 for spec, task, e, mm in gen_first]
        headline = ("**Yes, on these items: generation falls beyond noise at plans where MMLU accuracy has not moved "
                    "beyond noise**: " + "; ".join(parts) + ".")
    else:
        headline = ("**The data do not show it**: at no evaluated plan does HumanEval pass@1 or arithmetic exact match "
                    "fall beyond 2 SE of the paired difference while MMLU accuracy stays within noise (plans with all three "
                    f"tasks: {', '.join(computed) or 'none'}).")
    if mmlu_drops:
        headline += f" MMLU accuracy itself drops beyond 2 SE at: {', '.join(mmlu_drops)}."
    sharper = []
    for spec in specs[1:]:
        mm = stats.get((spec.name, "mmlu"))
        for task in ("humaneval", "arithmetic"):
            e = stats.get((spec.name, task))
            if e is None or mm is None:
                continue
            dr, dr_se = e["r"] - mm["rc"], math.hypot(e["r_se"], mm["rc_se"])
            if beyond(dr, dr_se):
                sharper.append(f"{spec.name}: {LABEL[task]} retention {e['r_text']} vs MMLU above chance "
                               f"{mm['rc']:.2f} ± {mm['rc_se']:.2f}, difference {dr:+.2f} ± {dr_se:.2f}")
    sharper_text = ("Relative retention of a generative task differs from MMLU's above-chance retention beyond 2 SE "
                    "(combined: the items differ) at: " + "; ".join(sharper) + "." if sharper else
                    "At no evaluated plan does a generative task's relative retention differ from MMLU's above-chance "
                    "retention by more than 2 combined SE.")

    # settings
    he, ar = base["humaneval"], base["arithmetic"]
    first = he if he is not None else ar
    fmt = first.settings.get("prompt_format", "?") if first is not None else "?"
    he_items = generative_items("humaneval", n["humaneval"])
    ar_items = generative_items("arithmetic", n["arithmetic"])
    compute = {}
    for spec in specs:
        for task in TASKS:
            if (spec.name, task) in run.seconds:
                compute[task] = compute.get(task, 0.0) + run.seconds[(spec.name, task)]
    compute_text = ", ".join(f"{task} {v / 60:.1f} min" + (" (by bench/findings.py)" if task == "mmlu" else "")
                             for task, v in compute.items())
    wall_text = (f"{args.wall_minutes:.0f} minutes of wall clock in all (the run went in pieces)" if args.wall_minutes
                 else f"{wall / 60:.1f} minutes of wall clock for this invocation")
    cut = sorted({f"{name}: {task} ({why})" for (name, task), why in run.cut.items()})
    cut_text = ("\n- **Not computed** (no time left): " + "; ".join(cut) + "." if cut else "")
    if args.note:
        cut_text += f"\n- **Conditions**: {args.note}"
    cmd = ("HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 nice -n 10 .venv/bin/python bench/generation_findings.py "
           f"--humaneval {n['humaneval']} --arithmetic {n['arithmetic']} --attn-ks {','.join(map(str, s['attn_ks']))}"
           + (" --full-unpruned-humaneval" if full is not None else "") + (" --quick" if args.quick else ""))
    full_text = ""
    if full is not None:
        full_text = (f"\n\nUnpruned on **all {full.n} HumanEval problems** (same prompts and decoding): pass@1 "
                     f"{pct(full.metrics['pass@1'])} % (95 % CI {' to '.join(pct(b) for b in full.confidence_interval('pass@1'))} %, "
                     f"Wilson's; SE {pct(full.stderr['pass@1'])} pp), {generation_stats(full)}.")
    base_he = f"{share(he, 'pass@1', ' %')} (n = {he.n})" if he else "not computed"
    base_ar = f"{share(ar, 'exact_match', ' %')} (n = {ar.n})" if ar else "not computed"
    base_mm = base["mmlu"]
    base_mm_text = f"{share(base_mm, 'acc', ' %')} (n = {base_mm.n})" if base_mm else "not computed"
    today = utc_now().strftime("%Y-%m-%d")
    section = f"""## Generation against classification: MMLU, HumanEval and arithmetic under the same plans

Generated by `bench/generation_findings.py` on {today} (issue #16; the claim tested is Minitron-style, arXiv
2602.01997: depth pruning keeps MMLU long after generation, e.g. GSM8K, HumanEval, arithmetic, has broken).
{s['model']} in **{loaded.dtype_name}** on this machine's CPU (`load_model(..., device="cpu", dtype="bfloat16")`,
{L} blocks; 2 cores, the conditions below). Compute as first computed: {compute_text}; {wall_text}. Reproduce:
`{cmd}` (cached per batch: a rerun resumes, and re-reads finished results in seconds).

- **Plans**: those of the pruning curves above: attention sublayers ranked by cosine distance on the Wikipedia calibration half
  ({s['calibration']['samples']} documents x {s['calibration']['seq_len']} tokens, the same ranking as
  `bench/findings.py`) at K = {', '.join(map(str, s['attn_ks']))}, and MLP sublayers K = {', '.join(map(str, s['mlp_ks']))}
  and whole blocks K = {', '.join(map(str, s['block_ks']))} by cosine. Each plan's MMLU result is the one in the pruning-curves table
  above (the same cached evaluation).
- **MMLU**: the same {base_mm.n if base_mm else '?'} held-out questions, letter format, 0-shot.
- **HumanEval**: the first **{len(he_items)}** of 164 problems (HumanEval/0-{len(he_items) - 1}), pass@1 with greedy
  decoding (one completion per problem), **{fmt}** prompt format (the tokenizer's chat template around "Complete the
  following Python function ...", the reply started with a code fence and the stub), stop at the closing fence or a
  new top-level statement, at most **{he_items[0].max_new_tokens} new tokens**; tests run in the sandbox.
- **Arithmetic**: the first **{len(ar_items)}** of the fixed-seed items (addition, subtraction and multiplication in
  turn, 2 to 5 digits), exact match of the last integer written, greedy, **{fmt}** prompt ("Calculate a op b. Reply
  with the number only."), at most **{ar_items[0].max_new_tokens} new tokens**, stop at a newline.
- **Statistics**: every plan scores the same items as the unpruned model; Δ is the paired per-item difference
  (`pruneviz.evaluation.statistics.paired_difference`) ± its SE, called a change only beyond **2 SE**. Retention =
  pruned / unpruned on the same items, ± SE by the delta method for a ratio of paired means; MMLU's also above chance
  ((acc − 25 %) / (acc₀ − 25 %)), since generation's floor is 0 and MMLU's is 25 %. ± after a value is a 95 % CI.
  "changed" = share of items whose answer differs from the unpruned model's (HumanEval: the code written), lost /
  gained = right to wrong / wrong to right (± 95 % CI).{cut_text}

Unpruned: MMLU {base_mm_text}; HumanEval pass@1 {base_he}; arithmetic {base_ar}.{full_text}

**Verdict.** {headline} {sharper_text}

| plan | task | value % ± 95 % CI | n | Δ pp vs unpruned (paired, ± SE) | retention ± SE | answers changed; generation length (mean ± 95 % CI) |
|---|---|---:|---:|---|---|---|
{chr(10).join(rows)}

Relative retention (pruned / unpruned; ± SE), and each generative task's retention minus MMLU's above-chance retention
(the comparison that does not credit MMLU with its 25 % floor; the items differ, so the SE is combined):

| plan | removed | MMLU | MMLU above chance | HumanEval | arithmetic | HumanEval − MMLU above chance | arithmetic − MMLU above chance |
|---|---|---|---|---|---|---|---|
{chr(10).join(ret_rows)}

Caveats: on {len(he_items)} HumanEval problems a pass@1 of 50 % has a 95 % CI of ±{pct(Z_95 * 0.5 / math.sqrt(max(len(he_items) - 1, 1)))} pp
(the paired Δ is tighter: the plans fail mostly the same problems), so only large breaks show beyond 2 SE; the first
problems are among HumanEval's easiest, so the unpruned rate is no estimate of the full set's. The KV-cached decoder
under a plan is tested against recomputing without a cache (`tests/real/test_generative_real.py`); this run did not
re-check it on these plans. Continuations are cached per batch by prompts, model and plan, not by how the batch was
prefilled: those computed before each prompt was prefilled alone on the CPU (padded batches) are re-read as they
are (in bf16 the two ways can part at a near tie). The plans were ranked for Wikipedia, not for any of
these tasks. This section is written by `bench/generation_findings.py` between its markers; `bench/findings.py`
regenerates the rest of the file (and drops this section: rerun this script afterwards, it re-reads its cache).
"""
    summary_bits = [f"{LABEL[task]} at {spec.name} {100 * e['d']:+.1f} ± {100 * e['se']:.1f} pp (n = {e['n']}; MMLU "
                    f"{100 * mm['d']:+.1f} ± {100 * mm['se']:.1f} pp, n = {mm['n']})" for spec, task, e, mm in gen_first]
    if summary_bits:
        summary_bits[0] = "generation falls beyond 2 SE (paired) where MMLU accuracy stays within noise: " + summary_bits[0]
    summary = ("- **Generation vs classification** (issue #16, same plans, paired; see \"Generation against "
               "classification\" below): " + (("; ".join(summary_bits) + ".") if summary_bits else
                                              "no evaluated plan breaks HumanEval or arithmetic beyond 2 SE while MMLU holds "
                                              f"(HumanEval n = {len(he_items)}, arithmetic n = {len(ar_items)}, MMLU n = "
                                              f"{base_mm.n if base_mm else '?'}).") + " " + sharper_text)
    return section, summary


def task_label(task: str) -> str:
    return {"mmlu": "MMLU", "humaneval": "HumanEval", "arithmetic": "arithmetic"}[task]


def write_section(path: Path, section: str, summary: str) -> None:
    """Replace (or insert) the marked section and the marked summary bullet; the rest of the file is left as it was."""
    text = path.read_text()
    block = f"{START}\n{section.rstrip()}\n{END}"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        anchor = "## Earlier version"
        if anchor not in text:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
        else:
            head, tail = text.split(anchor, 1)
            text = head + block + "\n\n" + anchor + tail
    bullet = f"{SUMMARY_START}\n{summary.rstrip()}\n{SUMMARY_END}"
    if SUMMARY_START in text and SUMMARY_END in text:
        head, rest = text.split(SUMMARY_START, 1)
        _, tail = rest.split(SUMMARY_END, 1)
        text = head + bullet + tail
    elif "## Summary" in text:
        head, tail = text.split("## Summary", 1)
        # at the end of the Summary section: before the next "## " heading
        cut = tail.find("\n## ")
        cut = len(tail) if cut < 0 else cut
        body = tail[:cut].rstrip("\n")
        text = head + "## Summary" + body + "\n\n" + bullet + "\n" + tail[cut:]
    path.write_text(text)


if __name__ == "__main__":
    main()
