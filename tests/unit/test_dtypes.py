"""Every computation in float32, bfloat16 and float16, on the CPU standing in for a GPU.

bf16 is what ``--dtype auto`` picks on every recent GPU and on CPUs with native bf16 matrix instructions;
fp16 is the GPU fallback. Each command of the CLI runs end to end on a tiny random Llama loaded from a
model folder in each dtype (the path a user's model takes: loading, gates, batch digests, the result
cache, checkpoints), and its numbers are compared with float32's. Tolerances are stated where they are
used; bf16 keeps 8 bits of mantissa (relative rounding 2^-9 = 0.2 %), fp16 11 bits (2^-12 = 0.02 %).
The real embedded SmolLM2 in bf16 is compared with float32 in ``tests/real/test_dtypes_real.py``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math

import pandas as pd
import pytest
import torch
from helpers import app_test

from pruneviz import api
from pruneviz.cli import main
from pruneviz.core import loading
from pruneviz.core.plan import PruningPlan
from pruneviz.studies.curves import Ranking, Task, tradeoff_matrix
from pruneviz.studies.export import load_exported
from pruneviz.studies.generation import generate_side_by_side

DTYPES = ["float32", "bfloat16", "float16"]
SUBJECT = "mmlu:abstract_algebra"


def spearman(a: dict, b: dict) -> float:
    """Spearman rank correlation of two ``{unit: value}`` maps over the same units."""
    frame = pd.DataFrame({"a": a, "b": b})
    return float(frame["a"].rank().corr(frame["b"].rank()))


def cli(*argv: str) -> str:
    """Run ``python -m pruneviz *argv`` in this process; it must succeed. Returns what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(list(argv))
    assert status == 0, f"pruneviz {' '.join(argv)} exited {status}"
    return out.getvalue()


def run_every_command(model: str, dtype: str, out) -> dict:
    """Every CLI command on ``model`` in ``dtype``, writing under ``out``; returns what each produced."""
    common = ("--model", model, "--dtype", dtype)
    data = ("--samples", "4", "--seq-len", "48")
    wiki = ("--windows", "3", "--window-len", "48")
    results = {"info": json.loads(cli("info", *common, "--json"))}
    cli("influence", *common, *data, "--metrics", "cosine,angular,rel_l2", "--granularity", "all", "--out", str(out / "static.csv"))
    results["static"] = list(csv.DictReader((out / "static.csv").open()))
    for estimator in ("loo", "subsample", "permutation"):
        cli("influence", *common, *data, "--metrics", "loss_shapley", "--estimator", estimator, "--budget", "6",
            "--granularity", "block", "--out", str(out / f"{estimator}.csv"))
        results[estimator] = list(csv.DictReader((out / f"{estimator}.csv").open()))
    evaluations = {
        "wiki": ("--task", "wiki", *wiki),
        "letter": ("--task", SUBJECT, "--format", "letter", "--per-subject", "3"),
        "cloze": ("--task", SUBJECT, "--format", "cloze", "--per-subject", "3"),
        "2-shot": ("--task", SUBJECT, "--format", "letter", "--shots", "2", "--per-subject", "3"),
        "lm-eval": ("--task", SUBJECT, "--format", "letter", "--per-subject", "3", "--backend", "lm-eval"),
    }
    for name, args in evaluations.items():
        results[f"{name} printed"] = cli("evaluate", *common, "--prune", "1.attn", *args, "--json", str(out / f"{name}.json"))
        results[name] = json.loads((out / f"{name}.json").read_text())
    results["unpruned printed"] = cli("evaluate", *common, "--task", "wiki", *wiki)
    cli("curve", *common, *data, *wiki, "--metric", "cosine", "--scheme", "attn", "--steps", "2", "--out", str(out / "curve.csv"))
    results["curve"] = list(csv.DictReader((out / "curve.csv").open()))
    for method, fit in (("bias", "emulate"), ("lowrank", "emulate"), ("lowrank", "train")):
        folder = out / f"{method}-{fit}"
        cli("recover", *common, *data, *wiki, "--prune", "2", "--method", method, "--rank", "2", "--fit", fit, "--steps", "3",
            "--out", str(folder))
        results[f"{method}-{fit}"] = list(csv.DictReader((folder / "report.csv").open()))
    cli("evaluate", *common, "--prune", "2", "--recover", str(out / "lowrank-emulate"), *wiki, "--json", str(out / "recovered.json"))
    results["recovered"] = json.loads((out / "recovered.json").read_text())
    cli("export", *common, "--prune", "3", "--out", str(out / "export"))
    results["export"] = out / "export"
    return results


