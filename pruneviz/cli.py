"""Command-line interface: ``python -m pruneviz {info,influence,evaluate,curve,recover,export} ...``.

A thin layer over :mod:`pruneviz.api`: parse arguments, show tqdm progress, write files. Errors print
one line on stderr and exit with status 2 (a traceback only with ``--debug``).

Launched by ``torchrun --nproc_per_node N -m pruneviz ...`` (or ``accelerate launch``), the processes
join one group (:mod:`pruneviz.core.distributed`): ``influence`` with Shapley metrics and ``curve`` split
their work over them, and only rank 0 shows progress, prints and writes files.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import NoReturn

from .core import distributed
from .core.errors import PrunevizError, SettingError
from .core.formatting import shown

log = logging.getLogger("pruneviz")


class _TqdmProgress:
    """A ``progress(done, total)`` callback drawing one tqdm bar on stderr."""

    def __init__(self, description: str):
        self.description, self.bar = description, None

    def __call__(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None or self.bar.total != total:
            # a new phase of the work (e.g. static metrics, then each Shapley game) starts a new bar
            self.close()
            self.bar = tqdm(total=total, desc=self.description, file=sys.stderr, leave=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def _progress(description: str):
    """A tqdm progress callback on rank 0; ``None`` (no progress) on the other processes of a launch."""
    if not distributed.is_main():
        yield None
        return
    bar = _TqdmProgress(description)
    try:
        yield bar
    finally:
        bar.close()


def _say(text: str) -> None:
    """Print on rank 0 only (every process of a launch computes the same results)."""
    if distributed.is_main():
        print(text)


def _load(args):
    from .core.loading import load_model, parse_max_memory
    from .studies.export import pending_plan

    pending = pending_plan(args.model)
    if pending is not None and args.command != "evaluate":
        _say(f"Note: {args.model} is a pruneviz export whose plan '{pending}' is not in its weights; this command "
             "sees the full model (evaluate applies the plan; in Python use pruneviz.studies.export.load_exported).")

    with _progress(f"Installing and assembling {args.model}") as progress:
        return load_model(
            args.model, device=distributed.local_device(args.device), dtype=args.dtype, trust_remote_code=args.trust_remote_code,
            device_map=args.device_map, max_memory=parse_max_memory(args.max_memory) if args.max_memory else None,
            offload_folder=args.offload_folder, install=True, progress=progress,
        )


def cmd_info(args) -> None:
    from .data.mmlu import SUBJECT_CATEGORY

    if args.subjects:
        for subject, category in sorted(SUBJECT_CATEGORY.items()):
            print(f"{subject}\t{category}")
        return
    loaded = _load(args)
    info = dataclasses.asdict(loaded.info) | {"device": str(loaded.device), "dtype": loaded.dtype_name, "model": loaded.name}
    if loaded.sharded:
        info["device_map"] = {name: str(place) for name, place in loaded.device_map.items()}
    if args.json:
        _say(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        _say(f"{key:>24}: {value:,}" if isinstance(value, int) and not isinstance(value, bool) else f"{key:>24}: {value}")


def _comma_list(text: str) -> list[str]:
    """The names of a comma list, stripped, without empty or repeated ones (a repeated metric would be computed and written twice)."""
    return list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))


def _task_list(text: str) -> list[str]:
    """The dataset or task specs of a comma list, MMLU subsets spelt one way (:func:`~pruneviz.data.tasks.canonical_spec`),
    without repeats: ``mmlu:anatomy,mmlu:Anatomy`` is one task.

    Raises:
        DataError: an MMLU spec names no subject after its colon.
    """
    from .data.tasks import canonical_spec

    return list(dict.fromkeys(canonical_spec(name) for name in _comma_list(text)))


def cmd_influence(args) -> None:
    from . import api

    metrics = _comma_list(args.metrics)
    api.check_metrics(metrics)  # before the model loads: a typo should not cost a load
    loaded = _load(args)
    with _progress("influence") as progress:
        table = api.influence(
            loaded, args.data, metrics, args.granularity, args.samples, args.seq_len,
            estimator=args.estimator, fraction=args.fraction, budget=args.budget, tolerance=args.tolerance,
            seed=args.seed, half=args.half, progress=progress, use_cache=not args.no_cache,
        )
    _write(Path(args.out), lambda path: table.to_csv(path, index=False))
    processes = distributed.world().size
    for name, cost in table.attrs.get("cost", {}).items():
        _say(api.cost_summary(name, cost) + (f" (on {processes} processes)" if processes > 1 else ""))
    _say(f"wrote {len(table)} rows to {args.out}")


def cmd_evaluate(args) -> None:
    from . import api
    from .core.plan import PruningPlan
    from .studies.export import exported_plan, pending_plan

    loaded = _load(args)
    plan = PruningPlan.parse(args.prune, loaded.n_blocks)
    recovery = _recovery(args, loaded)
    if pending_plan(args.model) is not None:
        # a sublayer export keeps the full weights and its plan beside them: evaluating it means applying both;
        # --prune adds units on top (the export is the pruned model), and its recovery fits its own plan only
        exported, exported_recovery = exported_plan(args.model, loaded)
        if recovery is None and plan.pruned <= exported.pruned:
            recovery = exported_recovery
        plan = plan | exported
        extra = f" plus --prune '{args.prune}'" if args.prune else ""
        _say(f"{args.model} is a pruneviz export: applying its plan '{exported}'{extra}" + (" and its recovery" if recovery else "") + ".")
    # ours would stay at 0 under lm-eval's own bars until it returns
    own_bar = not api.lm_eval_draws_progress(args.task, args.backend)
    with _progress(f"evaluate {args.task}") if own_bar else contextlib.nullcontext() as progress:
        result = api.evaluate(
            loaded, plan, args.task, fmt=args.format, shots=args.shots, per_subject=args.per_subject,
            windows=args.windows, seq_len=args.window_len, mmlu_source=args.mmlu_source, half=args.half,
            recovery=recovery, progress=progress, use_cache=not args.no_cache, backend=args.backend,
            per_task=args.per_task, prompt_format=args.prompt_format,
        )
    document = result.to_json()
    text = json.dumps(document, indent=2, allow_nan=False)
    if args.json:
        _write(Path(args.json), lambda path: path.write_text(text + "\n"))

    def shown_metric(name: str, value: float) -> str:
        if name not in document["ci95"] or not math.isfinite(result.stderr.get(name, math.nan)):
            return f"{name}={value:.4g}"
        low, high = result.confidence_interval(name)
        return f"{name}={value:.4g} (se {result.stderr[name]:.2g}, 95 % CI {low:.4g} to {high:.4g})"

    summary = ", ".join(shown_metric(name, value) for name, value in result.metrics.items())
    pruned = f"prune='{result.plan}'" if result.plan else "unpruned"
    recovered = f" recover='{result.recovery}'" if result.recovery else ""
    _say(f"{result.task} n={result.n} {pruned}{recovered} ({loaded.dtype_name}): {summary}")
    if result.settings.get("prompt_format"):
        _say(f"Prompt format: {result.settings['prompt_format']} (greedy decoding).")
    if result.settings.get("resumed") and not result.from_cache:
        noun = "windows" if "perplexity" in result.metrics else "items" if "prompt_format" in result.settings else "questions"
        _say(f"Resumed: {result.settings['resumed']} of {result.n} {noun} were read from checkpoints an earlier run left; "
             f"{result.seconds:.1f} s is the time for the rest.")
    if plan.is_everything(loaded.n_blocks):
        _say("Note: the plan prunes every block, so the embeddings go straight to the output head.")


def cmd_curve(args) -> None:
    import pandas as pd

    from .api import check_metrics
    from .studies.curves import Ranking, Task, pruning_curve

    metrics = _comma_list(args.metric)
    check_metrics(metrics)
    loaded = _load(args)
    metric_options = {
        "samples": args.samples, "seq_len": args.seq_len, "estimator": args.estimator, "fraction": args.fraction,
        "budget": args.budget, "tolerance": args.tolerance, "seed": args.seed, "half": "fit" if args.heldout else "all",
        "use_cache": not args.no_cache,
    }
    task_options = {
        "fmt": args.format, "shots": args.shots, "per_subject": args.per_subject, "mmlu_source": args.mmlu_source,
        "windows": args.windows, "seq_len": args.window_len, "half": "test" if args.heldout else "all",
        "use_cache": not args.no_cache, "per_task": args.per_task, "prompt_format": args.prompt_format,
    }
    tasks = [Task(name, task_options) for name in _task_list(args.tasks)]
    curves = []
    for metric in metrics:
        with _progress(f"curve {metric}") as progress:
            curves.append(pruning_curve(loaded, Ranking(metric, args.data, metric_options), args.scheme, args.steps, tasks, args.iterative, progress))
    table = pd.concat(curves, ignore_index=True)
    _write(Path(args.out), lambda path: table.to_csv(path, index=False))
    _say(f"wrote {len(table)} rows to {args.out}")


def _tasks(text: str, args) -> list[tuple[str, dict]]:
    options = {
        "fmt": args.format, "shots": args.shots, "per_subject": args.per_subject, "mmlu_source": args.mmlu_source,
        "windows": args.windows, "seq_len": args.window_len, "use_cache": not args.no_cache,
        "per_task": args.per_task, "prompt_format": args.prompt_format,
    }
    return [(name, options) for name in _task_list(text)]


def cmd_recover(args) -> None:
    from . import api
    from .core.plan import PruningPlan

    loaded = _load(args)
    plan = PruningPlan.parse(args.prune, loaded.n_blocks)
    with _progress("recover") as progress:
        recovery = api.recover(
            loaded, plan, args.method, args.rank, args.fit, args.inputs, args.data, args.samples, args.seq_len,
            args.steps, args.lr, progress=progress, use_cache=not args.no_cache,
        )
    out = recovery.save(args.out)
    with _progress("evaluate") as progress:
        report = api.compare_recoveries(loaded, plan, [recovery], _tasks(args.tasks, args), progress)
    _write(out / "report.csv", lambda path: report.to_csv(path, index=False))
    _say(report.to_string(index=False))
    _say(f"{recovery.label}: {recovery.added_params:,} parameters added ({recovery.added_percent:.2f}% of the "
          f"{recovery.removed_params:,} removed), fitted on {recovery.calibration}; wrote {out}")
    if recovery.training_failed:
        _say(f"Warning: training never improved the held-out loss ({recovery.history[0]:.3f} nats at the start, at best "
             f"{min(recovery.history[1:]):.3f} after); the stand-ins are the closed-form start. Try a smaller --lr.")
    if recovery.resumed_from:
        _say(f"Resumed: training went on from step {recovery.resumed_from} of {args.steps}, saved by an earlier run that stopped.")


def cmd_export(args) -> None:
    from .core.plan import PruningPlan
    from .studies.export import export_model

    loaded = _load(args)
    plan = PruningPlan.parse(args.prune, loaded.n_blocks)
    recovery = _recovery(args, loaded)
    report = export_model(loaded, plan, args.out, recovery)
    kind = "standalone transformers model" if report.standalone else "full model + pruning_plan.json (load with pruneviz.studies.export.load_exported)"
    _say(f"wrote {report.directory}: {kind}; {report.blocks_kept} blocks, parameters {report.params_before:,} -> "
          f"{report.params_after:,}, KV cache saved {report.kv_bytes_per_token_saved:,} bytes/token")


def _recovery(args, loaded):
    """The recovery ``--recover`` names, placed on the model's device; ``None`` without ``--recover``."""
    from .studies.recovery import Recovery

    return Recovery.load(args.recover, loaded.info.hidden_size, loaded.device) if args.recover else None


