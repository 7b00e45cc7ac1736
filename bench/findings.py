"""Headline experiments of Siddiqui et al. (2024) on one model (default Qwen2.5-Coder-1.5B); writes docs/FINDINGS.md.

Every MMLU evaluation scores the same held-out questions (the odd-indexed ``test`` half of the first
``eval_per_subject`` questions of each subject), so any two plans are compared by the paired difference per
question (:func:`pruneviz.evaluation.statistics.paired_difference`); perplexity is compared by the paired
difference of per-window NLL on the same Wikipedia windows. A difference is called a change only beyond two
standard errors of that paired difference.

1. Greedy pruning curves (at a subset of K) for attention-only, MLP-only and whole-block pruning, ranked by
   cosine distance (static) and by leave-one-out loss-Shapley on Wikipedia (adaptive): how many attention
   sublayers go before MMLU accuracy drops beyond noise.
2. Static vs Shapley rankings: Spearman correlation with a Fisher-z confidence interval.
3. A trade-off: prune K attention sublayers ranked by cosine, by loss-Shapley on Wikipedia and by loss-Shapley
   on MMLU (held out: computed on the even-indexed ``fit`` questions, which the evaluation never scores), and
   evaluate both tasks.

Run (results are cached on disk; a rerun after an edit of the report code only re-reads them):
``nice -n 19 .venv/bin/python bench/findings.py [--model qwen2.5-coder-1.5b]``. ``--quick`` uses tiny
settings to check the script. Set ``PRUNEVIZ_STATE_CPU_MB`` / ``PRUNEVIZ_STATE_DISK_MB`` high enough to hold
the unpruned block-boundary states of the MMLU questions (a few GiB) so that late plans reuse the prefix.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd  # noqa: E402

from pruneviz.core.loading import load_model  # noqa: E402
from pruneviz.core.plan import PruningPlan, units_of  # noqa: E402
from pruneviz.evaluation.results import Z_95  # noqa: E402
from pruneviz.evaluation.run import evaluate  # noqa: E402
from pruneviz.evaluation.statistics import paired_difference  # noqa: E402
from pruneviz.influence.objectives import objective_data  # noqa: E402
from pruneviz.influence.ranking import ranked_units  # noqa: E402
from pruneviz.influence.shapley import adaptive_influence  # noqa: E402
from pruneviz.studies.curves import Ranking  # noqa: E402

PAPER = "Siddiqui et al. 2024, arXiv 2407.16286"


def settings(quick: bool) -> dict:
    if quick:
        return dict(mmlu="mmlu:STEM", eval_per_subject=2, fit_per_subject=2, windows=2, window_len=48, samples=3, shapley_samples=3,
                    seq_len=48, mlp_block_mmlu_ks=[1], attn_ks=[1, 2], attn_shapley_ks=[2], mlp_ks=[1], mlp_shapley_ks=[1], block_ks=[1],
                    tradeoff_ks=[2], mmlu_shapley_from_block=0)
    return dict(
        mmlu="mmlu",
        eval_per_subject=6,   # the test half scores 3 questions per subject: 171 questions
        fit_per_subject=2,    # the fit half of 2 per subject: 57 questions, none of them scored by the evaluation
        windows=16, window_len=128,   # Wikipedia evaluation half
        samples=8, seq_len=128,       # Wikipedia calibration half (static metrics and loss-Shapley)
        # the attention curve by cosine stops one point after the first K whose MMLU drop is beyond 2 SE
        shapley_samples=4,            # loss-Shapley LOO: the first 4 of those documents (cost)
        # (K = 10 and 12 were planned; on the shared CPU the run had no time left for them)
        attn_ks=[2, 4, 6, 8], attn_shapley_ks=[4, 12],
        mlp_ks=[1, 2, 4], mlp_shapley_ks=[2],   # Wikipedia only
        block_ks=[1, 2, 4],
        mlp_block_mmlu_ks=[2],                   # MLP and block points also scored on MMLU
        tradeoff_ks=[8],
        # MMLU-adaptive LOO only for the attention sublayers of the second half of the blocks (the first half's
        # subnetworks recompute most of the model: 3x the cost); the others are ranked last
        mmlu_shapley_from_block=None,  # None: the second half, n_blocks // 2
    )


@dataclass
class Run:
    """The model, the tasks, and every evaluation made (keyed by plan and task), with a log of the time spent."""

    loaded: object
    s: dict
    results: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)

    @property
    def mmlu_options(self) -> dict:
        return {"fmt": "letter", "per_subject": self.s["eval_per_subject"], "half": "test"}

    @property
    def wiki_options(self) -> dict:
        return {"windows": self.s["windows"], "seq_len": self.s["window_len"]}

    def evaluate(self, plan: PruningPlan, task: str):
        key = (str(plan), task)
        if key not in self.results:
            started = time.perf_counter()
            if task == "wiki":
                result = evaluate(self.loaded, plan, "wiki", **self.wiki_options)
            else:
                result = evaluate(self.loaded, plan, self.s["mmlu"], **self.mmlu_options)
            elapsed = time.perf_counter() - started
            self.seconds[key] = elapsed
            self.results[key] = result
            print(f"  {task:5s} {str(plan) or '(unpruned)'}: {result.metrics.get('acc', result.metrics.get('perplexity')):.4f} "
                  f"n={result.n} {elapsed:.1f} s{' (cache)' if result.from_cache else ''}", flush=True)
        return self.results[key]

    def both(self, plan: PruningPlan) -> tuple:
        return self.evaluate(plan, "wiki"), self.evaluate(plan, "mmlu")


def paired(base, other, metric: str) -> tuple[float, float]:
    """(difference other − base, its paired standard error); the NLL for perplexity."""
    pair = paired_difference(base, other, "nll" if metric == "perplexity" else metric)
    if pair is None:
        raise RuntimeError(f"{metric}: the two results did not score the same items")
    return pair


def beyond(d: float, se: float) -> bool:
    return se > 0 and abs(d) >= 2 * se if not math.isnan(se) else False


COSTS = {}  # adaptive results by dataset, for the report's cost lines


def attn_shapley(loaded, data: str, samples: int, seq_len: int, half: str, start: int):
    """Leave-one-out loss-Shapley of the attention sublayers of blocks ``start``.. on ``data`` (Wikipedia calibration
    documents, or the gold-letter cross-entropy on an MMLU half).

    LOO values do not depend on which other units are players, so a game of the attention sublayers alone gives the
    same attention values as the whole sublayer game at half its cost (the sublayer game reuses these subnetworks).
    Every subnetwork's value is cached, so an interrupted run resumes. Units left out of the game (blocks before
    ``start``, for cost) are ranked last, in block order.
    """
    objective = objective_data(loaded, data, samples, seq_len, half)
    units = [u for u in units_of(loaded.n_blocks, "attn") if u.layer >= start]
    result = adaptive_influence(loaded, objective, units, objective="loss", estimator="loo", use_cache=True)
    COSTS[data] = result
    order = ranked_units(result.table, "loss_shapley", "attn")
    print(f"  {data} LOO: {result.subnetworks} subnetworks, {result.count.computed:,} block forwards "
          f"(naive {result.count.naive:,}), {result.seconds:.0f} s", flush=True)
    return order + [u for u in units_of(loaded.n_blocks, "attn") if u.layer < start], result


def spearman(a: list, b: list) -> tuple[float, float, float, int]:
    """Spearman rho of two orders of the same units and its 95 % CI (Fisher z, se = sqrt(1.06 / (n − 3)))."""
    ra = pd.Series({str(u): i for i, u in enumerate(a)})
    rb = pd.Series({str(u): i for i, u in enumerate(b)})
    frame = pd.DataFrame({"a": ra, "b": rb}).dropna()
    n = len(frame)
    rho = float(frame["a"].corr(frame["b"], method="spearman"))
    if n <= 3:
        return rho, float("nan"), float("nan"), n
    z, se = math.atanh(max(min(rho, 0.999999), -0.999999)), math.sqrt(1.06 / (n - 3))
    return rho, math.tanh(z - Z_95 * se), math.tanh(z + Z_95 * se), n


PHASES = ("attn-cosine", "shapley-wiki", "tradeoff-wiki", "mlp-block", "mlp-block-mmlu", "shapley-mmlu", "tradeoff-mmlu",
          "extra")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "docs" / "FINDINGS.md"))
    parser.add_argument("--skip", default="", help=f"comma list of phases to leave out ({', '.join(PHASES)}); the "
                        "report says what was not computed")
    parser.add_argument("--wall-minutes", type=float, default=None,
                        help="wall-clock minutes the whole generation took, when it ran in pieces (stated in the report)")
    args = parser.parse_args()
    skip = {name for name in args.skip.split(",") if name}
    s = settings(args.quick)
    s["wall_minutes"] = args.wall_minutes
    started = time.perf_counter()
    loaded = load_model(args.model)
    print(f"loaded {args.model} ({loaded.dtype_name}, {loaded.n_blocks} blocks) in {time.perf_counter() - started:.0f} s",
          flush=True)
    run = Run(loaded, s)
    phases = {}
    state = {"t": time.perf_counter()}

    def phase(name: str) -> None:
        now = time.perf_counter()
        phases[name] = now - state["t"]
        state["t"] = now
        print(f"[{name}: {phases[name]:.0f} s; total {now - started:.0f} s]", flush=True)

    unpruned = run.both(PruningPlan())
    phase("unpruned")
    calibration = {"samples": s["samples"], "seq_len": s["seq_len"]}
    cosine = Ranking("cosine", "wiki", calibration)
    shapley = Ranking("loss_shapley", "wiki", {"samples": s["shapley_samples"], "seq_len": s["seq_len"]})
    orders = {("cosine", scheme): cosine.order(loaded, scheme) for scheme in ("attn", "mlp", "block", "both")}
    phase("cosine ranking")
    curve_plan = {}  # (scheme, ranking, K) -> plan
    mmlu_result, fit_n = None, 0

    def curve(scheme: str, ranking: str, ks: list[int], stop_after_drop: bool = False, with_mmlu: bool = True) -> None:
        order = orders[(ranking, scheme)]
        dropped = False
        for k in sorted(ks):
            plan = PruningPlan.of(order[:k])
            curve_plan[(scheme, ranking, k)] = plan
            print(f"{scheme} {ranking} K={k}", flush=True)
            if not with_mmlu:  # Wikipedia only (a few thousand tokens; MMLU is the expensive task)
                run.evaluate(plan, "wiki")
                continue
            _, mmlu = run.both(plan)
            if stop_after_drop:
                if dropped:
                    return
                d, se = paired(unpruned[1], mmlu, "acc")
                dropped = d < 0 and beyond(d, se)

    if "shapley-wiki" not in skip:
        orders[("loss_shapley", "attn")], _ = attn_shapley(loaded, "wiki", s["shapley_samples"], s["seq_len"], "all", 0)
        phase("loss-Shapley ranking on Wikipedia (LOO, attention)")
    if "tradeoff-wiki" not in skip and ("loss_shapley", "attn") in orders:
        curve("attn", "cosine", s["tradeoff_ks"])
        curve("attn", "loss_shapley", s["tradeoff_ks"], with_mmlu="tradeoff-wiki-mmlu" not in skip)
        phase("attn K for the trade-off (cosine, loss-Shapley)")
    if "mlp-block" not in skip:
        curve("mlp", "cosine", s["mlp_ks"], with_mmlu=False)
        curve("block", "cosine", s["block_ks"], with_mmlu=False)
        phase("mlp and block curves on Wikipedia (cosine)")
    if "attn-cosine" not in skip:  # the headline: attention sublayers by cosine
        curve("attn", "cosine", s["attn_ks"], stop_after_drop=True)
        phase("attn curve (cosine)")
    if "mlp-block-mmlu" not in skip:
        curve("mlp", "cosine", s["mlp_block_mmlu_ks"])
        curve("block", "cosine", s["mlp_block_mmlu_ks"])
        phase("mlp and block on MMLU (cosine)")
    if "shapley-mmlu" not in skip:
        start = s["mmlu_shapley_from_block"]
        start = loaded.n_blocks // 2 if start is None else start
        s["mmlu_start"] = start
        order, mmlu_result = attn_shapley(loaded, s["mmlu"], s["fit_per_subject"], s["seq_len"], "fit", start)
        fit_n = len(objective_data(loaded, s["mmlu"], s["fit_per_subject"], s["seq_len"], "fit"))
        orders[("mmlu_shapley", "attn")] = order
        phase("loss-Shapley ranking on MMLU fit half (LOO, attention)")
    if "tradeoff-mmlu" not in skip and ("mmlu_shapley", "attn") in orders:
        curve("attn", "mmlu_shapley", s["tradeoff_ks"])
        phase("attn K for the trade-off (MMLU-adaptive)")
    if "extra" not in skip and ("loss_shapley", "attn") in orders:
        # the whole sublayer game (the attention subnetworks are read back from the cache): MLP order too
        for scheme in ("attn", "mlp", "both"):
            orders[("loss_shapley", scheme)] = shapley.order(loaded, scheme)
        curve("attn", "loss_shapley", sorted(set(s["attn_shapley_ks"]) | set(s["tradeoff_ks"])))
        curve("mlp", "loss_shapley", s["mlp_shapley_ks"])
        phase("extra points (loss-Shapley curves)")
    total = time.perf_counter() - started
    phases, total = first_run_timing(args.model, args.quick, phases, total)
    write_report(Path(args.out), args.model, loaded, s, run, unpruned, orders, curve_plan, mmlu_result, fit_n,
                 phases, total, skip)
    print(f"wrote {args.out} after {total / 60:.1f} min", flush=True)


def first_run_timing(model: str, quick: bool, phases: dict, total: float) -> tuple[dict, float]:
    """The time each phase took when it was computed: a rerun reads results from the cache in seconds, so the
    longest time seen per phase is kept in ``cache/findings-timing-<model>.json`` and reported."""
    path = ROOT / "cache" / f"findings-timing-{model}{'-quick' if quick else ''}.json"
    try:
        seen = json.loads(path.read_text())
    except (OSError, ValueError):
        seen = {}
    merged = {name: max(value, seen.get(name, 0.0)) for name, value in phases.items()}
    merged_total = max(total, seen.get("_total", 0.0), sum(merged.values()))
    try:
        path.write_text(json.dumps({**seen, **merged, "_total": merged_total}, indent=1))
    except OSError:
        pass
    return merged, merged_total


RANKING_NAMES = {
    "cosine": "cosine (static, Wikipedia)",
    "loss_shapley": "loss-Shapley LOO (adaptive, Wikipedia)",
    "mmlu_shapley": "loss-Shapley LOO (adaptive, MMLU fit half)",
}


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def curve_rows(run: Run, unpruned, curve_plan: dict) -> pd.DataFrame:
    base_wiki, base_mmlu = unpruned
    rows = [dict(scheme="none", ranking="-", K=0, plan="", wiki=base_wiki, mmlu=base_mmlu)]
    for (scheme, ranking, k), plan in curve_plan.items():
        rows.append(dict(scheme=scheme, ranking=ranking, K=k, plan=str(plan), wiki=run.results[(str(plan), "wiki")],
                         mmlu=run.results.get((str(plan), "mmlu"))))
    out = []
    for r in rows:
        wiki, mmlu = r["wiki"], r["mmlu"]
        nan = float("nan")
        row = dict(scheme=r["scheme"], ranking=r["ranking"], K=r["K"], plan=r["plan"],
                   ppl=wiki.metrics["perplexity"], nll=wiki.metrics["nll"], nll_se=wiki.stderr["nll"], wiki_n=wiki.n,
                   acc=nan, acc_se=nan, loss=nan, loss_se=nan, mmlu_n=0, flips=nan,
                   d_acc=nan, d_acc_se=nan, d_loss=nan, d_loss_se=nan)
        if mmlu is not None:
            row.update(acc=mmlu.metrics["acc"], acc_se=mmlu.stderr["acc"], loss=mmlu.metrics["loss"],
                       loss_se=mmlu.stderr["loss"], mmlu_n=mmlu.n, flips=mmlu.metrics.get("flips", 0.0))
        if r["K"]:
            row["d_nll"], row["d_nll_se"] = paired(base_wiki, wiki, "nll")
            if mmlu is not None:
                row["d_acc"], row["d_acc_se"] = paired(base_mmlu, mmlu, "acc")
                row["d_loss"], row["d_loss_se"] = paired(base_mmlu, mmlu, "loss")
        else:
            row.update(d_nll=0.0, d_nll_se=float("nan"), d_acc=0.0, d_acc_se=float("nan"), d_loss=0.0,
                       d_loss_se=float("nan"))
        out.append(row)
    return pd.DataFrame(out)


def verdict(d: float, se: float, lower_is_better: bool = False) -> str:
    if math.isnan(se):
        return ""
    if not beyond(d, se):
        return "within noise"
    worse = d > 0 if lower_is_better else d < 0
    return "**worse**" if worse else "**better**"


def removable(table: pd.DataFrame, scheme: str, ranking: str) -> tuple[int, int | None, pd.Series | None]:
    """(largest evaluated K with every evaluated K' <= K within noise on MMLU acc, first K whose acc drop is beyond
    noise (None: none evaluated), the row at the former K)."""
    rows = table[(table["scheme"] == scheme) & (table["ranking"] == ranking) & (table["mmlu_n"] > 0)].sort_values("K")
    last_ok, first_bad, at = 0, None, None
    for r in rows.itertuples():
        if r.d_acc < 0 and beyond(r.d_acc, r.d_acc_se):
            first_bad = r.K
            break
        last_ok, at = r.K, r
    return last_ok, first_bad, at


def curve_table(table: pd.DataFrame) -> str:
    lines = ["| scheme | ranking | K | removed (in ranking order) | wiki ppl | Δ NLL vs unpruned (paired) | MMLU acc ± 95 % CI | Δ acc pp (paired) | MMLU loss Δ (paired) | answers changed |",
             "|---|---|---:|---|---:|---|---:|---|---|---:|"]
    for r in table.itertuples():
        if r.K == 0:
            lines.append(f"| none | - | 0 | - | {r.ppl:.2f} | - | {pct(r.acc)} ± {pct(Z_95 * r.acc_se)} | - | - | - |")
            continue
        wiki = (f"| {r.scheme} | {r.ranking} | {r.K} | {r.removed} | {r.ppl:.2f} | {r.d_nll:+.3f} ± {r.d_nll_se:.3f} "
                f"({verdict(r.d_nll, r.d_nll_se, True)}) |")
        if math.isnan(r.acc):
            lines.append(wiki + " not scored | | | |")
            continue
        lines.append(
            wiki + f" {pct(r.acc)} ± {pct(Z_95 * r.acc_se)} | "
            f"{100 * r.d_acc:+.1f} ± {100 * r.d_acc_se:.1f} ({verdict(r.d_acc, r.d_acc_se)}) | "
            f"{r.d_loss:+.3f} ± {r.d_loss_se:.3f} ({verdict(r.d_loss, r.d_loss_se, True)}) | {pct(r.flips)} % |"
        )
    return "\n".join(lines)


def write_report(path, model, loaded, s, run, unpruned, orders, curve_plan, mmlu_result, fit_n, phases, seconds,
                 skip=frozenset()) -> None:
    table = curve_rows(run, unpruned, curve_plan)
    # the units each point removes beyond the previous evaluated point of its curve
    removed = []
    for r in table.itertuples():
        if r.K == 0:
            removed.append("")
            continue
        order = orders[(r.ranking, r.scheme)]
        previous = table[(table.scheme == r.scheme) & (table.ranking == r.ranking) & (table.K < r.K)]["K"]
        start = int(previous.max()) if len(previous) else 0
        removed.append(("+ " if start else "") + ", ".join(str(u) for u in order[start:r.K]))
    table["removed"] = removed
    table = table.sort_values(["scheme", "ranking", "K"], key=lambda c: c.map({"none": 0, "attn": 1, "mlp": 2, "block": 3})
                              if c.name == "scheme" else c).reset_index(drop=True)
    base_wiki, base_mmlu = unpruned
    n_q, n_w = base_mmlu.n, base_wiki.n
    L = loaded.n_blocks

    # 1. attention sublayers removable within noise
    head = []
    for ranking in ("cosine", "loss_shapley"):
        ok, bad, at = removable(table, "attn", ranking)
        ks = sorted(table[(table.scheme == "attn") & (table.ranking == ranking)]["K"])
        if not ks:
            continue
        if at is None:
            text = f"no evaluated K (of {ks}) keeps MMLU accuracy within noise"
        else:
            text = (f"**{ok} of {L}** attention sublayers ({ok / L:.0%}) removed with MMLU accuracy within noise: "
                    f"{pct(at.acc)} % ± {pct(Z_95 * at.acc_se)} (95 % CI, n = {at.mmlu_n}; {pct(at.flips)} % of the "
                    f"answers changed), paired Δ "
                    f"{100 * at.d_acc:+.1f} ± {100 * at.d_acc_se:.1f} pp (SE), so a drop of up to "
                    f"{100 * max(0.0, -(at.d_acc - Z_95 * at.d_acc_se)):.1f} pp is not excluded")
            if at.d_loss_se == at.d_loss_se and beyond(at.d_loss, at.d_loss_se):
                text += (f"; the gold-letter loss does move beyond noise there ({at.d_loss:+.3f} ± {at.d_loss_se:.3f} nats), "
                         "so the model is measurably less sure even where its accuracy holds")
        if bad is not None:
            r = table[(table.scheme == "attn") & (table.ranking == ranking) & (table.K == bad)].iloc[0]
            text += (f". First evaluated K with a drop beyond 2 SE: **K = {bad}**, acc {pct(r.acc)} % "
                     f"(paired Δ {100 * r.d_acc:+.1f} ± {100 * r.d_acc_se:.1f} pp)")
        else:
            text += f". No evaluated K up to {max(ks)} drops beyond 2 SE"
        head.append(f"- By {RANKING_NAMES[ranking]} (K evaluated: {', '.join(map(str, ks))}): {text}.")

    # 2. schemes compared at equal K
    scheme_lines = []
    for k in sorted(set(table[table.scheme == "mlp"]["K"]) & set(table[table.scheme == "block"]["K"]) | {2}):
        cells = []
        for scheme in ("attn", "mlp", "block"):
            rows = table[(table.scheme == scheme) & (table.ranking == "cosine") & (table.K == k)]
            if len(rows):
                r = rows.iloc[0]
                acc = ("MMLU not scored" if math.isnan(r.acc) else f"MMLU {pct(r.acc)} % (Δ {100 * r.d_acc:+.1f} ± "
                       f"{100 * r.d_acc_se:.1f} pp, {verdict(r.d_acc, r.d_acc_se)})")
                cells.append(f"{scheme}: ppl {r.ppl:.2f} (Δ NLL {r.d_nll:+.3f} ± {r.d_nll_se:.3f}, "
                             f"{verdict(r.d_nll, r.d_nll_se, True)}), {acc}")
        if cells:
            scheme_lines.append(f"- K = {k} by cosine: " + "; ".join(cells) + ".")
    # attention vs MLP directly, paired, at the same K
    versus = []
    for k in sorted(set(table[(table.scheme == "mlp") & (table.ranking == "cosine")]["K"])):
        for other in ("mlp", "block"):
            a = curve_plan.get(("attn", "cosine", k))
            b = curve_plan.get((other, "cosine", k))
            if a is None or b is None:
                continue
            ra, rb = run.results.get((str(a), "mmlu")), run.results.get((str(b), "mmlu"))
            wa, wb = run.results[(str(a), "wiki")], run.results[(str(b), "wiki")]
            dn, sen = paired(wa, wb, "nll")
            acc = "not scored"
            if ra is not None and rb is not None:
                d, se = paired(ra, rb, "acc")
                acc = f"{100 * d:+.1f} ± {100 * se:.1f} ({verdict(d, se)})"
            versus.append(f"| {k} | {other} − attn | {acc} | {dn:+.3f} ± {sen:.3f} ({verdict(dn, sen, True)}) |")

    # 3. rankings
    corr_lines = ["| units | ranking A | ranking B | n | Spearman ρ | 95 % CI | verdict |", "|---|---|---|---:|---:|---|---|"]
    pairs = [("attn", "cosine", "loss_shapley"), ("mlp", "cosine", "loss_shapley"), ("both", "cosine", "loss_shapley"),
             ("attn", "cosine", "mmlu_shapley"), ("attn", "loss_shapley", "mmlu_shapley")]
    rhos = {}
    for scheme, a, b in pairs:
        if (a, scheme) not in orders or (b, scheme) not in orders:
            continue
        rho, lo, hi, n = spearman(orders[(a, scheme)], orders[(b, scheme)])
        rhos[(scheme, a, b)] = (rho, lo, hi, n)
        call = "correlated beyond noise" if lo > 0 else ("anti-correlated beyond noise" if hi < 0 else "not distinguishable from 0")
        corr_lines.append(f"| {scheme} | {a} | {b} | {n} | {rho:+.2f} | [{lo:+.2f}, {hi:+.2f}] | {call} |")
    first = {key: ", ".join(str(u).split(".")[0] for u in order[:12]) for key, order in orders.items()}

    # 4. trade-off
    trade_lines = []
    for k in s["tradeoff_ks"]:
        trade_lines += [f"**K = {k} attention sublayers.** Wikipedia: {n_w} windows x {s['window_len']} tokens; MMLU: "
                        f"{n_q} held-out test questions.", "",
                        "| ranking | removed | wiki ppl | Δ NLL vs unpruned | MMLU acc ± 95 % CI | Δ acc pp vs unpruned | Δ loss vs unpruned |",
                        "|---|---|---:|---|---:|---|---|",
                        f"| unpruned | - | {base_wiki.metrics['perplexity']:.2f} | - | {pct(base_mmlu.metrics['acc'])} ± "
                        f"{pct(Z_95 * base_mmlu.stderr['acc'])} | - | - |"]
        results = {}
        for ranking in ("cosine", "loss_shapley", "mmlu_shapley"):
            plan = curve_plan.get(("attn", ranking, k))
            if plan is None:
                continue
            w, m = run.results[(str(plan), "wiki")], run.results.get((str(plan), "mmlu"))
            results[ranking] = (w, m)
            dn, sen = paired(base_wiki, w, "nll")
            mmlu_cells = "not scored | | "
            if m is not None:
                da, sea = paired(base_mmlu, m, "acc")
                dl, sel = paired(base_mmlu, m, "loss")
                mmlu_cells = (f"{pct(m.metrics['acc'])} ± {pct(Z_95 * m.stderr['acc'])} | {100 * da:+.1f} ± {100 * sea:.1f} "
                              f"({verdict(da, sea)}) | {dl:+.3f} ± {sel:.3f} ({verdict(dl, sel, True)})")
            trade_lines.append(
                f"| {RANKING_NAMES[ranking]} | {', '.join(sorted((str(u).split('.')[0] for u in orders[(ranking, 'attn')][:k]), key=int))} | "
                f"{w.metrics['perplexity']:.2f} | {dn:+.3f} ± {sen:.3f} ({verdict(dn, sen, True)}) | {mmlu_cells} |")
        trade_lines += ["", "Between rankings (paired, B − A, same questions and windows):", "",
                        "| A | B | Δ MMLU acc pp | Δ MMLU loss | Δ wiki NLL |", "|---|---|---|---|---|"]
        for a, b in (("loss_shapley", "mmlu_shapley"), ("cosine", "mmlu_shapley"), ("cosine", "loss_shapley")):
            if a in results and b in results:
                dn, sen = paired(results[a][0], results[b][0], "nll")
                mmlu_cells = "not scored | not scored"
                if results[a][1] is not None and results[b][1] is not None:
                    da, sea = paired(results[a][1], results[b][1], "acc")
                    dl, sel = paired(results[a][1], results[b][1], "loss")
                    mmlu_cells = f"{100 * da:+.1f} ± {100 * sea:.1f} ({verdict(da, sea)}) | {dl:+.3f} ± {sel:.3f} ({verdict(dl, sel, True)})"
                trade_lines.append(f"| {a} | {b} | {mmlu_cells} | {dn:+.3f} ± {sen:.3f} ({verdict(dn, sen, True)}) |")
        trade_lines.append("")
    trade_summary = tradeoff_summary(run, curve_plan, orders, s)

    mlp_mmlu_text = (f"on MMLU only at K = {', '.join(map(str, s['mlp_block_mmlu_ks']))}" if s["mlp_block_mmlu_ks"]
                     else "not on MMLU (no time was left for those evaluations)")
    wall = s.get("wall_minutes")
    wall_text = (f"; {wall:.0f} minutes of wall clock, some phases running in two processes at once" if wall else "")
    cost_lines = []
    for data, result in COSTS.items():
        label = (f"- loss-Shapley LOO on {result.table['dataset'].iloc[0]}: {result.subnetworks} subnetworks "
                f"({len(result.table)} attention sublayers)")
        if result.count.computed == 0:
            cost_lines.append(label + ", read back from the cache in this run (its compute time is in the phase times at the top).")
        else:
            cost_lines.append(label + f", {result.count.computed:,} block forwards with prefix reuse (naive "
                              f"{result.count.naive:,}), {result.seconds / 60:.1f} min.")
    mmlu_cost = "\n".join(cost_lines) if cost_lines else "No adaptive ranking was computed in this run."
    start = s.get("mmlu_start", 0)
    mmlu_text = "not computed in this run" if not fit_n else ""
    mmlu_scope = ("all attention sublayers" if not start else
                  f"the attention sublayers of blocks {start}-{L - 1} (for cost: a subnetwork without a sublayer of an "
                  f"earlier block recomputes most of the model; blocks 0-{start - 1} are ranked last, i.e. kept)")
    mmlu_text = mmlu_text or (f"leave-one-out loss-Shapley (gold-letter cross-entropy) of {mmlu_scope}, on the {fit_n} "
                              f"even-indexed (\"fit\") questions of the first {s['fit_per_subject']} per subject, which no "
                              "evaluation scores (held out)")
    described = {"extra": "loss-Shapley curves beyond the trade-off K and the MLP Shapley order",
                 "mlp-block-mmlu": "MLP and block points on MMLU", "shapley-mmlu": "the MMLU-adaptive ranking",
                 "tradeoff-mmlu": "the evaluation of the MMLU-adaptive plan", "attn-cosine": "the attention curve",
                 "shapley-wiki": "the Wikipedia loss-Shapley ranking", "tradeoff-wiki": "the trade-off plans",
                 "mlp-block": "the MLP and block curves", "tradeoff-wiki-mmlu": "the Wikipedia-adaptive plan on MMLU"}
    missing = (f"\n- **Not computed in this run** (no time left): {'; '.join(described.get(n, n) for n in sorted(skip))}."
               if skip else "")
    timing = "; ".join(f"{name} {value / 60:.1f} min" for name, value in phases.items())
    eval_seconds = sum(result.seconds for result in run.results.values())
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    mmlu_name = s["mmlu"]
    text = f"""# Findings on {model} (depth pruning, set beside {PAPER})