@pytest.fixture(scope="module")
def outputs(tiny_model_dir, tmp_path_factory) -> dict[str, dict]:
    """``{dtype: run_every_command(...)}``, float32 first (a random tiny model fails the English self-check, so it is skipped)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loading, "run_self_check", lambda loaded: math.nan)
        return {dtype: run_every_command(str(tiny_model_dir), dtype, tmp_path_factory.mktemp(dtype)) for dtype in DTYPES}


def by_unit(rows: list[dict], metric: str) -> dict[str, float]:
    return {r["unit"]: float(r["value"]) for r in rows if r["metric"] == metric}


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_result_says_its_dtype_and_is_computed_in_it(outputs, dtype):
    results = outputs[dtype]
    assert results["info"]["dtype"] == dtype
    assert f"wiki n=3 prune='1.attn' ({dtype}): perplexity=" in results["wiki printed"]
    assert results["wiki printed"].count("(se ") == 3  # perplexity, nll and the KL from the unpruned model carry standard errors
    assert "kl=" in results["wiki printed"] and "kl=" not in results["unpruned printed"]
    assert f"wiki n=3 unpruned ({dtype}): perplexity=" in results["unpruned printed"]
    for name in ("static", "loo", "subsample", "permutation", "curve"):
        assert {row["dtype"] for row in results[name]} == {dtype}, name
    for name in ("wiki", "letter", "cloze", "2-shot", "lm-eval", "recovered"):
        assert results[name]["settings"]["dtype"] == dtype, name
        # the cache key separates dtypes: float32's stored results are never served for another dtype
        # ("recovered" was evaluated, in this dtype, by recover's before/after report)
        assert results[name]["from_cache"] is (name == "recovered"), name
    for fit in ("bias-emulate", "lowrank-emulate", "lowrank-train"):
        assert {row["dtype"] for row in results[fit]} == {dtype}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_evaluations_agree_with_float32(outputs, dtype):
    ours, reference = outputs[dtype], outputs["float32"]
    # perplexity of a random model (~ the vocabulary, 261): within 2 % of float32's
    for name in ("wiki", "recovered"):
        assert ours[name]["metrics"]["perplexity"] == pytest.approx(reference[name]["metrics"]["perplexity"], rel=0.02), name
        assert ours[name]["n"] == reference[name]["n"] == 3
    # MMLU: the 4-way loss within 0.02 nats; the same questions scored, with standard errors
    for name in ("letter", "2-shot", "lm-eval"):
        assert ours[name]["n"] == reference[name]["n"] == 3
        assert ours[name]["metrics"]["loss"] == pytest.approx(reference[name]["metrics"]["loss"], abs=0.02), name
        assert math.isfinite(ours[name]["stderr"]["acc"])
    # cloze accuracies, and (the plan prunes a unit) what changed in the answers against the unpruned model
    assert ours["cloze"]["metrics"].keys() == {"acc", "acc_norm", "flips", "flips_lost", "flips_gained", "kl"}
    assert ours["cloze"]["stderr"].keys() == ours["cloze"]["metrics"].keys()
    # the lm-eval backend runs the same evaluation as pruneviz's own in this dtype (fp32 log-softmax in both)
    assert ours["lm-eval"]["metrics"]["loss"] == pytest.approx(ours["letter"]["metrics"]["loss"], abs=0.02)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_influence_rankings_agree_with_float32(outputs, dtype):
    ours, reference = outputs[dtype], outputs["float32"]
    for metric in ("cosine", "angular", "rel_l2"):
        assert spearman(by_unit(ours["static"], metric), by_unit(reference["static"], metric)) >= 0.95, metric
    # Shapley values: accumulated in fp32 whatever the model's dtype; within 0.05 nats of float32's
    for estimator in ("loo", "subsample", "permutation"):
        mine, theirs = by_unit(ours[estimator], "loss_shapley"), by_unit(reference[estimator], "loss_shapley")
        assert mine.keys() == theirs.keys() == {"0", "1", "2", "3"}
        for unit in mine:
            assert mine[unit] == pytest.approx(theirs[unit], abs=0.05), (estimator, unit)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_curve_recovery_and_export_agree_with_float32(outputs, dtype):
    ours, reference = outputs[dtype], outputs["float32"]
    perplexity = lambda rows: [float(r["value"]) for r in rows if r["metric"] == "perplexity"]  # noqa: E731
    assert [r["step"] for r in ours["curve"] if r["metric"] == "perplexity"] == ["0", "1", "2"]
    assert perplexity(ours["curve"]) == pytest.approx(perplexity(reference["curve"]), rel=0.02)
    for fit in ("bias-emulate", "lowrank-emulate", "lowrank-train"):
        assert [r["variant"] for r in ours[fit]] == [r["variant"] for r in reference[fit]]
        assert [float(r["wiki perplexity"]) for r in ours[fit]] == pytest.approx(
            [float(r["wiki perplexity"]) for r in reference[fit]], rel=0.02
        ), fit
    # the export keeps the dtype it was pruned in; stock transformers reads it back
    assert json.loads((ours["export"] / "config.json").read_text())["dtype"] == dtype
    exported, plan, _ = load_exported(ours["export"], device="cpu")
    assert exported.n_blocks == 3 and plan == PruningPlan()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_generation_and_tradeoffs_in_each_dtype(tiny_model_dir, dtype, without_self_check):
    ours = loading.load_model(str(tiny_model_dir), device="cpu", dtype=dtype)
    reference = loading.load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    assert ours.dtype == getattr(torch, dtype) and ours.fingerprint != reference.fingerprint
    plan = PruningPlan.parse("1.attn")
    # greedy tokens of a random model hang on near-ties, so only SmolLM2's are compared with float32 (test_dtypes_real.py)
    generations = generate_side_by_side(ours, "The capital of France is", plan, max_new_tokens=6)
    assert generations.keys() == {"unpruned", "pruned"}
    assert all(1 <= g.new_tokens <= 6 and g.tokens_per_second > 0 for g in generations.values())
    rankings = [Ranking("cosine", "wiki", {"samples": 3, "seq_len": 32}), Ranking("rel_l2", "wiki", {"samples": 3, "seq_len": 32})]
    tasks = [Task("wiki", {"windows": 2, "seq_len": 32})]
    ours_matrix, reference_matrix = (tradeoff_matrix(m, rankings, tasks, "attn", 1) for m in (ours, reference))
    assert set(ours_matrix["dtype"]) == {dtype}
    assert list(ours_matrix["wiki perplexity"]) == pytest.approx(list(reference_matrix["wiki perplexity"]), rel=0.02)
    assert api.evaluate(ours, plan, "wiki", windows=2, seq_len=32).settings["dtype"] == dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_app_main_flow_in_each_dtype(tiny_model_dir, dtype, without_self_check):
    """Load a model in ``dtype`` from the sidebar, compute influences, prune and evaluate, fit a recovery."""
    from pruneviz.ui import models

    at = app_test()
    at.run()
    at.sidebar.selectbox(key="_model_choice").set_value("other").run()
    at.sidebar.text_input(key="_model_other").input(str(tiny_model_dir)).run()
    at.sidebar.selectbox(key="_model_dtype").set_value(dtype).run()
    assert not at.exception, at.exception
    assert any(f"on cpu in {dtype}" in caption.value for caption in at.sidebar.caption)
    try:
        def press(label: str) -> None:
            next(b for b in at.button if b.label == label).click().run()
            assert not at.exception, at.exception

        at.switch_page("pages/1_Influence.py")
        at.run()
        at.number_input(key="_influence_samples").set_value(2)
        at.number_input(key="_influence_seq_len").set_value(32)
        press("Compute influence")
        assert at.get("plotly_chart") and any(f"tokens) in {dtype}." in info.value for info in at.info)

        at.switch_page("pages/2_Prune_and_evaluate.py")
        at.run()
        at.checkbox(key="toggle_1_attn").check().run()
        at.number_input(key="_wiki_windows").set_value(2)
        at.number_input(key="_wiki_seq_len").set_value(32)
        press("Run")
        values = {m.label: m.value for m in at.metric}
        assert all(math.isfinite(float(values[f"Perplexity ({v})"].split()[0].replace(",", ""))) for v in ("pruned", "unpruned"))
        assert any(f"predicted tokens), in {dtype}." in caption.value for caption in at.caption)

        at.switch_page("pages/5_Recovery.py")
        at.run()
        at.number_input(key="_recovery_samples").set_value(2)
        at.number_input(key="_recovery_seq_len").set_value(32)
        at.number_input(key="_recovery_windows").set_value(2)
        at.number_input(key="_recovery_window_len").set_value(32)
        press("Fit and compare")
        table = at.dataframe[0].value
        assert set(table["dtype"]) == {dtype} and table["wiki perplexity"].map(math.isfinite).all()

        at.switch_page("pages/3_Pruning_curves.py")
        at.run()
        for key, value in (("samples", 2), ("seq_len", 32), ("steps", 1), ("windows", 2), ("window_len", 32)):
            at.number_input(key=f"_curves_{key}").set_value(value)
        press("Run")
        assert len(at.get("plotly_chart")) == 3 and list(at.dataframe[0].value["step"]) == [0, 1]  # perplexity, nll, kl

        at.switch_page("pages/4_Task_trade-offs.py")
        at.run()
        for key, value in (("samples", 2), ("seq_len", 32), ("count", 1), ("windows", 2), ("window_len", 32)):
            at.number_input(key=f"_tradeoff_{key}").set_value(value)
        at.multiselect(key="_tradeoff_mmlu").set_value(["mmlu:anatomy"])
        press("Run")
        assert set(at.dataframe[0].value["dtype"]) == {dtype}

        at.switch_page("pages/6_Export.py")
        at.run()
        at.text_input(key="export_plan").input("3").run()
        press("Export")
        assert len(at.success) == 1 and "standalone" in at.success[0].value
        press("Delete this export from the server")
    finally:
        models.load_model_cached.clear()  # the next app test loads its own model
        models._resident.clear()
