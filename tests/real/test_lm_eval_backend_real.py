"""The lm-eval backend: lm-eval's HFLM on the loaded model, with the pruning plan applied inside it.

The real-model tests score one question of each of 10 subjects in both formats, unpruned and with a
plan, through pruneviz's own evaluator and through lm-eval, and require the same log-likelihoods and
predictions; the plan must change lm-eval's log-likelihoods (so it is applied inside HFLM).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
from helpers import user_task

from pruneviz import api
from pruneviz.cli import main
from pruneviz.core.gating import active_plan
from pruneviz.core.plan import PruningPlan
from pruneviz.evaluation import lm_eval_backend as backend
from pruneviz.evaluation import mmlu as mmlu_eval

# 10 subjects whose first questions are among the shortest (so the test stays fast), from all four categories
SUBSET = (
    "high school computer science,elementary mathematics,virology,world religions,abstract algebra,"
    "global facts,conceptual physics,human aging,medical genetics,human sexuality"
)
PLAN = "20.attn,21.attn"


@pytest.mark.real
def test_hflm_warnings_about_being_handed_the_loaded_model_are_dropped(smollm2, caplog, monkeypatch):
    logger = logging.getLogger(backend.HFLM.__module__)
    with caplog.at_level(logging.WARNING, logger=logger.name):
        backend.PlannedHFLM(smollm2)
        assert caplog.records == []
        monkeypatch.setattr(logger, "filters", [])
        backend.PlannedHFLM(smollm2)
    assert len([r for r in caplog.records if "pretrained" in r.getMessage()]) == 2


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


@pytest.mark.real
def test_any_lm_eval_task_by_name_or_file(smollm2, tmp_path):
    path = user_task(tmp_path)
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


@pytest.mark.real
def test_cli_lm_eval_mmlu_shows_lm_evals_bars_only(tmp_path, capfd):
    assert main(["evaluate", "--backend", "lm-eval", "--task", "mmlu:virology", "--per-subject", "1", "--no-cache"]) == 0
    err = capfd.readouterr().err
    assert "Running loglikelihood requests" in err
    assert "evaluate mmlu:virology" not in err and "Generating test split" not in err and "pretrained" not in err


@pytest.mark.real
def test_generation_runs_under_the_plan(smollm2):
    from lm_eval.api.instance import Instance

    def generate(plan: str) -> str:
        request = Instance("generate_until", {}, ("The capital of France is", {"until": ["\n"], "max_gen_toks": 6, "do_sample": False}), 0)
        return backend.PlannedHFLM(smollm2, PruningPlan.parse(plan, smollm2.n_blocks)).generate_until([request], disable_tqdm=True)[0]

    # removing block 1 breaks this small model; the same greedy request then continues differently
    assert generate("1") != generate("")
    assert active_plan() == PruningPlan()
