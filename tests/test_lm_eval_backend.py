"""The lm-eval backend: lm-eval's HFLM on the loaded model, with the pruning plan applied inside it.

The real-model tests score one question of each of 10 subjects in both formats, unpruned and with a
plan, through pruneviz's own evaluator and through lm-eval, and require the same log-likelihoods and
predictions; the plan must change lm-eval's log-likelihoods (so it is applied inside HFLM).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lm_eval
import numpy as np
import pandas as pd
import pytest
import yaml

from pruneviz import api
from pruneviz.cli import build_parser, main
from pruneviz.core.errors import SettingError
from pruneviz.core.gating import active_plan
from pruneviz.core.plan import PruningPlan
from pruneviz.data.mmlu import load_mmlu, split_exemplars
from pruneviz.evaluation import lm_eval_backend as backend
from pruneviz.evaluation import mmlu as mmlu_eval

LM_EVAL_MMLU = Path(lm_eval.__file__).parent / "tasks" / "mmlu"
# 10 subjects whose first questions are among the shortest (so the test stays fast), from all four categories
SUBSET = (
    "high school computer science,elementary mathematics,virology,world religions,abstract algebra,"
    "global facts,conceptual physics,human aging,medical genetics,human sexuality"
)
PLAN = "20.attn,21.attn"


def test_mmlu_tasks_are_lm_evals_templates_over_local_files(tmp_path):
    table = load_mmlu("mmlu")
    exemplars, scored = split_exemplars(table, ["anatomy", "high school geography"], 1, 2)
    folder, names = backend.write_mmlu_tasks(scored, exemplars, 1, "letter")
    assert list(names) == list(dict.fromkeys(scored["subject"]))  # file order
    template = yaml.safe_load((LM_EVAL_MMLU / "default" / "_default_template_yaml").read_text())
    config = yaml.safe_load((folder / f"{names['anatomy']}.yaml").read_text())
    for key in ("output_type", "doc_to_text", "doc_to_choice", "doc_to_target", "fewshot_split", "fewshot_config", "metric_list"):
        assert config[key] == template[key]
    lm_eval_subject = yaml.safe_load((LM_EVAL_MMLU / "default" / "mmlu_anatomy.yaml").read_text())
    assert config["description"] == lm_eval_subject["description"]
    assert config["dataset_path"] == "json" and config["num_fewshot"] == 1
    test_rows = [json.loads(line) for line in Path(config["dataset_kwargs"]["data_files"]["test"]).read_text().splitlines()]
    dev_rows = [json.loads(line) for line in Path(config["dataset_kwargs"]["data_files"]["dev"]).read_text().splitlines()]
    assert [set(row) for row in test_rows] == [{"question", "choices", "answer", "subject"}] * 2
    assert [r["question"] for r in test_rows] == list(scored[scored["subject"] == "anatomy"]["question"])
    assert [r["question"] for r in dev_rows] == list(exemplars[exemplars["subject"] == "anatomy"]["question"])
    assert test_rows[0]["subject"] == "anatomy" and test_rows[0]["answer"] in range(4)
    # the same questions again reuse the folder; zero-shot has no exemplar split
    assert backend.write_mmlu_tasks(scored, exemplars, 1, "letter")[0] == folder
    zero_folder, _ = backend.write_mmlu_tasks(scored, exemplars.iloc[:0], 0, "cloze")
    zero = yaml.safe_load((zero_folder / "pruneviz_mmlu_cloze_anatomy.yaml").read_text())
    assert "fewshot_split" not in zero and set(zero["dataset_kwargs"]["data_files"]) == {"test"}
    assert zero["doc_to_text"] == yaml.safe_load((LM_EVAL_MMLU / "continuation" / "_continuation_template_yaml").read_text())["doc_to_text"]


@pytest.mark.real
def test_hflm_warnings_about_being_handed_the_loaded_model_are_dropped(smollm2, caplog, monkeypatch):
    logger = logging.getLogger(backend.HFLM.__module__)
    with caplog.at_level(logging.WARNING, logger=logger.name):
        backend.PlannedHFLM(smollm2)
        assert caplog.records == []
        monkeypatch.setattr(logger, "filters", [])
        backend.PlannedHFLM(smollm2)
    assert len([r for r in caplog.records if "pretrained" in r.getMessage()]) == 2


def test_unknown_backend_is_a_setting_error(tiny):
    with pytest.raises(SettingError, match="Backend 'lmeval' is unknown"):
        api.evaluate(tiny, PruningPlan(), "wiki", backend="lmeval")


def test_cli_accepts_backend():
    args = build_parser().parse_args(["evaluate", "--task", "mmlu", "--backend", "lm-eval"])
    assert args.backend == "lm-eval"
    assert build_parser().parse_args(["evaluate"]).backend == "pruneviz"


@pytest.mark.real
@pytest.mark.parametrize("fmt", ["letter", "cloze"])
def test_mmlu_agrees_with_pruneviz_unpruned_and_pruned(smollm2, fmt):
    theirs = {}
    for plan in (PruningPlan(), PruningPlan.parse(PLAN, smollm2.n_blocks)):
        ours = mmlu_eval.evaluate_mmlu(smollm2, plan, SUBSET, fmt, 0, per_subject=1)
        result = backend.evaluate_mmlu(smollm2, plan, SUBSET, fmt, 0, per_subject=1)
        theirs[str(plan)] = np.array(result.items["loglikelihoods"].tolist())  # [10, 4] nats
        assert result.n == ours.n == 10 and result.plan == str(plan)
        assert result.settings["backend"] == "lm-eval" and result.settings["format"] == fmt
        np.testing.assert_allclose(theirs[str(plan)], mmlu_eval.choice_scores(ours.items).numpy(), atol=1e-4, rtol=0)
        assert list(result.items["subject"]) == list(ours.items["subject"])
        assert list(result.items["pred"]) == list(ours.items["pred"])
        assert list(result.items["correct"]) == list(ours.items["correct"])
        assert result.metrics == pytest.approx(ours.metrics, abs=1e-5)
        assert result.stderr == pytest.approx(ours.stderr, abs=1e-5, nan_ok=True)
        if fmt == "cloze":
            assert list(result.items["pred_norm"]) == list(ours.items["pred_norm"])
        pd.testing.assert_frame_equal(result.per_subject, ours.per_subject, atol=1e-5)
        pd.testing.assert_frame_equal(result.per_category, ours.per_category, atol=1e-5)
    # the plan reached the forward passes inside HFLM, and left nothing behind
    assert np.abs(theirs[PLAN] - theirs[""]).max() > 1e-2
    assert active_plan() == PruningPlan()


@pytest.mark.real
def test_without_logits_cache_every_letter_is_its_own_forward_row(smollm2, monkeypatch):
    """lm-eval's logits cache (the bench's reference point) scores a letter prompt's four letters with one
    forward row; without it, four rows, and the same log-likelihoods."""
    rows = []
    model_call = backend.PlannedHFLM._model_call

    def counting_call(self, inps, *args, **kwargs):
        rows.append(inps.shape[0])
        return model_call(self, inps, *args, **kwargs)

    monkeypatch.setattr(backend.PlannedHFLM, "_model_call", counting_call)
    scores = {}
    for logits_cache in (True, False):
        rows.clear()
        result = backend.evaluate_mmlu(smollm2, PruningPlan(), "virology,global facts", "letter", 0, per_subject=2,
                                       logits_cache=logits_cache)
        scores[logits_cache] = np.array(result.items["loglikelihoods"].tolist())  # [4 questions, 4 letters] nats
        assert sum(rows) == (4 if logits_cache else 16)
    np.testing.assert_allclose(scores[False], scores[True], atol=1e-5, rtol=0)


@pytest.mark.real
def test_perplexity_agrees_and_is_cached_per_backend(smollm2):
    plan = PruningPlan.parse(PLAN, smollm2.n_blocks)
    ours = api.evaluate(smollm2, plan, "wiki", windows=2, seq_len=48)
    theirs = api.evaluate(smollm2, plan, "wiki", windows=2, seq_len=48, backend="lm-eval")
    assert not theirs.from_cache  # a different cache entry from the pruneviz result
    assert (ours.settings["backend"], theirs.settings["backend"]) == ("pruneviz", "lm-eval")
    assert theirs.metrics["perplexity"] == pytest.approx(ours.metrics["perplexity"], rel=1e-5)
    np.testing.assert_allclose(theirs.items["nll_sum"], ours.items["nll_sum"], atol=1e-3, rtol=0)
    again = api.evaluate(smollm2, plan, "wiki", windows=2, seq_len=48, backend="lm-eval")
    assert again.from_cache and again.metrics == theirs.metrics


def _user_task(folder: Path) -> Path:
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


@pytest.mark.real
def test_any_lm_eval_task_by_name_or_file(smollm2, tmp_path):
    path = _user_task(tmp_path)
    by_name = backend.evaluate_task(smollm2, PruningPlan(), "pruneviz_test_tiny", include_path=str(tmp_path))
    assert by_name.task == "pruneviz_test_tiny" and by_name.n == 2
    assert set(by_name.metrics) == {"acc", "acc_norm"} and set(by_name.stderr) == {"acc", "acc_norm"}
    assert by_name.settings["backend"] == "lm-eval" and len(by_name.items) == 2
    by_file = api.evaluate(smollm2, PruningPlan.parse("0", smollm2.n_blocks), str(path), backend="lm-eval")
    assert by_file.task == "pruneviz_test_tiny" and by_file.plan == "0" and by_file.n == 2


@pytest.mark.real
def test_cli_evaluate_with_lm_eval_backend(tmp_path):
    out = tmp_path / "result.json"
    assert main(["evaluate", "--backend", "lm-eval", "--task", "wiki", "--windows", "2", "--window-len", "32",
                 "--prune", "29.attn", "--json", str(out)]) == 0
    document = json.loads(out.read_text())
    assert document["settings"]["backend"] == "lm-eval" and document["prune"] == "29.attn" and document["n"] == 2


def test_lm_eval_draws_progress_for_its_own_tasks_only(tmp_path):
    text = tmp_path / "docs.txt"
    text.write_text("one\n\ntwo")
    assert [api.lm_eval_draws_progress(task, "lm-eval") for task in ("mmlu", "mmlu:STEM", "hellaswag", "wiki", str(text))] == [
        True, True, True, False, False]
    assert not api.lm_eval_draws_progress("mmlu", "pruneviz")


@pytest.mark.real
def test_cli_lm_eval_mmlu_shows_lm_evals_bars_only(tmp_path, capfd):
    assert main(["evaluate", "--backend", "lm-eval", "--task", "mmlu:virology", "--per-subject", "1", "--no-cache"]) == 0
    err = capfd.readouterr().err
    assert "Running loglikelihood requests" in err
    assert "evaluate mmlu:virology" not in err and "Generating test split" not in err and "pretrained" not in err


def test_unknown_task_names_the_closest(tiny, tmp_path, monkeypatch):
    from lm_eval.tasks import TaskManager

    _user_task(tmp_path)
    # a small stand-in for lm-eval's built-in index, which takes ~15 s to build
    monkeypatch.setattr(backend, "_builtin_task_manager", lambda: TaskManager(include_path=str(tmp_path), include_defaults=False))
    with pytest.raises(SettingError, match="'pruneviz_test_tini' is not an lm-eval task.*did you mean pruneviz_test_tiny"):
        backend.evaluate_task(tiny, PruningPlan(), "pruneviz_test_tini")
    with pytest.raises(SettingError, match="No lm-eval task file"):
        backend.evaluate_task(tiny, PruningPlan(), "missing/task.yaml")
    with pytest.raises(SettingError, match="task folder"):
        backend.evaluate_task(tiny, PruningPlan(), "pruneviz_test_tiny", include_path=str(tmp_path / "missing"))


@pytest.mark.real
def test_generation_runs_under_the_plan(smollm2):
    from lm_eval.api.instance import Instance

    def generate(plan: str) -> str:
        request = Instance("generate_until", {}, ("The capital of France is", {"until": ["\n"], "max_gen_toks": 6, "do_sample": False}), 0)
        return backend.PlannedHFLM(smollm2, PruningPlan.parse(plan, smollm2.n_blocks)).generate_until([request], disable_tqdm=True)[0]

    # removing block 1 breaks this small model; the same greedy request then continues differently
    assert generate("1") != generate("")
    assert active_plan() == PruningPlan()