def _check_inputs(args) -> None:
    """Refuse inputs that can be judged without a model, before one is loaded."""
    from .core.plan import PruningPlan
    from .data.tasks import TaskSpec
    from .data.text import load_corpus
    from .evaluation.run import check_task
    from .studies.recovery import refuse_model_as_recovery

    if getattr(args, "prune", None) is not None:
        PruningPlan.parse(args.prune)  # the syntax now; block indices once the model says how many it has
    if getattr(args, "tasks", None) is not None and not _comma_list(args.tasks):
        raise SettingError(f"--tasks names no task ('{shown(args.tasks)}'); give a comma list such as wiki,mmlu.")
    if getattr(args, "data", None) is not None:
        data = TaskSpec.parse(args.data).require_scoring_data()
        if data.kind != "mmlu":
            load_corpus(data.spec, "calibration")  # a missing or malformed file, before the load
        _check_mmlu_subsets([data], "mmlu")  # metrics read the embedded questions
    tasks = [args.task] if getattr(args, "task", None) is not None else _comma_list(getattr(args, "tasks", None) or "")
    specs = [check_task(task, getattr(args, "backend", "pruneviz")) for task in tasks]
    _check_mmlu_subsets(specs, getattr(args, "mmlu_source", "mmlu"))
    if hasattr(args, "default_of"):
        # influence evaluates no task: its options are read by its data
        _check_task_options(args, specs or [TaskSpec.parse(args.data)])
        _check_metric_options(args)
    if getattr(args, "recover", None):
        refuse_model_as_recovery(args.recover)


