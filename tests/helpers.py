"""Helpers that the unit and the real tests of one topic share (``tests/unit/test_X.py`` and
``tests/real/test_X_real.py``); ``pythonpath = ["tests"]`` in pyproject.toml makes ``from helpers import ...``
work in every tier folder.

Fixtures shared by the tiers live in ``conftest.py``, independent reference computations in ``reference.py``.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO
from reference import ResidualHooks, static_metrics_by_hand

from pruneviz.core.gating import apply_plan
from pruneviz.core.plan import PruningPlan
from pruneviz.engine.packing import PackedBatch
from pruneviz.engine.scoring import Request
from pruneviz.influence.static import CSV_COLUMNS

# ---------------------------------------------------------------- the app under AppTest

# what a test's app session starts with unless the test says otherwise: the small embedded model (the app opens
# on the 1.5B one), MMLU off and no automatic evaluation (each test presses Run for what it evaluates)
APP_TEST_STATE = {"model_choice": "smollm2", "use_mmlu": False, "auto_evaluate": False}


def app_test(page: str | None = None, query: dict | None = None, timeout: float = 300, **state):
    """A new AppTest session of app.py with :data:`APP_TEST_STATE` (overridden by ``state``), not yet run.

    Args:
        page: a file under ``pages/`` to open on the first run.
        query: query parameters of the first run (a permalink).
    """
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=timeout)
    for name, value in (APP_TEST_STATE | state).items():
        at.session_state[name] = value
    for name, value in (query or {}).items():
        at.query_params[name] = value
    if page:
        at.switch_page(f"pages/{page}")
    return at


# ---------------------------------------------------------------- result cache (test_cache)

GARBAGE = b"\x80\x04 this is not a pickle \xff\x00"


def corrupt_entry(results, key: str, damage=lambda stored: GARBAGE) -> str:
    """Replace the stored value of ``key`` by ``damage(stored bytes)`` (default: bytes that are not a pickle);
    return where it lived."""
    with sqlite3.connect(Path(results.directory) / "cache.db") as db:
        filename, mode, value = db.execute("SELECT filename, mode, value FROM Cache WHERE key = ?", (key,)).fetchone()
        assert mode in (1, 2)  # bytes (the sealed pickle), stored inside sqlite or in a file
        if filename:
            file = Path(results.directory) / filename
            file.write_bytes(damage(file.read_bytes()))
            return "file"
        db.execute("UPDATE Cache SET value = ? WHERE key = ?", (sqlite3.Binary(damage(bytes(value))), key))
        return "sqlite"


# ---------------------------------------------------------------- command line (test_cli)


def run_pruneviz(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """``python -m pruneviz ARGS`` in a subprocess in the checkout, offline, whatever its exit status."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    assert env["PRUNEVIZ_CACHE_DIR"]  # set by the session fixture in conftest.py
    return subprocess.run([sys.executable, "-m", "pruneviz", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result, *fragments):
    """The command failed with status 2 and one ``error: ...`` line that holds every fragment, no traceback."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


# ---------------------------------------------------------------- hidden-state store (test_hidden_store)


def files_in(directory: Path) -> dict[str, int]:
    """File name -> size of every file in ``directory``."""
    return {path.name: path.stat().st_size for path in directory.iterdir()}


# ---------------------------------------------------------------- incremental evaluation (test_incremental)


def plain_logprobs(loaded, requests: list[Request], plan: PruningPlan, stand_ins=None) -> list[torch.Tensor]:
    """Each request alone through the stock model forward (no packing, no store, no batching)."""
    out = []
    with apply_plan(plan, stand_ins), torch.no_grad():
        for request in requests:
            logits = loaded.model(torch.tensor([request.tokens])).logits[0].float()
            logprobs = torch.log_softmax(logits, -1)[list(request.positions)]
            out.append(logprobs.gather(1, torch.tensor(request.candidates)).double())
    return out


# ---------------------------------------------------------------- lm-eval backend (test_lm_eval_backend)


def user_task(folder: Path) -> Path:
    """A tiny multiple-choice task of the user's own, in a folder lm-eval does not know."""
    rows = [{"q": "The capital of France is", "options": ["Paris", "Lima", "Oslo"], "gold": 0},
            {"q": "Two plus two equals", "options": ["three", "four", "ten"], "gold": 1}]
    data = folder / "tiny.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {
        "task": "pruneviz_test_tiny", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "{{q}}", "doc_to_choice": "{{options}}",
        "doc_to_target": "{{gold}}",
        "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in ("acc", "acc_norm")],
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# ---------------------------------------------------------------- shared-prefix packing (test_packing)


def packed_hidden(base, batch: PackedBatch, attention_mask=None, position_ids=None) -> torch.Tensor:
    """``[B, T, d]`` hidden states of a packed batch (optionally with a substituted mask or positions)."""
    with torch.no_grad():
        return base(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask if attention_mask is None else attention_mask,
            position_ids=batch.position_ids if position_ids is None else position_ids,
            use_cache=False,
        ).last_hidden_state


# ---------------------------------------------------------------- static metrics (test_static_metrics)

STATIC_METRIC_NAMES = ["cosine", "angular", "l1", "l2", "rel_l1", "rel_l2"]
STATIC_KINDS = ["block", "attn", "mlp"]


def static_metrics_with_hooks(
    loaded, batch, batch_size, metrics=STATIC_METRIC_NAMES, kinds=STATIC_KINDS, plan=PruningPlan(), mlp_norm="post_attention_layernorm"
):
    """The static metrics by hand (``reference.py``) from residuals captured with plain hooks while ``batch``
    runs through ``loaded`` under ``plan``, ``batch_size`` rows at a time (``mlp_norm``: the block's module whose
    input is ``resid_mid``, Gemma's ``pre_feedforward_layernorm``)."""
    masks = []
    with ResidualHooks(loaded.model.model.layers, mlp_norm) as hooks, torch.no_grad(), apply_plan(plan):
        for start in range(0, len(batch["input_ids"]), batch_size):
            ids = batch["input_ids"][start : start + batch_size]
            mask = batch["attention_mask"][start : start + batch_size]
            loaded.model.model(input_ids=ids, attention_mask=mask)
            masks.append(mask)
    return static_metrics_by_hand(hooks.captured, masks, loaded.n_blocks, metrics, kinds)


def assert_static_table_matches(table, expected, dataset, columns=CSV_COLUMNS):
    """An influence table with ``columns`` whose values are ``expected[(layer, sublayer, metric)]``."""
    assert list(table.columns) == columns
    assert len(table) == len(expected)
    for row in table.itertuples():
        key = (row.layer, row.sublayer, row.metric)
        assert row.value == pytest.approx(expected[key], rel=1e-5, abs=1e-9), key
        assert row.unit == (str(row.layer) if row.sublayer == "block" else f"{row.layer}.{row.sublayer}")
        assert math.isnan(row.stderr) and row.dataset == dataset


def check_static_invariants(table):
    """Every value finite and in its metric's range (cosine distance in [0, 2], angular in [0, 1], the rest > 0)."""
    by_metric = {m: g["value"] for m, g in table.groupby("metric")}
    assert ((by_metric["cosine"] >= 0) & (by_metric["cosine"] <= 2)).all()
    assert ((by_metric["angular"] >= 0) & (by_metric["angular"] <= 1)).all()
    for name in ["l1", "l2", "rel_l1", "rel_l2"]:
        assert (by_metric[name] > 0).all()
    assert table["value"].map(math.isfinite).all()
