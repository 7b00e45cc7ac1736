"""lm-evaluation-harness as an evaluation backend: any lm-eval task, run with a pruning plan applied.

:class:`PlannedHFLM` is lm-eval's ``HFLM`` around a ``LoadedModel``'s own model and tokenizer (nothing
is reloaded, no tokenizer is rebuilt from a GGUF file) whose every forward pass (``_model_call`` for
log-likelihoods, ``_model_generate`` for generation) runs inside :func:`pruneviz.core.gating.apply_plan`.
Three evaluations use it, each returning an :class:`EvaluationResult` with ``settings["backend"] ==
"lm-eval"``:

* :func:`evaluate_mmlu`: pruneviz's MMLU questions through lm-eval's own MMLU task configs (letter
  format = the ``mmlu`` default template, cloze format = ``mmlu_continuation``), one task per subject,
  written at run time as local YAML + JSONL (``cais/mmlu`` layout) under the cache directory and run
  offline. The numbers are lm-eval's; they must equal :func:`pruneviz.evaluation.mmlu.evaluate_mmlu`'s.
* :func:`evaluate_perplexity`: pruneviz's perplexity windows scored by HFLM's log-likelihood code
  (the path ``loglikelihood_rolling`` takes for each window).
* :func:`evaluate_task`: any other lm-eval task: a built-in name, a task in a user folder, or a YAML file.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import logging
import math
import shutil
import tempfile
import time
from pathlib import Path

import lm_eval
import numpy as np
import pandas as pd
import torch
import yaml
from lm_eval.models.huggingface import HFLM

from ..core.cache import cache_dir, file_fingerprint
from ..core.errors import DataError, SettingError
from ..core.gating import apply_plan
from ..core.plan import PruningPlan
from ..core.progress import Progress
from ..data.mmlu import mmlu_fingerprint
from ..data.tasks import YAML_SUFFIXES
from ..engine.scoring import run_batched
from .mmlu import mmlu_items_result, mmlu_questions
from .perplexity import perplexity_result, perplexity_windows
from .results import EvaluationResult

LM_EVAL_TASKS = Path(lm_eval.__file__).parent / "tasks"
# lm-eval's MMLU configs per format: (folder, shared template, description pattern for subjects it lacks)
MMLU_TEMPLATES = {
    "letter": ("default", "_default_template_yaml", "The following are multiple choice questions (with answers) about {}.\n\n"),
    "cloze": ("continuation", "_continuation_template_yaml", "The following are questions (with answers) about {}.\n\n"),
}
# bootstrap draws for the standard errors of metrics without a closed form (lm-eval's default, 100,000, takes minutes)
BOOTSTRAP_ITERS = 1000


class _LoadedModelWarnings(logging.Filter):
    """Drops HFLM's two warnings about being handed a model object instead of a name: this module does so
    on purpose (no reload), in one process, so the advice they give (no accelerate launch) is already kept."""

    STARTS = ("`pretrained` model kwarg is not of type `str`", "Passed an already-initialized model through `pretrained`")

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.STARTS)


logging.getLogger(HFLM.__module__).addFilter(_LoadedModelWarnings())


class PlannedHFLM(HFLM):
    """lm-eval's ``HFLM`` over an already-loaded model, with every forward pass run under one plan.

    Args:
        loaded: a ``LoadedModel``; its model and tokenizer are used as they are (shared, not modified).
        plan: units pruned in every forward pass (validated against the model).
        stand_ins: recovery stand-ins for pruned units (see :func:`pruneviz.core.gating.apply_plan`).
        batch_size: sequences per forward pass.
        logits_cache: HFLM's reuse of one forward pass for the requests that share a context and score a
            one-token continuation (an MMLU letter prompt's four letters; lm-eval PR #1425, February 2024).
            ``False`` runs every request, as lm-eval did before; results are the same.

    Log-softmax runs in fp32 (``softmax_dtype``), as pruneviz's own evaluators do, so that bf16/fp16
    models give the same predictions in both backends.

    Raises:
        PlanError: the plan names a block the model lacks.
    """

    def __init__(
        self, loaded, plan: PruningPlan = PruningPlan(), stand_ins: dict | None = None, batch_size: int = 16,
        logits_cache: bool = True,
    ):
        plan.validate(loaded.n_blocks)
        super().__init__(
            pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=batch_size,
            max_length=loaded.max_length, softmax_dtype=torch.float32, logits_cache=logits_cache,
        )
        self.plan = plan
        self.stand_ins = dict(stand_ins or {})

    def _model_call(self, *args, **kwargs) -> torch.Tensor:
        """HFLM's forward pass (``[batch, seq]`` ids -> ``[batch, seq, vocab]`` logits) under the plan."""
        with apply_plan(self.plan, self.stand_ins):
            return super()._model_call(*args, **kwargs)

    def _model_generate(self, *args, **kwargs) -> torch.Tensor:
        """HFLM's generation (``[batch, seq]`` context -> ``[batch, seq']`` tokens) under the plan."""
        with apply_plan(self.plan, self.stand_ins):
            return super()._model_generate(*args, **kwargs)


def _simple_evaluate(model: PlannedHFLM, tasks: list[str], shots: int | None, manager, limit: int | None = None) -> dict:
    """``lm_eval.simple_evaluate`` with per-sample logs, offline task manager, and no global reseeding.

    lm-eval draws its own progress bars; those of ``datasets`` reading each task's file are switched off
    for the process (a process-wide switch that concurrent runs could not restore safely; pruneviz reads
    no other data through ``datasets``).
    """
    import datasets

    datasets.disable_progress_bars()
    return lm_eval.simple_evaluate(
        model=model, tasks=tasks, num_fewshot=shots, limit=limit, log_samples=True, task_manager=manager,
        bootstrap_iters=BOOTSTRAP_ITERS,
        # leave the process-wide random generators alone: the app's sessions share them
        random_seed=None, numpy_random_seed=None, torch_random_seed=None,
    )


def _settings(**extra) -> dict:
    return {"backend": "lm-eval", "lm_eval_version": lm_eval.__version__, **extra}


# --------------------------------------------------------------------------------------------- MMLU


def _subject_slug(subject: str) -> str:
    """``"high school biology"`` -> ``"high_school_biology"`` (cais/mmlu's and lm-eval's spelling)."""
    return "".join(c if c.isalnum() else "_" for c in subject.strip().lower())


def _description(subject: str, fmt: str) -> str:
    """lm-eval's description for a subject: from its per-subject config where it has one, else its pattern."""
    folder, _, pattern = MMLU_TEMPLATES[fmt]
    config = LM_EVAL_TASKS / "mmlu" / folder / f"mmlu_{_subject_slug(subject)}.yaml"
    if config.is_file():
        return yaml.safe_load(config.read_text())["description"]
    return pattern.format(subject)


def _jsonl(questions: pd.DataFrame) -> str:
    """Questions in the cais/mmlu layout: ``question, choices, answer, subject`` (underscored), one per line."""
    return "".join(
        json.dumps({"question": r.question, "choices": list(r.choices), "answer": int(r.answer), "subject": _subject_slug(r.subject)}) + "\n"
        for r in questions.itertuples()
    )


def _task_config(
    template: dict, name: str, description: str, shots: int, data_files: dict[str, str], datasets_cache: Path
) -> dict:
    """lm-eval's MMLU template pointed at local JSONL files (a ``dev`` file holds the ``shots`` exemplars)."""
    config = {**template, "task": name, "description": description, "num_fewshot": shots, "dataset_path": "json",
              "dataset_kwargs": {"data_files": data_files, "cache_dir": str(datasets_cache)}}
    if not shots:
        # zero-shot: there is no exemplar split to point the few-shot sampler at
        config.pop("fewshot_split", None)
        config.pop("fewshot_config", None)
    return config


def write_mmlu_tasks(scored: pd.DataFrame, exemplars: pd.DataFrame, shots: int, fmt: str) -> tuple[Path, dict[str, str]]:
    """Write one lm-eval task per subject: lm-eval's MMLU template over local JSONL files.

    The folder is named after a digest of its contents under ``<cache dir>/lm_eval_tasks`` and reused,
    so that repeated runs also reuse the ``datasets`` cache built from its files.

    Args:
        scored: question table (see :mod:`pruneviz.data.mmlu`) of the questions to score, subject then file order.
        exemplars: the few-shot exemplars (the first ``shots`` questions of each subject, in order);
            lm-eval's ``first_n`` sampler takes them in file order, as pruneviz does.
        shots: k of k-shot, written into each task's config (0 = zero-shot, no exemplar split).
        fmt: ``"letter"`` (lm-eval ``mmlu``) or ``"cloze"`` (lm-eval ``mmlu_continuation``).

    Returns:
        ``(folder, {subject: task name})`` in subject order of ``scored``.
    """
    folder_name, template_file, _ = MMLU_TEMPLATES[fmt]
    template = yaml.safe_load((LM_EVAL_TASKS / "mmlu" / folder_name / template_file).read_text())
    files = {}
    for subject, questions in scored.groupby("subject", sort=False):
        solved = exemplars[exemplars["subject"] == subject]
        files[subject] = {"test": _jsonl(questions), **({"dev": _jsonl(solved)} if shots else {})}
    digest = hashlib.sha256(json.dumps([lm_eval.__version__, fmt, shots, template, files], sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_dir() / "lm_eval_tasks" / f"mmlu-{fmt}-{digest}"
    names = {subject: f"pruneviz_mmlu_{fmt}_{_subject_slug(subject)}" for subject in files}
    if not (folder / "complete").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".staging-"))
        for subject, splits in files.items():
            data_files = {}
            for split, text in splits.items():
                (staging / f"{names[subject]}.{split}.jsonl").write_text(text)
                data_files[split] = str(folder / f"{names[subject]}.{split}.jsonl")
            config = _task_config(template, names[subject], _description(subject, fmt), shots, data_files, folder / "datasets")
            (staging / f"{names[subject]}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        (staging / "complete").write_text("")
        try:
            staging.rename(folder)
        except OSError:
            # another thread or process wrote the same folder first; its contents are identical
            shutil.rmtree(staging, ignore_errors=True)
    return folder, names


def _mmlu_items(out: dict, names: dict[str, str], scored: pd.DataFrame, fmt: str) -> pd.DataFrame:
    """Per-question results from lm-eval's samples, in the order of ``scored``.

    Columns: ``subject, category, answer, loglikelihoods`` (lm-eval's 4 log-likelihoods, nats),
    ``pred, correct`` (lm-eval's ``acc``), and ``loss`` (letter) or ``pred_norm, correct_norm`` (cloze).
    """
    rows = []
    for subject, questions in scored.groupby("subject", sort=False):
        samples = sorted(out["samples"][names[subject]], key=lambda s: s["doc_id"])
        if len(samples) != len(questions):
            raise DataError(
                f"lm-eval returned {len(samples)} results for the {len(questions)} '{subject}' questions; "
                f"delete {cache_dir() / 'lm_eval_tasks'} and rerun."
            )
        for label, question, sample in zip(questions.index, questions.itertuples(), samples):
            # doc_id i is the subject's i-th question, in the order _jsonl wrote them
            lls = np.array([ll for ll, _ in sample["filtered_resps"]], dtype=np.float64)
            row = {"row": label, "loglikelihoods": tuple(lls), "pred": int(lls.argmax()), "correct": float(sample["acc"])}
            if fmt == "letter":
                # 4-way cross-entropy of the gold letter over the letter log-likelihoods (nats)
                row["loss"] = float(np.logaddexp.reduce(lls) - lls[question.answer])
            else:
                row["pred_norm"] = int((lls / np.array([len(c) for c in question.choices])).argmax())
                row["correct_norm"] = float(sample["acc_norm"])
            rows.append(row)
    return scored[["subject", "category", "answer"]].join(pd.DataFrame(rows).set_index("row")).reset_index(drop=True)


def evaluate_mmlu(
    loaded,
    plan: PruningPlan,
    subset: str | None = None,
    fmt: str = "letter",
    shots: int = 0,
    per_subject: int | None = None,
    source: str = "mmlu",
    half: str = "all",
    batch_size: int = 16,
    progress: Progress | None = None,
    stand_ins: dict | None = None,
    logits_cache: bool = True,
) -> EvaluationResult:
    """Evaluate MMLU under ``plan`` with lm-eval (same questions and arguments as pruneviz's ``evaluate_mmlu``).

    Args:
        loaded: a ``LoadedModel``.
        plan: units to prune.
        subset: subject, category, comma list, or ``None`` = all (see :func:`pruneviz.data.mmlu.select_subjects`).
        fmt: ``"letter"`` or ``"cloze"``.
        shots: k of k-shot; the first k questions of each subject are lm-eval's exemplars (its ``dev``
            split) and are not scored.
        per_subject: score at most this many questions per subject.
        source: ``"mmlu"`` (embedded), ``"cais/mmlu"`` or a question file.
        half: ``"all"``, ``"fit"`` or ``"test"`` (see :func:`pruneviz.data.mmlu.mmlu_half`).
        batch_size: sequences per forward pass.
        progress: ``progress(done, total)`` in questions, before and after lm-eval runs; may raise ``Cancelled``.
        stand_ins: recovery stand-ins for pruned units.
        logits_cache: see :class:`PlannedHFLM` (``False``: one forward pass per letter, as lm-eval before PR #1425).

    Returns:
        :class:`EvaluationResult`: letter ``acc`` and ``loss``, cloze ``acc`` and ``acc_norm`` (lm-eval's
        per-question ``acc``/``acc_norm``, stderr as lm-eval computes it), per subject and per category;
        ``items`` also hold lm-eval's log-likelihoods.

    Raises:
        SettingError: unknown format.
        DataError: unknown subset, too many shots, no question left to score, malformed question file.
        PlanError: the plan names a block the model lacks.
    """
    from lm_eval.tasks import TaskManager

    plan.validate(loaded.n_blocks)
    started = time.perf_counter()
    exemplars, scored = mmlu_questions(fmt, source, subset, shots, per_subject, half)
    folder, names = write_mmlu_tasks(scored, exemplars, shots, fmt)
    if progress:
        progress(0, len(scored))
    model = PlannedHFLM(loaded, plan, stand_ins, batch_size, logits_cache)
    # the task configs carry num_fewshot, so lm-eval is given none to override them with
    out = _simple_evaluate(model, list(names.values()), None, TaskManager(include_path=str(folder), include_defaults=False))
    if progress:
        progress(len(scored), len(scored))
    note = f"first {shots} questions of each subject held out as exemplars and not scored" if shots else ""
    settings = _settings(
        format=fmt, shots=shots, per_subject=per_subject, source=source, half=half,
        data_fingerprint=mmlu_fingerprint(source), note=note, lm_eval_tasks=str(folder), batch_size=batch_size,
    )
    return mmlu_items_result(
        _mmlu_items(out, names, scored, fmt), fmt, f"mmlu:{subset}" if subset else "mmlu", str(plan),
        time.perf_counter() - started, settings,
    )


# --------------------------------------------------------------------------------------- perplexity


def evaluate_perplexity(
    loaded,
    plan: PruningPlan,
    corpus: str = "wiki",
    windows: int = 16,
    seq_len: int = 256,
    batch_size: int = 4,
    progress: Progress | None = None,
    stand_ins: dict | None = None,
) -> EvaluationResult:
    """Perplexity on pruneviz's windows (same arguments and result as its ``evaluate_perplexity``), scored by HFLM.

    Each ``[seq_len]`` window becomes one lm-eval request whose context is its first token and whose
    continuation is the other ``seq_len - 1`` tokens: the disjoint window ``loglikelihood_rolling``
    builds, scored by the same ``_loglikelihood_tokens`` (HFLM has no public entry point taking tokens,
    and re-tokenising decoded text would not give the same windows).

    Raises:
        SettingError: ``seq_len`` above the model's context or below 2.
        DataError: the corpus is too short or malformed.
        PlanError: the plan names a block the model lacks.
    """
    plan.validate(loaded.n_blocks)
    started = time.perf_counter()
    data, ids = perplexity_windows(loaded, corpus, windows, seq_len)
    requests = [(None, window[:1], window[1:]) for window in ids.tolist()]
    model = PlannedHFLM(loaded, plan, stand_ins, batch_size)

    def nll_sums(chunk) -> list[float]:
        return [-loglikelihood for loglikelihood, _ in model._loglikelihood_tokens(list(chunk), disable_tqdm=True)]

    sums = run_batched(requests, batch_size, nll_sums, progress)
    result = perplexity_result(plan, corpus, data, seq_len, sums, time.perf_counter() - started)
    result.settings.update(_settings(batch_size=batch_size))
    return result


# ------------------------------------------------------------------------------------ any lm-eval task


@functools.lru_cache(maxsize=1)
def _builtin_task_manager():
    """lm-eval's index of its built-in tasks (indexing ~15,000 configs takes ~15 s, so it is built once)."""
    from lm_eval.tasks import TaskManager

    return TaskManager()


def _task_manager(task: str, include_path: str | None):
    """A task manager that knows ``task``: a YAML file's, the user folder's, or lm-eval's built-in index.

    Raises:
        SettingError: no such task; the message suggests the closest names.
    """
    from lm_eval.tasks import TaskManager

    path = Path(task).expanduser()
    if path.suffix in YAML_SUFFIXES:
        if not path.is_file():
            raise SettingError(f"No lm-eval task file at {path}; give an existing task YAML or a task name.")
        return TaskManager(include_path=str(path.parent), include_defaults=False)
    if include_path:
        if not Path(include_path).is_dir():
            raise SettingError(f"The lm-eval task folder {include_path} does not exist; give an existing folder.")
        # the user's folder alone is indexed in a fraction of a second; lm-eval's built-ins take ~15 s
        manager = TaskManager(include_path=include_path, include_defaults=False)
        if task in manager.all_tasks:
            return manager
    manager = _builtin_task_manager()
    if task not in manager.all_tasks:
        close = difflib.get_close_matches(task, manager.all_tasks, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "run `lm_eval ls tasks` to list them."
        raise SettingError(f"'{task}' is not an lm-eval task, a task YAML file, wiki, mmlu or a text file; {hint}")
    return manager


def _metric_values(results: dict) -> tuple[dict[str, float], dict[str, float]]:
    """``({metric: value}, {metric: stderr})`` from one lm-eval results entry (keys ``"acc,none"``, ``"acc_stderr,none"``).

    A filter other than lm-eval's ``none`` is kept in the name (``"exact_match,strict-match"``).
    """
    metrics, stderr = {}, {}
    for key, value in results.items():
        name, _, kind = key.partition(",")
        if not kind or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        suffix = "" if kind == "none" else f",{kind}"
        if name.endswith("_stderr"):
            stderr[name.removesuffix("_stderr") + suffix] = float(value) if math.isfinite(value) else float("nan")
        else:
            metrics[name + suffix] = float(value)
    return metrics, stderr


def _task_items(out: dict, names: list[str], metric_names: set[str]) -> pd.DataFrame:
    """One row per lm-eval sample: ``task, doc_id`` and its per-sample metric values."""
    rows = []
    for name in names:
        for sample in sorted(out["samples"].get(name, []), key=lambda s: s["doc_id"]):
            values = {m: sample[m] for m in metric_names if isinstance(sample.get(m), (int, float))}
            rows.append({"task": name, "doc_id": sample["doc_id"], **values})
    return pd.DataFrame(rows)


def _task_result(out: dict, plan: PruningPlan, shots: int | None, limit: int | None, seconds: float) -> EvaluationResult:
    """An :class:`EvaluationResult` from one ``simple_evaluate`` run of one task or group."""
    leaves = [name for name in out["results"] if name in out["samples"]]
    nested = {name for subtasks in out.get("group_subtasks", {}).values() for name in subtasks}
    groups = [name for name in out.get("groups", {}) if name not in nested]
    top = groups[0] if groups else leaves[0]
    metrics, stderr = _metric_values(out["groups"][top] if groups else out["results"][top])
    per_task = []
    if groups:
        for name in leaves:
            values, _ = _metric_values(out["results"][name])
            per_task.append({"subject": name, "n": int(out["n-samples"][name]["effective"]), **values})
    return EvaluationResult(
        task=top,
        n=sum(int(out["n-samples"][name]["effective"]) for name in leaves),
        metrics=metrics,
        stderr=stderr,
        plan=str(plan),
        seconds=seconds,
        settings=_settings(shots=shots, limit=limit, n_shot=out.get("n-shot", {}), versions=out.get("versions", {})),
        items=_task_items(out, leaves, {m.partition(",")[0] for m in metrics}),
        per_subject=pd.DataFrame(per_task),
    )


def task_fingerprint(task: str) -> str:
    """Cache-key part for an lm-eval task: its name or YAML file digest, and the lm-eval version.

    The task's dataset is not fingerprinted (lm-eval fetches it); a changed dataset under an unchanged
    name needs ``use_cache=False``.
    """
    path = Path(task).expanduser()
    identity = file_fingerprint(path) if path.suffix in YAML_SUFFIXES and path.is_file() else task
    return f"{identity}@lm-eval-{lm_eval.__version__}"


def evaluate_task(
    loaded,
    plan: PruningPlan,
    task: str,
    shots: int | None = None,
    limit: int | None = None,
    include_path: str | None = None,
    batch_size: int = 16,
    progress: Progress | None = None,
    stand_ins: dict | None = None,
) -> EvaluationResult:
    """Run one lm-eval task or group under ``plan``.

    Args:
        loaded: a ``LoadedModel``.
        plan: units to prune.
        task: an lm-eval task or group name (built-in, or in ``include_path``), or a task YAML file.
        shots: few-shot examples (``None`` = the task's default).
        limit: score at most this many documents per task (``None`` = all).
        include_path: a folder of the user's own task YAMLs, searched before lm-eval's built-in tasks.
        batch_size: sequences per forward pass.
        progress: ``progress(done, total)`` called once before (0, 1) and once after (1, 1) lm-eval runs.
        stand_ins: recovery stand-ins for pruned units.

    Returns:
        :class:`EvaluationResult`: ``metrics``/``stderr`` as lm-eval reports them (``"acc,none"`` ->
        ``acc``), ``n`` documents scored, ``items`` one row per document, ``per_subject`` one row per
        subtask of a group (column ``subject`` = subtask name).

    Raises:
        SettingError: unknown task (with the closest names), missing task file or folder.
        DataError: lm-eval could not build or run the task (e.g. its dataset is not reachable offline).
        PlanError: the plan names a block the model lacks.
    """
    plan.validate(loaded.n_blocks)
    manager = _task_manager(task, include_path)
    started = time.perf_counter()
    if progress:
        progress(0, 1)
    model = PlannedHFLM(loaded, plan, stand_ins, batch_size)
    try:
        out = _simple_evaluate(model, [str(Path(task).expanduser()) if Path(task).suffix in YAML_SUFFIXES else task], shots, manager, limit)
    except Exception as error:
        # lm-eval fails in many ways (dataset not cached offline, bad config, missing extra package)
        raise DataError(f"lm-eval could not run task '{task}' ({type(error).__name__}: {error}); check its dataset and config.") from error
    if progress:
        progress(1, 1)
    return _task_result(out, plan, shots, limit, time.perf_counter() - started)


__all__ = [
    "PlannedHFLM", "write_mmlu_tasks", "evaluate_mmlu", "evaluate_perplexity",
    "task_fingerprint", "evaluate_task",
]