Generated by `bench/findings.py --model {model}` on {now}, on this machine's CPU (2 cores shared with other
work, run at `nice -n 19`), in **{loaded.dtype_name}** (`load_model(..., dtype="auto")`), {L} blocks. Compute:
{seconds / 60:.0f} minutes summed over the phases as first computed ({timing}){wall_text}; results are
cached, so a rerun only re-reads them.

Settings:

- **MMLU**: {mmlu_name}, letter format, 0-shot (acc, and "MMLU loss" = 4-way cross-entropy of the gold letter,
  nats). Every MMLU number is on the same **{n_q} held-out questions**: the odd-indexed ("test") half of the
  first {s['eval_per_subject']} questions of each subject. Differences between two plans are the **paired**
  per-question difference and its standard error (`pruneviz.evaluation.statistics.paired_difference`).
- **Wikipedia perplexity**: {n_w} windows x {s['window_len']} tokens of the evaluation half; differences are
  the paired per-window NLL difference (nats/token) and its standard error.
- **Rankings**: cosine distance (static) on {s['samples']} documents x {s['seq_len']} tokens of the Wikipedia
  *calibration* half, and leave-one-out loss-Shapley (adaptive) on the first {s['shapley_samples']} of them;
  MMLU-adaptive: {mmlu_text}. LOO values carry no standard error.