def _check_mmlu_subsets(specs: list, source: str) -> None:
    """Read the MMLU question file (embedded or a path; not the hub) and check that every MMLU task's subjects and
    categories are in it, before the model loads.

    Raises:
        DataError: the file is missing or malformed; a name is neither a subject nor a category of it.
    """
    from .data.mmlu import load_mmlu, select_subjects

    mmlu = [spec for spec in specs if spec.is_mmlu]
    if mmlu and source != "cais/mmlu":
        table = load_mmlu(source)
        for spec in mmlu:
            select_subjects(table, spec.subset)


# options that only Shapley metrics read (the estimator's), checked against the metrics a command computes
_SHAPLEY_OPTIONS = {"estimator": "--estimator", "fraction": "--fraction", "budget": "--budget", "tolerance": "--tolerance"}


def _check_metric_options(args) -> None:
    """Refuse an estimator option where no metric is a Shapley value (it would be ignored silently), and
    ``--heldout`` where neither the ranking data nor any task is MMLU.

    Raises:
        SettingError: names the option and what would read it.
    """
    from .data.tasks import TaskSpec
    from .influence.registry import check_metrics
    from .influence.shapley import ADAPTIVE_METRICS

    if hasattr(args, "metrics") or hasattr(args, "metric"):  # influence and curve
        metrics = _comma_list(getattr(args, "metrics", None) or getattr(args, "metric", None) or "")
        check_metrics(metrics)  # a misspelt metric is named first, not its options
    else:
        metrics = []
    if metrics and not any(name in ADAPTIVE_METRICS for name in metrics):
        for dest, option in _SHAPLEY_OPTIONS.items():
            if hasattr(args, dest) and getattr(args, dest) != args.default_of(dest):
                raise SettingError(f"{option} applies to Shapley metrics only, and this command computes {', '.join(metrics)}; "
                                   f"drop {option} or add a *_shapley metric.")
    if getattr(args, "heldout", False):
        if not any(TaskSpec.parse(spec).is_mmlu for spec in [args.data, *_comma_list(args.tasks)]):
            raise SettingError("--heldout splits MMLU questions, and neither --data nor --tasks names MMLU; drop --heldout or add mmlu.")


