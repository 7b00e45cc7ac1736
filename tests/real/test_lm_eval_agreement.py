"""pruneviz's MMLU scores equal lm-evaluation-harness's on the same questions, prompt and model.

The lm-eval tasks are written to a temporary directory from lm-eval's own MMLU configs (its default
letter template and its ``mmlu_continuation`` cloze template, with each subject's description),
pointed at a local JSONL of the chosen questions in the ``cais/mmlu`` layout, and run fully offline
with ``HFLM`` wrapping the already-loaded model.
"""

from __future__ import annotations

import json
from pathlib import Path

import lm_eval
import numpy as np
import pytest
import torch
import yaml

from pruneviz.core.plan import PruningPlan
from pruneviz.data.mmlu import load_mmlu, split_exemplars
from pruneviz.evaluation import mmlu as mmlu_eval

pytestmark = pytest.mark.real

LM_EVAL_MMLU = Path(lm_eval.__file__).parent / "tasks" / "mmlu"


def _write_tasks(tmp_path: Path, scored, template: str, flavour: str) -> list[str]:
    """One lm-eval task per subject, sharing lm-eval's template with a local data file."""
    base = yaml.safe_load((LM_EVAL_MMLU / flavour / template).read_text())
    base["dataset_path"] = "json"
    for key in ("fewshot_split", "fewshot_config"):  # zero-shot; the local file has only a test split
        base.pop(key, None)
    names = []
    for subject, rows in scored.groupby("subject", sort=False):
        slug = subject.replace(" ", "_")
        data = tmp_path / f"{flavour}_{slug}.jsonl"
        data.write_text("".join(
            json.dumps({"question": r.question, "subject": slug, "choices": list(r.choices), "answer": int(r.answer)}) + "\n"
            for r in rows.itertuples()
        ))
        subject_config = yaml.safe_load((LM_EVAL_MMLU / flavour / f"mmlu_{slug}.yaml").read_text())
        name = f"pv_{flavour}_{slug}"
        config = {**base, "task": name, "description": subject_config["description"],
                  "dataset_kwargs": {"data_files": {"test": str(data)}}}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
        names.append(name)
    return names


def _run_lm_eval(loaded, tmp_path, names):
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    model = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=8)
    out = lm_eval.simple_evaluate(
        model=model, tasks=names, num_fewshot=0, log_samples=True,
        task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False),
    )
    return out


def _lm_eval_loglikelihoods(out, names):
    """``[n, 4]`` log-likelihoods of lm-eval's samples (subject order of ``names``, then doc order)."""
    rows, accs, extra = [], [], []
    for name in names:
        for sample in sorted(out["samples"][name], key=lambda s: s["doc_id"]):
            rows.append([ll for ll, _ in sample["filtered_resps"]])
            accs.append(sample["acc"])
            extra.append(sample.get("acc_norm"))
            # resps hold the same numbers, one request per choice
            assert [r[0][0] for r in sample["resps"]] == rows[-1]
    return np.array(rows, dtype=np.float64), np.array(accs), extra


