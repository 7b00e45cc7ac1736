"""Data-parallel ``influence`` and ``curve``: the real CLI under ``torchrun`` on 2 CPU processes writes
exactly the numbers one process writes.

Each run gets its own fresh result cache (sharing only the converted model), so the 2-process run
computes everything itself instead of reading the 1-process run's results. Both runs use one thread
per process, so that the two computations do the same floating-point operations in the same order.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO

MODEL_SETTINGS = ["--samples", "2", "--seq-len", "24"]


def _run(tmp_path: Path, name: str, processes: int, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    """Run ``python -m pruneviz ARGS --out <csv>`` on ``processes`` processes with a fresh cache."""
    cache = tmp_path / f"cache-{name}"
    cache.mkdir()
    (cache / "models").symlink_to(REPO / "cache" / "models", target_is_directory=True)
    out = tmp_path / f"{name}.csv"
    env = {**os.environ, "PRUNEVIZ_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    for variable in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(variable, None)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] if processes > 1 else [sys.executable]
    result = subprocess.run([*launcher, "-m", "pruneviz", *args, "--out", str(out)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, out


@pytest.mark.real
def test_permutation_influence_on_two_processes_equals_one(tmp_path):
    args = ["influence", "--metrics", "loss_shapley,cosine", "--estimator", "permutation", "--budget", "1",
            "--granularity", "block", *MODEL_SETTINGS]
    one, one_csv = _run(tmp_path, "one", 1, *args)
    two, two_csv = _run(tmp_path, "two", 2, *args)
    assert one_csv.read_text() == two_csv.read_text()
    table = pd.read_csv(two_csv)
    shapley = table[table["metric"] == "loss_shapley"]
    assert len(shapley) == 30 and shapley["value"].abs().sum() > 0 and shapley["stderr"].isna().all()
    # rank 0 alone prints, and says the work was shared
    assert two.stdout.count("wrote 60 rows") == 1 and "on 2 processes" in two.stdout
    assert "processes" not in one.stdout


@pytest.mark.real
def test_iterative_curve_on_two_processes_equals_one(tmp_path):
    args = ["curve", "--metric", "loss_shapley", "--estimator", "loo", "--scheme", "block", "--steps", "2", "--iterative",
            "--tasks", "wiki", "--windows", "2", "--window-len", "32", *MODEL_SETTINGS]
    _, one_csv = _run(tmp_path, "one", 1, *args)
    two, two_csv = _run(tmp_path, "two", 2, *args)
    assert one_csv.read_text() == two_csv.read_text()
    curve = pd.read_csv(two_csv)
    perplexity = curve[curve["metric"] == "perplexity"].sort_values("step")
    assert list(perplexity["step"]) == [0, 1, 2] and perplexity["value"].is_monotonic_increasing
    assert two.stdout.count("wrote") == 1