# options that only some kinds of task read (TaskSpec.kind), and what those kinds are called
_TASK_OPTIONS = {
    "format": ("--format", ("mmlu",)), "shots": ("--shots", ("mmlu", "lm-eval")), "per_subject": ("--per-subject", ("mmlu", "lm-eval")),
    "mmlu_source": ("--mmlu-source", ("mmlu",)), "half": ("--half", ("mmlu",)), "windows": ("--windows", ("text",)),
    "window_len": ("--window-len", ("text",)), "per_task": ("--per-task", ("generative",)),
    "prompt_format": ("--prompt-format", ("generative",)),
}
_KIND_NAMES = {"mmlu": "MMLU", "lm-eval": "lm-eval tasks", "text": "perplexity (wiki or a text file)",
               "generative": "generative tasks (humaneval, arithmetic, parens)"}


def _check_task_options(args, specs: list) -> None:
    """Refuse a task option that none of the command's tasks (``specs``) reads (it would be ignored silently), and say
    where ``--per-task`` asks for more items than a generative task has.

    Raises:
        SettingError: names the option and the tasks that would read it.
    """
    from .data.generative import generative_items

    kinds = {spec.kind for spec in specs}
    for dest, (option, readers) in _TASK_OPTIONS.items():
        if hasattr(args, dest) and getattr(args, dest) != args.default_of(dest) and not kinds & set(readers):
            raise SettingError(
                f"{option} applies to {' and '.join(_KIND_NAMES[kind] for kind in readers)} only, and this command evaluates "
                f"{', '.join(spec.label for spec in specs)}; drop {option} or add such a task."
            )
    for spec in specs:
        if spec.kind == "generative" and getattr(args, "per_task", None) is not None and args.per_task > (size := len(generative_items(spec.spec))):
            _say(f"Note: {spec.label} has {size} items; --per-task {args.per_task} scores all of them.")


