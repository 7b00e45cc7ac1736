"""The CLI's research pipeline on the embedded model: adaptive influence, curve, recover, export, evaluate --recover."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.real


def run_cli(*args: str, cache_dir: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m pruneviz *args`` (with ``cache_dir`` as its cache, if given); it must succeed."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    if cache_dir is not None:
        env["PRUNEVIZ_CACHE_DIR"] = str(cache_dir)
    result = subprocess.run([sys.executable, "-m", "pruneviz", *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    return result


def test_adaptive_influence_reports_cost_and_writes_stderr_column(tmp_path):
    out = tmp_path / "shapley.csv"
    result = run_cli("influence", "--metrics", "loss_shapley", "--estimator", "subsample", "--budget", "12",
                     "--granularity", "block", "--samples", "2", "--seq-len", "32", "--out", str(out))
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 30 and {r["metric"] for r in rows} == {"loss_shapley"}
    assert all(math.isfinite(float(r["value"])) for r in rows)
    assert any(r["stderr"] != "" for r in rows)
    assert "loss_shapley/block: subsample, 12 subnetworks" in result.stdout
    assert "block forwards (naive:" in result.stdout


def test_curve_recover_export_and_evaluate_with_recovery(tmp_path):
    curve = tmp_path / "curve.csv"
    run_cli("curve", "--metric", "cosine", "--scheme", "attn", "--steps", "2", "--tasks", "wiki",
            "--windows", "2", "--window-len", "48", "--samples", "3", "--seq-len", "48", "--out", str(curve))
    rows = list(csv.DictReader(curve.open()))
    assert [r["step"] for r in rows if r["metric"] == "perplexity"] == ["0", "1", "2"]
    assert rows[-1]["plan"].count(".attn") == 2

    recovery = tmp_path / "rec"
    result = run_cli("recover", "--prune", "2", "--method", "bias", "--samples", "4", "--seq-len", "64",
                     "--windows", "2", "--window-len", "64", "--out", str(recovery))
    assert {p.name for p in recovery.iterdir()} >= {"stand_ins.safetensors", "recovery.json", "report.csv"}
    assert "576 parameters added" in result.stdout
    report = list(csv.DictReader((recovery / "report.csv").open()))
    assert [r["variant"] for r in report] == ["unpruned", "pruned", "bias/emulate"]

    evaluated = tmp_path / "eval.json"
    run_cli("evaluate", "--prune", "2", "--recover", str(recovery), "--windows", "2", "--window-len", "64",
            "--json", str(evaluated))
    document = json.loads(evaluated.read_text())
    assert document["recover"] == "bias/emulate"
    assert document["metrics"]["perplexity"] == pytest.approx(float(report[2]["wiki perplexity"]), rel=1e-9)
    # a recovery fitted for another plan is refused, not silently ignored
    refused = subprocess.run([sys.executable, "-m", "pruneviz", "evaluate", "--prune", "5", "--recover", str(recovery),
                              "--windows", "2", "--window-len", "64"], cwd=REPO, capture_output=True, text=True, timeout=900,
                             env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert refused.returncode == 2 and "fitted for the plan '2', not '5'" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    exported = tmp_path / "exported"
    result = run_cli("export", "--prune", "2,9", "--out", str(exported))
    assert "standalone transformers model; 28 blocks" in result.stdout
    plan_file = json.loads((exported / "pruning_plan.json").read_text())
    assert plan_file["plan"] == "2,9" and plan_file["removed_blocks"] == [2, 9]


def test_no_cache_leaves_the_result_cache_untouched_in_every_command(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "models").symlink_to(Path(os.environ["PRUNEVIZ_CACHE_DIR"]) / "models", target_is_directory=True)
    data, windows = ("--samples", "2", "--seq-len", "32"), ("--windows", "1", "--window-len", "32")
    commands = [
        ("influence", *data, "--out", str(tmp_path / "influence.csv")),
        ("evaluate", "--prune", "2", *windows),
        ("curve", "--steps", "1", *data, *windows, "--out", str(tmp_path / "curve.csv")),
        ("recover", "--prune", "2", "--method", "bias", *data, *windows, "--out", str(tmp_path / "rec")),
    ]
    for command in commands:
        run_cli(*command, "--no-cache", cache_dir=cache)
        assert sorted(p.name for p in cache.iterdir()) == ["models"], f"{command[0]} --no-cache wrote to the cache"
    run_cli(*commands[2], cache_dir=cache)
    assert (cache / "results").is_dir(), "without --no-cache the curve's steps are cached"