- **Verdicts**: a difference is called better/worse only beyond **2 standard errors** of the paired difference;
  otherwise "within noise", which does not mean "no effect": the CI of the difference says how large an effect
  is still compatible. Curves are evaluated at a subset of K (the greedy orders are fixed, so a curve's plans
  are nested). ± after a value is a 95 % CI (1.96 SE); ± after a Δ is one SE.{missing}
- **What was cut for compute** (the 2 CPU cores were shared with test suites for the whole run; this process ran
  at the lowest priority): MMLU is scored on {n_q} questions, not the full test set; the attention curve by
  cosine is evaluated at K = {', '.join(map(str, s['attn_ks']))} (K = 10 and 12 were planned; no time was left); MLP and block curves are scored on
  Wikipedia at K = {', '.join(map(str, s['mlp_ks']))} and {mlp_mmlu_text};
  loss-Shapley rankings are leave-one-out over the attention sublayers (the MLP Shapley order is not computed
  unless the whole sublayer game ran), on {s['shapley_samples']} Wikipedia documents; the MMLU-adaptive ranking
  covers the attention sublayers of the second half of the blocks only (see Rankings).

## Summary

Unpruned: MMLU acc **{pct(base_mmlu.metrics['acc'])} % ± {pct(Z_95 * base_mmlu.stderr['acc'])}** (n = {n_q}),
MMLU loss {base_mmlu.metrics['loss']:.3f} ± {base_mmlu.stderr['loss']:.3f} nats; Wikipedia perplexity
**{base_wiki.metrics['perplexity']:.2f}** (NLL {base_wiki.metrics['nll']:.3f} ± {base_wiki.stderr['nll']:.3f}, n = {n_w} windows).