def _check_output_file(path: Path, option: str) -> None:
    """Refuse an output file path that cannot be written, before any work is done.

    Raises:
        PrunevizError: its folder is missing, is a file, or cannot be written; or the path is a folder, device,
            pipe or socket.
    """
    if not path.parent.exists():
        raise PrunevizError(f"The output folder {path.parent} for {option} does not exist; create it or choose another path.")
    if not path.parent.is_dir():
        raise PrunevizError(f"{option} {path} lies under {path.parent}, which is a file, not a folder; choose another path.")
    if path.is_dir():
        raise PrunevizError(f"{option} {path} is a folder; give a file path inside it instead.")
    if path.exists() and not path.resolve().is_file():
        raise PrunevizError(f"{option} {path} is not a regular file (a device, pipe or socket); give the path of a file to write.")
    _check_writable(path.parent, option)


def _check_output_directory(path: Path, option: str) -> None:
    """Refuse an output directory that exists and is not empty (nothing is overwritten), before any work is done.

    Raises:
        PrunevizError: ``path`` is a file, or a non-empty folder.
    """
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise PrunevizError(f"{option} {path} exists and is not an empty folder; choose a new directory (nothing is overwritten).")
    existing = next(folder for folder in [path, *path.parents] if folder.exists())
    if not existing.is_dir():
        raise PrunevizError(f"{option} {path} lies under {existing}, which is a file, not a folder; choose another path.")
    _check_writable(existing, option)


def _check_writable(folder: Path, option: str) -> None:
    """Create and delete a file in ``folder``: the one test of writability that holds for root, read-only file
    systems and full quotas alike (``os.access`` says yes to root everywhere).

    Raises:
        PrunevizError: the folder cannot be written.
    """
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".pruneviz-write-check-"):
            pass
    except OSError as error:
        raise PrunevizError(f"{option}: the folder {folder} cannot be written ({error.strerror or error}); choose another location.") from None


def _inputs(args) -> list[Path]:
    """The files and folders a command reads (data, tasks, MMLU source, model, recovery), resolved."""
    specs = [getattr(args, name, None) for name in ("data", "task", "mmlu_source", "model", "recover")]
    specs += _comma_list(getattr(args, "tasks", None) or "")
    found = []
    for spec in filter(None, specs):
        try:
            if Path(spec).exists():
                found.append(Path(spec).resolve())
        except OSError:  # a name the file system refuses is no input; the command says so when it reads it
            continue
    return found


def _check_not_an_input(path: Path, option: str, inputs: list[Path]) -> None:
    """Refuse an output that is one of the command's inputs: writing it would destroy the input.

    Raises:
        PrunevizError: names the input.
    """
    if path.resolve() in inputs:
        raise PrunevizError(f"{option} {path} is an input of this command; writing the result there would overwrite it, so choose another path.")


def _check_not_protected(path: Path, option: str) -> None:
    """Refuse an output inside the cache (its secret key, results and converted models) or the installed packages
    (the embedded data and model packages live in site-packages): writing there would destroy what pruneviz reads.

    Raises:
        PrunevizError: names the folder.
    """
    from .core.cache import configured_cache_dir

    resolved = path.resolve()
    packages = {Path(sysconfig.get_paths()[name]).resolve() for name in ("purelib", "platlib")}
    for folder, what in ((configured_cache_dir().resolve(), "pruneviz's cache"), *((p, "the installed packages") for p in packages)):
        if resolved == folder or folder in resolved.parents:
            raise PrunevizError(f"{option} {path} is inside {what} ({folder}), whose files pruneviz reads; choose a path outside it.")


