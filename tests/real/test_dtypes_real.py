"""The embedded SmolLM2 in bfloat16 against float32: evaluate, influence, recover, curve and generation.

bf16 is what ``--dtype auto`` loads on a GPU and on a CPU with native bf16 instructions; float32 is the
reference. Tolerances (measured on this model, 2026-12-05: perplexity 0.7 % apart, every MMLU prediction
equal on 57 questions, static-metric rankings Spearman 0.9998):
perplexity within 2 %; MMLU predictions equal on at least 90 % of the questions; static rankings
Spearman >= 0.95; leave-one-out Shapley rankings Spearman >= 0.9.
"""

from __future__ import annotations

import pandas as pd
import pytest

from pruneviz import api
from pruneviz.core.plan import PruningPlan
from pruneviz.data.mmlu import SUBJECT_CATEGORY
from pruneviz.studies.curves import Ranking, Task, pruning_curve
from pruneviz.studies.generation import generate_greedy

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def models(smollm2) -> dict:
    from pruneviz.core.loading import load_model

    return {"float32": smollm2, "bfloat16": load_model("smollm2", device="cpu", dtype="bfloat16")}


def spearman(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """Spearman rank correlation of two influence tables' values, unit by unit."""
    frame = pd.DataFrame({"a": a.set_index("unit")["value"], "b": b.set_index("unit")["value"]})
    return float(frame["a"].rank().corr(frame["b"].rank()))


@pytest.mark.parametrize("plan", ["", "20.attn", "3"])
def test_perplexity_in_bf16_is_within_two_percent(models, plan):
    results = {d: api.evaluate(m, PruningPlan.parse(plan), "wiki", windows=8, seq_len=128) for d, m in models.items()}
    assert results["bfloat16"].settings["dtype"] == "bfloat16" and results["bfloat16"].n == 8
    assert results["bfloat16"].metrics["perplexity"] == pytest.approx(results["float32"].metrics["perplexity"], rel=0.02)


@pytest.mark.parametrize("fmt", ["letter", "cloze"])
def test_mmlu_predictions_in_bf16_match_float32(models, fmt):
    results = {d: api.evaluate(m, PruningPlan.parse("20.attn"), "mmlu:STEM", fmt=fmt, per_subject=1) for d, m in models.items()}
    ours, reference = results["bfloat16"].items, results["float32"].items
    assert len(ours) == len(reference) == sum(c == "STEM" for c in SUBJECT_CATEGORY.values())  # one per STEM subject
    assert list(ours["subject"]) == list(reference["subject"]) and list(ours["answer"]) == list(reference["answer"])
    assert (ours["pred"].to_numpy() == reference["pred"].to_numpy()).mean() >= 0.9


def test_static_and_shapley_rankings_in_bf16_match_float32(models):
    static = {d: api.influence(m, "wiki", ["cosine", "angular", "rel_l2"], "sublayer", samples=8, seq_len=128) for d, m in models.items()}
    for metric in ("cosine", "angular", "rel_l2"):
        ours, reference = (static[d][static[d]["metric"] == metric] for d in ("bfloat16", "float32"))
        assert len(ours) == 60 and spearman(ours, reference) >= 0.95, metric
    loo = {d: api.influence(m, "wiki", ["loss_shapley"], "block", samples=2, seq_len=64) for d, m in models.items()}
    assert set(loo["bfloat16"]["dtype"]) == {"bfloat16"}
    assert spearman(loo["bfloat16"], loo["float32"]) >= 0.9


def test_recovery_fitted_in_bf16_recovers_like_float32(models):
    plan = PruningPlan.parse("3")
    perplexity = {}
    for dtype, model in models.items():
        recovery = api.recover(model, plan, method="bias", samples=8, seq_len=64)
        assert all(p.dtype.is_floating_point for s in recovery.stand_ins.values() for p in s.parameters())
        perplexity[dtype] = api.evaluate(model, plan, "wiki", windows=8, seq_len=128, recovery=recovery).metrics["perplexity"]
    assert perplexity["bfloat16"] == pytest.approx(perplexity["float32"], rel=0.02)


def test_curve_in_bf16_removes_the_same_units(models):
    curves = {
        d: pruning_curve(m, Ranking("cosine", "wiki", {"samples": 8, "seq_len": 128}), "attn", 2, [Task("wiki", {"windows": 8, "seq_len": 128})])
        for d, m in models.items()
    }
    ours, reference = (c[c["metric"] == "perplexity"] for c in (curves["bfloat16"], curves["float32"]))
    assert list(ours["removed"]) == list(reference["removed"]) and len(ours) == 3
    assert list(ours["value"]) == pytest.approx(list(reference["value"]), rel=0.02)


def test_greedy_generation_in_bf16_starts_like_float32(models):
    texts = {d: generate_greedy(m, "The capital of France is", max_new_tokens=8).text for d, m in models.items()}
    assert texts["bfloat16"] == texts["float32"] and "Paris" in texts["float32"]