**How many attention sublayers can go with MMLU within noise** (paper: about a third of Mistral-7B's, 32 blocks):

{chr(10).join(head)}

**Block vs attention vs MLP** (paper: attention far more prunable than MLP or whole blocks):

{chr(10).join(scheme_lines)}

Paired comparison of the schemes at equal K (same questions and windows; MLP/block minus attention):

| K | comparison | Δ MMLU acc pp | Δ wiki NLL |
|---|---|---|---|
{chr(10).join(versus)}

**Static vs Shapley rankings**: Spearman correlation of the unit orders (table below);
{spearman_summary(rhos)}

**Trade-offs between rankings** (paired, same questions and windows): {trade_summary}

## Set beside the paper

{paper_section(table, run, curve_plan, orders, rhos, s, L, model, loaded.dtype_name)}

## Pruning curves

Every row removes the units of its curve's earlier rows plus those listed. "answers changed" = share of the
{n_q} questions whose chosen letter differs from the unpruned model's.

{curve_table(table)}

## Static vs Shapley rankings

{chr(10).join(corr_lines)}

First 12 blocks in pruning order (least important first):

{chr(10).join(f'- {scheme} by {RANKING_NAMES.get(ranking, ranking)}: {first[(ranking, scheme)]}' for ranking, scheme in orders if scheme != 'both')}

{mmlu_cost}

## Trade-off: MMLU-adaptive (held out) vs Wikipedia-adaptive vs static

{chr(10).join(trade_lines)}

## Earlier version

The previous version of this document was generated on the embedded SmolLM2-135M-Instruct, which answers
MMLU at chance (letter accuracy 0.25-0.30): its MMLU curves and trade-offs were noise, and it could not test
the paper's MMLU claims. This version replaces it.

{len(run.results)} evaluations; their own compute time when first computed: {eval_seconds / 60:.0f} min.
"""
    path.write_text(text)


def paper_section(table: pd.DataFrame, run: Run, curve_plan: dict, orders: dict, rhos: dict, s: dict, L: int,
                  model: str, dtype: str) -> str:
    """The paper's claims, each beside what this run measured and whether it is beyond noise."""
    lines = []
    ok, bad, at = removable(table, "attn", "cosine")
    if at is not None:
        third = L / 3
        if ok >= math.floor(third):
            call = "as many as the paper's third, or more, at this grid's resolution"
        elif bad is not None and bad <= math.ceil(third):
            call = (f"fewer than the paper's third: at K = {bad} (≤ {third:.1f}) the accuracy drop is already beyond "
                    "2 SE")
        elif bad is None:
            call = (f"no drop beyond 2 SE up to the largest K evaluated ({ok}, against {third:.1f} for a third), so the "
                    "run neither confirms nor contradicts the paper's third; with this many questions the test has "
                    "little power (see the CI)")
        else:
            call = "not resolved by the K evaluated"
        lower = 100 * max(0.0, -(at.d_acc - Z_95 * at.d_acc_se))
        lines.append(
            f"- **A third of the attention sublayers removable with MMLU intact** (Mistral-7B: 32 blocks, ~11). Here, "
            f"ranked by cosine: {ok} of {L} ({ok / L:.0%}) with the paired accuracy change within 2 SE "
            f"(n = {at.mmlu_n}; {100 * at.d_acc:+.1f} ± {100 * at.d_acc_se:.1f} pp, so up to {lower:.1f} pp lost is not "
            f"excluded){'' if bad is None else f'; first drop beyond 2 SE at K = {bad}'}: {call}. A third of this "
            f"model is {third:.1f} sublayers.")
    for scheme in ("mlp", "block"):
        parts = []
        for k in sorted(table[(table.scheme == scheme) & (table.ranking == "cosine")]["K"]):
            a, b = curve_plan.get(("attn", "cosine", k)), curve_plan.get((scheme, "cosine", k))
            if a is None or b is None:
                continue
            dn, sen = paired(run.results[(str(a), "wiki")], run.results[(str(b), "wiki")], "nll")
            text = f"K = {k}: Wikipedia NLL {dn:+.3f} ± {sen:.3f} ({verdict(dn, sen, True)})"
            ma, mb = run.results.get((str(a), "mmlu")), run.results.get((str(b), "mmlu"))
            if ma is not None and mb is not None:
                d, se = paired(ma, mb, "acc")
                text += f", MMLU acc {100 * d:+.1f} ± {100 * se:.1f} pp ({verdict(d, se)})"
            parts.append(text)
        if parts:
            lines.append(f"- **Attention far more prunable than {'MLP' if scheme == 'mlp' else 'whole blocks'}**. Here, "
                         f"{scheme} minus attention at the same K (cosine, paired): " + "; ".join(parts) + ".")
    for (scheme, a, b), (rho, lo, hi, n) in rhos.items():
        if (a, b) == ("cosine", "loss_shapley") and scheme in ("attn", "mlp"):
            lines.append(f"- **Static vs adaptive ranking** ({scheme}): Spearman ρ = {rho:+.2f}, 95 % CI [{lo:+.2f}, {hi:+.2f}] "
                         f"(n = {n}): " + ("the two orders agree beyond chance" if lo > 0 else
                                            "no agreement beyond chance" if hi > 0 else "they disagree beyond chance") + ".")
    k = s["tradeoff_ks"][0]
    a, b = curve_plan.get(("attn", "loss_shapley", k)), curve_plan.get(("attn", "mmlu_shapley", k))
    if a is not None and b is not None and (str(a), "mmlu") in run.results and (str(b), "mmlu") in run.results:
        da, sea = paired(run.results[(str(a), "mmlu")], run.results[(str(b), "mmlu")], "acc")
        dl, sel = paired(run.results[(str(a), "mmlu")], run.results[(str(b), "mmlu")], "loss")
        dn, sen = paired(run.results[(str(a), "wiki")], run.results[(str(b), "wiki")], "nll")
        mmlu_better = (beyond(da, sea) and da > 0) or (beyond(dl, sel) and dl < 0)
        wiki_worse = beyond(dn, sen) and dn > 0
        call = ("the trade-off is seen beyond noise on both sides" if mmlu_better and wiki_worse else
                "only the Wikipedia side of the trade-off is beyond noise" if wiki_worse else
                "only the MMLU side of the trade-off is beyond noise" if mmlu_better else
                "neither side of the trade-off is beyond noise here")
        lines.append(
            f"- **Adaptive metrics trade one task for another** (MMLU-computed Shapley values keep MMLU and cost "
            f"perplexity). Here, at K = {k} attention sublayers, MMLU-adaptive (held out) minus Wikipedia-adaptive: "
            f"MMLU acc {100 * da:+.1f} ± {100 * sea:.1f} pp, MMLU loss {dl:+.3f} ± {sel:.3f}, Wikipedia NLL "
            f"{dn:+.3f} ± {sen:.3f} nats/token: {call}.")
    lines.append(
        f"- Differences in setting: {model} ({L} blocks) in {dtype} on CPU, not Mistral-7B; MMLU letter "
        "format 0-shot on a few questions per subject rather than the full test set; one-shot greedy orders "
        "evaluated on a grid of K.")
    return "\n".join(lines)


def spearman_summary(rhos: dict) -> str:
    parts = []
    for (scheme, a, b), (rho, lo, hi, n) in rhos.items():
        call = "beyond noise" if lo > 0 or hi < 0 else "within noise of 0"
        parts.append(f"{scheme} {a} vs {b}: ρ = {rho:+.2f} [{lo:+.2f}, {hi:+.2f}], n = {n} ({call})")
    return "; ".join(parts) + "."


def tradeoff_summary(run: Run, curve_plan: dict, orders: dict, s: dict) -> str:
    parts = []
    for k in s["tradeoff_ks"]:
        a, b = curve_plan.get(("attn", "loss_shapley", k)), curve_plan.get(("attn", "mmlu_shapley", k))
        if a is None or b is None:
            continue
        ma, mb = run.results.get((str(a), "mmlu")), run.results.get((str(b), "mmlu"))
        wa, wb = run.results[(str(a), "wiki")], run.results[(str(b), "wiki")]
        if ma is None or mb is None:
            continue
        da, sea = paired(ma, mb, "acc")
        dl, sel = paired(ma, mb, "loss")
        dn, sen = paired(wa, wb, "nll")
        overlap = len(set(orders[("loss_shapley", "attn")][:k]) & set(orders[("mmlu_shapley", "attn")][:k]))
        parts.append(
            f"at K = {k} ({overlap} of the {k} units shared), the MMLU-adaptive plan against the Wikipedia-adaptive one: "
            f"MMLU acc {100 * da:+.1f} ± {100 * sea:.1f} pp ({verdict(da, sea)}), MMLU loss {dl:+.3f} ± {sel:.3f} "
            f"({verdict(dl, sel, True)}), Wikipedia NLL {dn:+.3f} ± {sen:.3f} ({verdict(dn, sen, True)}), "
            f"perplexity {wa.metrics['perplexity']:.2f} → {wb.metrics['perplexity']:.2f}")
    for k in s["tradeoff_ks"]:
        a, b = curve_plan.get(("attn", "cosine", k)), curve_plan.get(("attn", "loss_shapley", k))
        if a is None or b is None or (str(a), "mmlu") not in run.results or (str(b), "mmlu") not in run.results:
            continue
        da, sea = paired(run.results[(str(a), "mmlu")], run.results[(str(b), "mmlu")], "acc")
        dn, sen = paired(run.results[(str(a), "wiki")], run.results[(str(b), "wiki")], "nll")
        parts.append(f"static vs Wikipedia-adaptive at K = {k} (loss-Shapley minus cosine): Wikipedia NLL {dn:+.3f} ± "
                     f"{sen:.3f} ({verdict(dn, sen, True)}), MMLU acc {100 * da:+.1f} ± {100 * sea:.1f} pp ({verdict(da, sea)})")
    return "; ".join(parts) + "." if parts else "not computed."


if __name__ == "__main__":
    main()