def test_letter_format_matches_lm_eval(smollm2, tmp_path):
    subjects = "anatomy,high school geography"
    _, scored = split_exemplars(load_mmlu("mmlu"), ["anatomy", "high school geography"], 0, 10)
    assert len(scored) == 20
    result = mmlu_eval.evaluate_mmlu(smollm2, PruningPlan(), subjects, "letter", 0, per_subject=10, batch_size=8)
    assert result.n == 20
    ours = mmlu_eval.choice_scores(result.items).numpy()  # [20, 4] log p(" A".." D" | prompt)

    names = _write_tasks(tmp_path, scored, "_default_template_yaml", "default")
    out = _run_lm_eval(smollm2, tmp_path, names)
    theirs, accs, _ = _lm_eval_loglikelihoods(out, names)

    # the items follow the same question order (subject, then file order)
    assert list(result.items["subject"]) == list(scored["subject"])
    assert list(result.items["answer"]) == list(scored["answer"])
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
    assert list(result.items["pred"]) == list(theirs.argmax(1))
    assert list(result.items["correct"]) == list(accs)
    # MMLU loss: the 4-way cross-entropy of the gold letter, from lm-eval's log-likelihoods
    gold = scored["answer"].to_numpy()
    their_loss = -(torch.log_softmax(torch.from_numpy(theirs), 1)[torch.arange(20), torch.tensor(gold)]).numpy()
    np.testing.assert_allclose(result.items["loss"].to_numpy(), their_loss, atol=1e-4, rtol=0)
    assert result.metrics["loss"] == pytest.approx(their_loss.mean(), abs=1e-4)
    # aggregates: overall and per subject, as lm-eval reports them
    assert result.metrics["acc"] == pytest.approx(accs.mean())
    for name, subject in zip(names, ["anatomy", "high school geography"]):
        row = result.per_subject.set_index("subject").loc[subject]
        assert row["n"] == 10
        assert row["acc"] == pytest.approx(out["results"][name]["acc,none"])
    assert result.stderr["acc"] == pytest.approx(np.sqrt(result.metrics["acc"] * (1 - result.metrics["acc"]) / 19))
    categories = result.per_category.set_index("category")
    assert set(categories.index) == {"STEM", "social sciences"} and (categories["n"] == 10).all()


def test_cloze_format_matches_lm_eval(smollm2, tmp_path):
    subjects = ["astronomy", "world religions"]
    _, scored = split_exemplars(load_mmlu("mmlu"), subjects, 0, 2)
    result = mmlu_eval.evaluate_mmlu(smollm2, PruningPlan(), ",".join(subjects), "cloze", 0, per_subject=2, batch_size=8)
    assert result.n == 4 and set(result.metrics) == {"acc", "acc_norm"}
    ours = mmlu_eval.choice_scores(result.items).numpy()

    names = _write_tasks(tmp_path, scored, "_continuation_template_yaml", "continuation")
    out = _run_lm_eval(smollm2, tmp_path, names)
    theirs, accs, acc_norms = _lm_eval_loglikelihoods(out, names)

    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
    assert list(result.items["pred"]) == list(theirs.argmax(1))
    lengths = np.array([[len(c) for c in row.choices] for row in scored.itertuples()], dtype=np.float64)
    assert list(result.items["pred_norm"]) == list((theirs / lengths).argmax(1))
    assert list(result.items["correct"]) == list(accs)
    assert list(result.items["correct_norm"]) == list(acc_norms)
    assert result.metrics["acc"] == pytest.approx(accs.mean())
    assert result.metrics["acc_norm"] == pytest.approx(np.mean(acc_norms))


@pytest.fixture(scope="module")
def capable():
    """The embedded Qwen2.5-Coder-1.5B in float32 (lm-eval takes its log-softmax in the model's dtype), freed after this module."""
    from pruneviz.core.loading import load_model

    return load_model("qwen2.5-coder-1.5b", device="cpu", dtype="float32")


def test_letter_predictions_of_the_capable_model_match_lm_eval(capable, tmp_path):
    """On the model whose MMLU answers carry signal, pruneviz's letter scores and predictions are lm-eval's."""
    subjects = ["high school geography", "marketing"]
    _, scored = split_exemplars(load_mmlu("mmlu"), subjects, 0, 3)
    result = mmlu_eval.evaluate_mmlu(capable, PruningPlan(), ",".join(subjects), "letter", 0, per_subject=3, batch_size=6)
    ours = mmlu_eval.choice_scores(result.items).numpy()
    names = _write_tasks(tmp_path, scored, "_default_template_yaml", "default")
    theirs, accs, _ = _lm_eval_loglikelihoods(_run_lm_eval(capable, tmp_path, names), names)
    np.testing.assert_allclose(ours, theirs, atol=2e-4, rtol=0)
    assert list(result.items["pred"]) == list(theirs.argmax(1))
    assert list(result.items["correct"]) == list(accs)
