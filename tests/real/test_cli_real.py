"""The command-line interface on the embedded model, run as ``python -m pruneviz`` in subprocesses.

Subprocesses inherit ``PRUNEVIZ_CACHE_DIR`` from the session fixture, so they reuse the converted model.
"""

from __future__ import annotations

import csv
import json
import math

import pytest
from conftest import REPO
from helpers import assert_one_line_error, run_pruneviz

from pruneviz.cli import main
from pruneviz.data.mmlu import SUBJECT_CATEGORY


@pytest.mark.real
class TestOnEmbeddedModel:
    """Each test starts one subprocess that loads the embedded model (a few seconds)."""

    @pytest.fixture(autouse=True)
    def _converted(self, smollm2):
        """Make sure the dequantised model exists before the subprocesses look for it."""

    def test_info_json(self):
        result = run_pruneviz("info", "--json")
        assert result.returncode == 0, result.stderr
        info = json.loads(result.stdout)
        assert (info["n_blocks"], info["hidden_size"], info["n_heads"], info["n_kv_heads"]) == (30, 576, 9, 3)
        assert info["params_attn"] == 885_312  # q 576², k, v 576x192, o 576² + input_layernorm 576
        assert info["params_mlp"] == 2_654_784  # gate, up, down 576x1536 + post_attention_layernorm 576
        assert info["tied_embeddings"] is True and info["family"] == "llama" and info["model"] == "smollm2"

    def test_a_repeated_metric_or_task_is_computed_and_written_once(self, tmp_path):
        out = tmp_path / "curve.csv"
        result = run_pruneviz("curve", "--metric", "cosine, cosine", "--tasks", "wiki,wiki,mmlu:high_school_physics,mmlu:High School Physics",
                      "--steps", "1", "--samples", "2", "--seq-len", "32", "--windows", "1", "--window-len", "32",
                      "--per-subject", "1", "--out", str(out))
        assert result.returncode == 0, result.stderr
        rows = [(r["ranking"], r["step"], r["task"], r["metric"]) for r in csv.DictReader(out.open())]
        # steps 0 and 1, one ranking, two tasks (wiki: perplexity and nll, and from step 1 the KL from the unpruned
        # model), each row once
        assert len(rows) == len(set(rows)) and {r[0] for r in rows} == {"cosine@wiki"}
        assert {r[2] for r in rows} == {"wiki", "mmlu:high school physics"}
        assert sorted(r[1:] for r in rows if r[2] == "wiki") == [
            ("0", "wiki", "nll"), ("0", "wiki", "perplexity"), ("1", "wiki", "kl"), ("1", "wiki", "nll"), ("1", "wiki", "perplexity")
        ]

    def test_influence_example(self, tmp_path, smollm2):
        out = tmp_path / "infl.csv"
        result = run_pruneviz("influence", "--model", "smollm2", "--data", "wiki", "--metrics", "cosine,rel_l2",
                      "--granularity", "sublayer", "--samples", "8", "--seq-len", "128", "--dtype", "float32", "--out", str(out))
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        with open(out, newline="") as handle:
            header = handle.readline().strip()
            rows = list(csv.DictReader(handle, fieldnames=header.split(",")))
        assert header == "unit,layer,sublayer,metric,value,stderr,dataset,dtype"
        assert len(rows) == 2 * 30 * 2
        expected_units = {f"{i}.{s}" for i in range(30) for s in ("attn", "mlp")}
        assert {r["unit"] for r in rows} == expected_units
        assert {(r["unit"], r["metric"]) for r in rows} == {(u, m) for u in expected_units for m in ("cosine", "rel_l2")}
        for row in rows:
            value = float(row["value"])
            assert math.isfinite(value) and value >= 0
            assert row["unit"] == f"{row['layer']}.{row['sublayer']}"
            assert row["stderr"] == "" and row["dataset"] == "wiki (calibration half)" and row["dtype"] == "float32"
            if row["metric"] == "cosine":
                assert value <= 2
        # the CSV holds the library's table: the in-process call with the same settings finds the
        # subprocess's result under the same cache key (same model fingerprint, data and parameters)
        from pruneviz import api

        table = api.influence(smollm2, "wiki", ["cosine", "rel_l2"], "sublayer", samples=8, seq_len=128)
        ours = {(r.unit, r.metric): r.value for r in table.itertuples()}
        assert len(ours) == len(rows)
        for row in rows:
            assert float(row["value"]) == pytest.approx(ours[(row["unit"], row["metric"])], rel=1e-12)

    def test_evaluate_example(self, tmp_path):
        out = tmp_path / "out.json"
        result = run_pruneviz("evaluate", "--model", "smollm2", "--prune", "20.attn,21.attn", "--task", "mmlu",
                      "--format", "cloze", "--per-subject", "1", "--json", str(out))
        assert result.returncode == 0, result.stderr
        document = json.loads(out.read_text())
        assert {"task", "n", "metrics", "per_subject", "per_category", "prune", "recover", "seconds"} <= set(document)
        assert document["task"] == "mmlu" and document["n"] == 57
        # accuracy, and what the plan changed in the answers against the unpruned model on the same questions
        assert set(document["metrics"]) == {"acc", "acc_norm", "flips", "flips_lost", "flips_gained", "kl"}
        assert set(document["stderr"]) == set(document["metrics"])
        assert all(0 <= v <= 1 for name, v in document["metrics"].items() if name != "kl") and document["metrics"]["kl"] >= 0
        assert document["prune"] == "20.attn,21.attn" and document["recover"] is None
        assert document["seconds"] > 0
        assert set(document["per_subject"]) == set(SUBJECT_CATEGORY)
        assert all(entry["n"] == 1 for entry in document["per_subject"].values())
        categories = document["per_category"]
        assert set(categories) == {"STEM", "humanities", "social sciences", "other"}
        assert sum(entry["n"] for entry in categories.values()) == 57
        correct = sum(entry["acc"] for entry in document["per_subject"].values())
        assert document["metrics"]["acc"] == pytest.approx(correct / 57)
        assert document["settings"]["format"] == "cloze"
        assert "n=57" in result.stdout and "prune='20.attn,21.attn'" in result.stdout

    @pytest.mark.parametrize(
        ("args", "fragments"),
        [
            (("evaluate", "--prune", "40.attn", "--task", "wiki", "--windows", "1", "--seq-len", "8"), ("'40.attn'", "0-29")),
            (("influence", "--metrics", "cosine,cosinus", "--samples", "1", "--seq-len", "8", "--out", "never.csv"), ("'cosinus'",)),
        ],
        ids=["plan-out-of-range", "unknown-metric"],
    )
    def test_bad_input_is_one_line_error(self, args, fragments, tmp_path):
        result = run_pruneviz(*args)
        assert_one_line_error(result, *fragments)
        assert result.stdout == ""
        assert not (REPO / "never.csv").exists()


@pytest.mark.real
def test_json_written_through_a_symbolic_link_keeps_the_link(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("{}")
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    assert main(["evaluate", "--device", "cpu", "--windows", "1", "--window-len", "8", "--json", str(link)]) == 0
    assert link.is_symlink() and json.loads(target.read_text())["task"] == "wiki"
