"""The lm-eval backend without the embedded model: MMLU tasks from lm-eval's templates over local files,
settings and task names, progress bars. The embedded model: ``tests/real/test_lm_eval_backend_real.py``."""

from __future__ import annotations

import json
from pathlib import Path

import lm_eval
import pytest
import yaml
from helpers import user_task

from pruneviz import api
from pruneviz.cli import build_parser
from pruneviz.core.errors import SettingError
from pruneviz.core.plan import PruningPlan
from pruneviz.data.mmlu import load_mmlu, split_exemplars
from pruneviz.evaluation import lm_eval_backend as backend

LM_EVAL_MMLU = Path(lm_eval.__file__).parent / "tasks" / "mmlu"


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


def test_unknown_backend_is_a_setting_error(tiny):
    with pytest.raises(SettingError, match="Backend 'lmeval' is unknown"):
        api.evaluate(tiny, PruningPlan(), "wiki", backend="lmeval")


def test_cli_accepts_backend():
    args = build_parser().parse_args(["evaluate", "--task", "mmlu", "--backend", "lm-eval"])
    assert args.backend == "lm-eval"
    assert build_parser().parse_args(["evaluate"]).backend == "pruneviz"


def test_lm_eval_draws_progress_for_its_own_tasks_only(tmp_path):
    text = tmp_path / "docs.txt"
    text.write_text("one\n\ntwo")
    assert [api.lm_eval_draws_progress(task, "lm-eval") for task in ("mmlu", "mmlu:STEM", "hellaswag", "wiki", str(text))] == [
        True, True, True, False, False]
    assert not api.lm_eval_draws_progress("mmlu", "pruneviz")


def test_unknown_task_names_the_closest(tiny, tmp_path, monkeypatch):
    from lm_eval.tasks import TaskManager

    user_task(tmp_path)
    # a small stand-in for lm-eval's built-in index, which takes ~15 s to build
    monkeypatch.setattr(backend, "_builtin_task_manager", lambda: TaskManager(include_path=str(tmp_path), include_defaults=False))
    with pytest.raises(SettingError, match="'pruneviz_test_tini' is not an lm-eval task.*did you mean pruneviz_test_tiny"):
        backend.evaluate_task(tiny, PruningPlan(), "pruneviz_test_tini")
    with pytest.raises(SettingError, match="No lm-eval task file"):
        backend.evaluate_task(tiny, PruningPlan(), "missing/task.yaml")
    with pytest.raises(SettingError, match="task folder"):
        backend.evaluate_task(tiny, PruningPlan(), "pruneviz_test_tiny", include_path=str(tmp_path / "missing"))