def _check_outputs(args) -> None:
    inputs = _inputs(args)
    for option, kind in getattr(args, "outputs", {}).items():
        value = getattr(args, option.removeprefix("--"), None)
        if value is not None and not value.strip():
            raise SettingError(f"{option} is empty; give the path of the {kind} to write.")
        if value:
            try:
                _check_not_an_input(Path(value), option, inputs)
                _check_not_protected(Path(value), option)
                (_check_output_file if kind == "file" else _check_output_directory)(Path(value), option)
            except OSError as error:
                raise PrunevizError(f"{option} '{shown(value)}' cannot be used ({error.strerror or error}); give a shorter or valid path.") from None


def _write(path: Path, writer) -> None:
    """Write via a temporary file so a failure never leaves a half-written output; rank 0 only.

    A symbolic link keeps pointing where it did: its target is replaced. Where the destination fails after
    all (it was checked before the work, but a disk fills up), the result is written under the cache instead,
    so the work is not lost.

    Raises:
        PrunevizError: the destination failed; names it, and where the result was kept.
    """
    if not distributed.is_main():
        return
    path = path.resolve()
    staging = path.with_name(f".{path.name}.partial")
    try:
        writer(staging)
        os.replace(staging, path)
    except OSError as error:
        staging.unlink(missing_ok=True)
        kept = _keep_unwritten(path.name, writer)
        raise PrunevizError(f"Could not write {path} ({error.strerror or error}); the result is kept in {kept}.") from None


def _keep_unwritten(name: str, writer) -> Path:
    """Write a result whose destination failed into ``<cache>/unwritten/`` under a new name; returns the path."""
    from .core.cache import cache_dir

    folder = cache_dir() / "unwritten"
    folder.mkdir(exist_ok=True)
    kept = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{name}"
    writer(kept)
    return kept


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, without the usage block (subcommand parsers inherit it)."""

    def error(self, message: str) -> NoReturn:
        """Print ``prog: error: message (see 'prog --help')`` on stderr and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _integer(text: str, lowest: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number (got '{text}')") from None
    if value < lowest:
        raise argparse.ArgumentTypeError(f"must be {lowest} or more (got {value})")
    return value


def _positive(text: str) -> int:
    return _integer(text, 1)


def _positive_number(text: str) -> float:
    """A finite number above 0 (``nan``, ``inf`` and negative rates are refused before any work)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number (got '{shown(text)}')") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number (got {text})")
    return value


def _non_negative(text: str) -> int:
    return _integer(text, 0)


def build_parser() -> argparse.ArgumentParser:
    """The ``pruneviz`` argument parser with its subcommands."""
    from .api import BACKENDS, MEASURED_SELECTIONS, METRICS, RANKED_SELECTIONS
    from .core.loading import DEVICE_MAPS
    from .data.generative import PROMPT_FORMATS
    from .influence.shapley import ESTIMATORS
    from .studies.curves import CURVE_COLUMNS
    from .studies.recovery import FITS, METHODS

    parser = _Parser(prog="python -m pruneviz", description="Explore depth pruning of causal LMs.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)

    def model_args(sub):
        sub.add_argument("--model", default="smollm2", help="'smollm2' (embedded default), a model directory, a .gguf file or a hub id")
        sub.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda, cuda:N")
        sub.add_argument("--dtype", default="auto", help="auto (bf16 on GPU and on CPUs with native bf16 instructions, else fp32), float32 (the reference), bfloat16, float16")
        sub.add_argument("--trust-remote-code", action="store_true", help="run the model repository's own code (only for sources you trust)")
        sub.add_argument("--device-map", choices=DEVICE_MAPS, help="shard a model too large for one device with accelerate: auto fills the GPUs, then CPU memory, then disk (leave --device at auto)")
        sub.add_argument("--max-memory", help="with --device-map: most memory per device, e.g. '0=20GiB,1=20GiB,cpu=60GiB'")
        sub.add_argument("--offload-folder", help="with --device-map: where weights offloaded to disk are written (default: under the cache)")

    info = commands.add_parser("info", help="architecture summary: blocks, hidden size, heads, parameters per sublayer")
    model_args(info)
    info.add_argument("--json", action="store_true", help="print JSON")
    info.add_argument("--subjects", action="store_true", help="list the MMLU subjects and their categories instead")
    info.set_defaults(run=cmd_info)

    def metric_args(sub):
        sub.add_argument("--data", default="wiki", help="data the metric is computed on: wiki, mmlu, mmlu:<subject|category>, or a .txt/.jsonl/.json file")
        sub.add_argument("--samples", type=_positive, default=32, help="text: calibration documents; MMLU: questions (adaptive metrics: per subject)")
        sub.add_argument("--seq-len", type=_positive, default=128, help="tokens per calibration document")
        sub.add_argument("--estimator", choices=ESTIMATORS, default="loo", help="Shapley estimator for *_shapley metrics")
        sub.add_argument("--fraction", type=float, default=0.5, help="subsample: fraction of units kept per subnetwork")
        sub.add_argument("--budget", type=_positive, default=64, help="subsample: subnetworks; permutation: most antithetic permutation pairs")
        sub.add_argument("--tolerance", type=float, default=0.0, help="permutation: stop when every standard error is at most this")
        sub.add_argument("--seed", type=int, default=0, help="random seed of sampled subnetworks")

    def cache_args(sub):
        sub.add_argument("--no-cache", action="store_true", help="neither read nor write the result cache")

    def evaluation_args(sub):
        sub.add_argument("--format", choices=["auto", "letter", "cloze"], default="auto", help="MMLU format (auto: cloze under 1B parameters)")
        sub.add_argument("--shots", type=_non_negative, default=0, help="k-shot; the first k questions per subject become exemplars and are not scored")
        sub.add_argument("--per-subject", type=_positive, default=None, help="score at most N questions per subject")
        sub.add_argument("--mmlu-source", default="mmlu", help="mmlu (embedded), cais/mmlu (hub) or a question file")
        sub.add_argument("--windows", type=_positive, default=16, help="perplexity: number of windows")
        sub.add_argument("--per-task", type=_positive, default=None, help="generative tasks (humaneval, arithmetic, parens): score the first N items")
        sub.add_argument("--prompt-format", choices=PROMPT_FORMATS, default="auto", help="generative tasks: auto (the chat template of instruct models, a plain prompt for base models), plain or chat")
        cache_args(sub)
        sub.set_defaults(default_of=sub.get_default)

    influence = commands.add_parser("influence", help="per-unit influence metrics, written as CSV")
    model_args(influence)
    metric_args(influence)
    cache_args(influence)
    influence.set_defaults(default_of=influence.get_default)
    influence.add_argument("--metrics", default="cosine", help=f"comma list of {', '.join(METRICS)}")
    influence.add_argument("--granularity", choices=MEASURED_SELECTIONS, default="sublayer")
    influence.add_argument("--half", choices=["all", "fit"], default="all", help="MMLU adaptive metrics: all = the evaluated questions (optimistic), fit = one half of each subject (held out; evaluate with --half test)")
    influence.add_argument("--out", required=True, help="CSV: unit,layer,sublayer,metric,value,stderr,dataset,dtype")
    influence.set_defaults(run=cmd_influence, outputs={"--out": "file"})

    evaluate = commands.add_parser("evaluate", help="evaluate a pruning plan on Wikipedia perplexity, MMLU or a generative task")
    model_args(evaluate)
    evaluation_args(evaluate)
    evaluate.add_argument("--prune", default="", help="plan, e.g. '3.attn,7,12.mlp' (empty = unpruned; on a sublayer export, units added to its plan)")
    evaluate.add_argument("--task", default="wiki", help="wiki, a text file, mmlu, mmlu:<subject|category>, or a generative task: humaneval (pass@1, tests run in a sandbox), arithmetic, parens (exact_match); with --backend lm-eval also any lm-eval task name or task YAML file")
    evaluate.add_argument("--backend", choices=BACKENDS, default="pruneviz", help="pruneviz (fast, default) or lm-eval (lm-evaluation-harness on the same model and plan)")
    evaluate.add_argument("--half", choices=["all", "fit", "test"], default="all", help="MMLU: all questions; fit = the even-numbered questions of each subject (the half held-out metrics rank on); test = the odd-numbered ones (evaluate a plan ranked with influence --half fit)")
    evaluate.add_argument("--window-len", "--seq-len", dest="window_len", type=_positive, default=256, help="perplexity: tokens per window")
    evaluate.add_argument("--recover", help="directory written by `recover`: apply its stand-ins to the pruned units")
    evaluate.add_argument("--json", help="write the result as JSON to this file")
    evaluate.set_defaults(run=cmd_evaluate, outputs={"--json": "file"})

    curve = commands.add_parser("curve", help="greedy pruning curve: remove the K least important units one by one, evaluate each step")
    model_args(curve)
    metric_args(curve)
    evaluation_args(curve)
    curve.add_argument("--metric", default="cosine", help=f"ranking metric, or a comma list to overlay several: {', '.join(METRICS)}")
    curve.add_argument("--scheme", choices=RANKED_SELECTIONS, default="block")
    curve.add_argument("--steps", type=_positive, required=True, help="K, the most units removed (at least 1)")
    curve.add_argument("--tasks", default="wiki", help="comma list of wiki, text files, mmlu, mmlu:<subject|category>, humaneval, arithmetic, parens")
    curve.add_argument("--window-len", type=_positive, default=256, help="perplexity: tokens per window")
    curve.add_argument("--iterative", action="store_true", help="recompute the metric on the pruned model after every removal")
    curve.add_argument("--heldout", action="store_true", help="MMLU: compute adaptive metrics on one half of each subject, evaluate on the other")
    curve.add_argument("--out", required=True, help=f"CSV: {','.join(CURVE_COLUMNS)} (n: windows, questions or problems)")
    curve.set_defaults(run=cmd_curve, outputs={"--out": "file"})

    recover = commands.add_parser("recover", help="fit cheap stand-ins for pruned units and report before/after")
    model_args(recover)
    evaluation_args(recover)
    recover.add_argument("--prune", required=True, help="plan whose units are recovered")
    recover.add_argument("--method", choices=METHODS, default="lowrank", help="bias, lowrank, linear (ReplaceMe-style) or rescale (per-channel)")
    recover.add_argument("--rank", type=_positive, default=8, help="lowrank: rank r")
    recover.add_argument("--fit", choices=FITS, default="emulate", help="emulate: closed-form least squares; train: then Adam on the LM loss")
    recover.add_argument("--inputs", choices=["pruned", "unpruned"], default="pruned", help="fit on activations of the pruned (sequential) or unpruned model")
    recover.add_argument("--data", default="wiki", help="calibration data: wiki or a text file (its calibration half)")
    recover.add_argument("--samples", type=_positive, default=32, help="calibration documents")
    recover.add_argument("--seq-len", type=_positive, default=128, help="tokens per calibration document")
    recover.add_argument("--steps", type=_positive, default=100, help="train: most optimiser steps")
    recover.add_argument("--lr", type=_positive_number, default=1e-3, help="train: Adam learning rate")
    recover.add_argument("--tasks", default="wiki", help="before/after evaluation tasks (comma list)")
    recover.add_argument("--window-len", type=_positive, default=256, help="perplexity: tokens per window")
    recover.add_argument("--out", required=True, help="new (or empty) directory for stand_ins.safetensors, recovery.json, report.csv")
    recover.set_defaults(run=cmd_recover, outputs={"--out": "directory"})

    export = commands.add_parser("export", help="write the pruned model (standalone for whole-block plans) + pruning_plan.json")
    model_args(export)
    export.add_argument("--prune", required=True, help="plan to export")
    export.add_argument("--recover", help="directory written by `recover` to include")
    export.add_argument("--out", required=True, help="new (or empty) directory")
    export.set_defaults(run=cmd_export, outputs={"--out": "directory"})
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 error, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.debug else logging.WARNING, format="%(message)s")
    if not args.debug:
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
    try:
        here = distributed.init()
        _check_inputs(args)
        _check_outputs(args)
        args.run(args)
    except PrunevizError as error:
        if args.debug:
            raise
        # every process of a launch meets the same error; say which one spoke
        origin = f"rank {here.rank}: " if here.size > 1 else ""
        print(f"error: {origin}{error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing was written.", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown()
    return 0
