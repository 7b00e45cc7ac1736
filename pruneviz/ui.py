"""Streamlit helpers shared by ``app.py`` and ``pages/`` (the only pruneviz module that imports Streamlit).

* :func:`sidebar` draws the model picker (its state lives in ``st.session_state`` so every page sees
  the same choice) and returns the loaded model from :func:`load_model_cached`;
* :class:`ProgressBar` adapts ``st.progress`` to the library's ``progress(done, total)`` callbacks;
* :func:`run_or_stop` turns a :class:`~pruneviz.errors.PrunevizError` into one ``st.error`` and stops the
  page; :func:`stop_with_error` does the same for a page's own input checks;
* :func:`calibration_inputs`, :func:`metric_inputs`, :func:`estimator_inputs` and :func:`task_inputs` keep
  the pickers of every page the same and fill them from the registries; :func:`metric_label`,
  :func:`metrics_help` and :func:`metric_caption` describe each metric with its formula and source;
* :func:`plan_input` edits the pruning plan shared by every page (``st.session_state[PLAN_KEY]``), and
  :func:`fitted_recoveries` / :func:`remember_recovery` keep the recoveries fitted for it;
* :func:`output_directory` names a fresh directory under the cache dir (a deployment never writes
  where a user says), and :func:`zip_directory` packs one for a download button;
* :func:`current_deployment` reads the demo / shared-mode settings (:mod:`pruneviz.deployment`) that
  turn the model box into a select of configured models and cap every count (:func:`cap`);
* :func:`load_model_once` keeps one model in memory and frees the previous one on a switch; the
  sidebar shows the memory in use;
* :func:`cancellable` draws a Cancel button for long work whose :class:`ProgressBar` callbacks then
  raise :class:`~pruneviz.errors.Cancelled`;
* :func:`plotly_chart` draws a figure whose modebar downloads PNG or SVG (the sidebar's choice), and
  :func:`permalink_params` / :func:`apply_permalink` restore the plan and view settings from a link.
"""

from __future__ import annotations

import io
import re
import secrets
import threading
import time
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator, TypeVar
from urllib.parse import urlencode

import streamlit as st
import torch

from . import api
from .api import ADAPTIVE_METRICS, METRIC_REGISTRY, METRICS
from .assets import EMBEDDED_MODELS
from .cache import cache_dir
from .data.mmlu import CATEGORIES, SUBJECT_CATEGORY, SUBJECTS
from .deployment import Deployment, load_deployment, memory_usage, release_memory
from .errors import Cancelled, PlanError, PrunevizError
from .evaluation.mmlu import FORMATS, default_format
from .hidden_store import format_usage
from .loading import DEFAULT_MODEL, LoadedModel, load_model
from .permalink import Param, parse, render
from .plan import PruningPlan
from .plots import metric_label
from .recovery import Recovery
from .shapley import ESTIMATORS
from .static_metrics import STATIC_METRICS
from .units import format_bytes

T = TypeVar("T")
OTHER_MODEL = "other"
DTYPES = ("auto", "float32", "bfloat16", "float16")
CALIBRATION_DATA = ("wiki", "mmlu", *(f"mmlu:{c}" for c in CATEGORIES))
# pruning schemes of pruneviz.api.SCHEMES: which kind of unit is ranked and removed
SCHEME_LABELS = {
    "block": "whole blocks",
    "attn": "attention sublayers",
    "mlp": "MLP sublayers",
    "both": "attn and mlp sublayers together",
}
MMLU_TASKS = ("mmlu", *(f"mmlu:{c}" for c in CATEGORIES), *(f"mmlu:{s}" for s in SUBJECTS))
# st.session_state key of the current pruning plan's canonical string, shared by every page
PLAN_KEY = "plan"
# st.session_state key of the recoveries fitted so far: {(model fingerprint, plan): {name: FittedRecovery}}
RECOVERIES_KEY = "recoveries"
ESTIMATOR_LABELS = {
    "loo": "leave-one-out (the paper's default)",
    "subsample": "random subnetworks (± stderr)",
    "permutation": "permutation sampling (± stderr)",
}
# st.session_state keys of the running work's cancel event and of "the last work was cancelled"
CANCEL_EVENT_KEY = "_cancel_event"
CANCELLED_KEY = "_cancelled"
CANCEL_NOTE = (
    "Cancelled: the work stopped and the model is unchanged. Press the button again to resume; "
    "finished parts are cached and not computed twice."
)
FIGURE_FORMATS = ("png", "svg")
FIGURE_FORMAT_KEY = "figure_format"
PERMALINK_APPLIED_KEY = "_permalink_applied"
ADAPTIVE_COST_NOTE = (
    "Adaptive metrics (loss_shapley, logit_shapley) are **much slower** than static ones: a static metric "
    "needs one forward pass over its data, an adaptive one evaluates the task objective of many "
    "subnetworks (leave-one-out: n + 1 for n units; subsample: the budget; permutation: up to "
    "2 × budget × n). Expect minutes on a CPU; results are cached."
)

__all__ = [
    "ADAPTIVE_COST_NOTE", "CALIBRATION_DATA", "CANCEL_NOTE", "MMLU_TASKS", "PLAN_KEY", "RECOVERIES_KEY", "SCHEME_LABELS",
    "FittedRecovery",
    "ProgressBar", "adaptive_metrics", "apply_permalink", "calibration_data_options", "calibration_inputs", "cancellable",
    "cap", "current_deployment", "dataset_label", "directory_bytes", "estimator_inputs", "fitted_recoveries",
    "forget_recoveries", "heldout_note", "load_model_cached", "load_model_once", "memory_caption", "metric_caption",
    "metric_inputs", "metric_label", "metrics_help", "mmlu_task_label", "output_directory", "permalink_params",
    "plan_input", "plotly_chart", "remember_recovery", "request_cancel", "run_or_stop", "sidebar", "stop_with_error",
    "task_inputs", "zip_directory",
]


def _from_current_modules(loaded: LoadedModel) -> bool:
    """Whether ``loaded`` was built by the pruneviz modules imported now.

    When a source file changes, Streamlit re-imports every pruneviz module but keeps cached resources.
    A model loaded before that carries plan gates that read the *old* ``gating`` module's context
    variable, so plans applied through the new modules would silently do nothing; such a model is
    loaded again instead.
    """
    return isinstance(loaded, LoadedModel)


@st.cache_resource(
    max_entries=1,
    validate=_from_current_modules,
    show_spinner="Loading the model (a GGUF file is converted once, about a minute) ...",
)
def load_model_cached(spec: str, device: str, dtype: str, trust_remote_code: bool = False) -> LoadedModel:
    """Load a model once per process; keeps only the most recent (spec, device, dtype, trust) in memory.

    Every argument is part of the cache key, so changing the device or dtype loads the model again.
    Call it through :func:`load_model_once`, which frees the previous model before loading another.

    Raises:
        PrunevizError: as :func:`pruneviz.loading.load_model`.
    """
    return load_model(spec, device=device, dtype=dtype, trust_remote_code=trust_remote_code)


# the arguments of the model load_model_cached holds; the lock makes one session's switch the only one at a time
_resident: list[tuple] = []
_resident_lock = threading.Lock()


def load_model_once(spec: str, device: str, dtype: str, trust_remote_code: bool = False) -> LoadedModel:
    """The model for these arguments, with at most one model in memory per process.

    Switching to other arguments drops the model held so far *before* loading the new one (the
    resource cache alone would hold both until the new one is loaded), collects it and returns CUDA
    memory (:func:`pruneviz.deployment.release_memory`). Every session shares the one model, so a
    switch in one session makes the others load their model again on their next run.

    Raises:
        PrunevizError: as :func:`pruneviz.loading.load_model`.
    """
    key = (spec, device, dtype, trust_remote_code)
    with _resident_lock:
        if _resident and _resident[0] != key:
            load_model_cached.clear()
            _resident.clear()
            release_memory()
        loaded = load_model_cached(*key)
        _resident[:] = [key]
    return loaded


def run_or_stop(function: Callable[..., T], *args, **kwargs) -> T:
    """Call ``function``; on a :class:`PrunevizError` show its one-sentence message and stop the page.

    A :class:`~pruneviz.errors.Cancelled` run is a warning, not an error: the user asked for it.
    """
    try:
        return function(*args, **kwargs)
    except Cancelled as cancelled:
        st.warning(str(cancelled))
        st.stop()
    except PrunevizError as error:
        st.error(str(error))
        st.stop()


def stop_with_error(message: str) -> None:
    """Show one ``st.error`` sentence about the user's input and stop the page."""
    st.error(message)
    st.stop()


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def request_cancel() -> None:
    """What the Cancel button does: stop this session's running work at its next progress report.

    A click reaches the server while the work runs; Streamlit (fast reruns) starts a new run of the
    page at once, which calls this first, so the old run's :class:`ProgressBar` sees the event.
    """
    event = st.session_state.get(CANCEL_EVENT_KEY)
    if event is not None:
        event.set()
    st.session_state[CANCELLED_KEY] = True


@contextmanager
def cancellable(key: str) -> Iterator[threading.Event]:
    """Show a Cancel button while the block runs; :class:`ProgressBar` callbacks inside raise ``Cancelled`` once it is clicked.

    Args:
        key: keeps the button apart from other Cancel buttons (one per page section).
    """
    event = threading.Event()
    st.session_state[CANCEL_EVENT_KEY] = event
    st.session_state.pop(CANCELLED_KEY, None)
    slot = st.empty()
    slot.button(
        "Cancel", key=f"cancel_{key}", on_click=request_cancel,
        help="Stop this computation. Nothing in the model changes; running it again resumes from the cached parts.",
    )
    try:
        yield event
    finally:
        slot.empty()


def cancel_notice() -> None:
    """Say, once, that the last run was cancelled (the run after the Cancel click)."""
    if st.session_state.pop(CANCELLED_KEY, False):
        st.warning(CANCEL_NOTE)


class ProgressBar:
    """A ``progress(done, total)`` callback drawing ``st.progress`` with an estimate of the time left.

    Use it as a context manager so the bar disappears when the work ends; inside :func:`cancellable`
    it raises :class:`~pruneviz.errors.Cancelled` once the Cancel button is clicked::

        with cancellable("evaluate"), ProgressBar("Perplexity, unpruned") as progress:
            api.evaluate(loaded, plan, progress=progress)

    The estimate is ``elapsed / done × (total − done)``: it assumes the remaining steps cost what
    the finished ones did on average. A report of ``done == 0`` restarts the clock (work that first
    prepares, e.g. a curve computing its rankings, announces the start of the counted steps that way).
    """

    def __init__(self, label: str):
        self.label = label
        self.started = time.perf_counter()
        self.cancel = st.session_state.get(CANCEL_EVENT_KEY)
        self.done, self.total = 0, 0
        self.bar = st.progress(0.0, text=f"{label} ...")

    def __call__(self, done: int, total: int) -> None:
        """Report ``done`` of ``total`` steps.

        Raises:
            Cancelled: the Cancel button of the enclosing :func:`cancellable` block was clicked.
        """
        self.done, self.total = done, total
        if done == 0:
            self.started = time.perf_counter()
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled(f"{self.label} was cancelled after {done} of {total} steps. {CANCEL_NOTE.removeprefix('Cancelled: ')}")
        fraction = done / total if total else 1.0
        elapsed = time.perf_counter() - self.started
        left = elapsed / done * (total - done) if done else None
        estimate = f", about {_duration(left)} left" if left is not None and done < total else ""
        self.bar.progress(min(fraction, 1.0), text=f"{self.label}: {done}/{total}{estimate}")

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc_info) -> None:
        self.bar.empty()


def _keep_setting(name: str) -> None:
    """on_change of a sidebar widget: copy its new value to the page-independent setting ``name``."""
    st.session_state[name] = st.session_state[f"_{name}"]


def _remembered(name: str, default) -> dict:
    """Keyword arguments for the widget of the sidebar setting ``name``: its key, seeded from the setting, and its on_change.

    Streamlit forgets a widget's state when a page that does not draw it runs (and the same key on
    another page is another widget), so the chosen value is kept under ``name`` itself, copied there
    by the widget's on_change (which runs before the page), and every page seeds its widget from it.
    """
    widget_key = f"_{name}"
    st.session_state[widget_key] = st.session_state.setdefault(name, default)
    return {"key": widget_key, "on_change": _keep_setting, "args": (name,)}


def _devices() -> list[str]:
    """Devices offered in the picker: ``auto``, ``cpu`` and every visible CUDA device."""
    return ["auto", "cpu", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]


def current_deployment() -> Deployment:
    """The deployment settings (:func:`pruneviz.deployment.load_deployment`); a bad configuration file stops the page with its error."""
    return run_or_stop(load_deployment)


def cap(name: str, maximum: int) -> int:
    """The largest value a picker for the limit ``name`` offers: ``maximum``, capped by the deployment in demo mode."""
    return current_deployment().cap(name, maximum)


def _model_choice(deployment: Deployment) -> tuple[str, str, str, bool]:
    """Draw the model pickers; return ``(spec, device, dtype, trust_remote_code)`` ('' = nothing chosen yet).

    In demo mode the model is a select of the configured models only, device and dtype are the
    configured ones, and remote code is never trusted.
    """
    if deployment.demo:
        choice = st.selectbox(
            "Model", deployment.models, **_remembered("model_choice", deployment.models[0]),
            help="This is a shared demo: only the models its operator configured can be loaded.",
        )
        return choice, deployment.device, deployment.dtype, False
    options = [*EMBEDDED_MODELS, OTHER_MODEL]
    choice = st.selectbox(
        "Model",
        options,
        **_remembered("model_choice", DEFAULT_MODEL),
        format_func=lambda o: "another model ..." if o == OTHER_MODEL else f"{o} (embedded)",
        help="The embedded default needs no network. 'another model' takes a Hugging Face model "
        "directory, a .gguf file, or a hub id (where a hub is reachable).",
    )
    spec, trust = choice, False
    if choice == OTHER_MODEL:
        spec = st.text_input(
            "Model directory, .gguf file or hub id",
            **_remembered("model_other", ""),
            placeholder="/models/Llama-3.2-1B or Qwen/Qwen2.5-0.5B",
        ).strip()
        trust = st.checkbox(
            "Trust remote code", **_remembered("model_trust", False),
            help="Run the Python code that ships with the model repository (needed by some architectures). "
            "That code can do anything your user can: tick this only for repositories you trust.",
        )
    device = st.selectbox("Device", _devices(), **_remembered("model_device", "auto"))
    dtype = st.selectbox(
        "dtype", DTYPES, **_remembered("model_dtype", "auto"), help="auto: bf16/fp16 on CUDA, fp32 on CPU."
    )
    return spec, device, dtype, trust


def memory_caption() -> str:
    """One line: the process's resident memory, CUDA allocated / reserved where present, and the hidden-state store."""
    usage = memory_usage()
    parts = [f"process {format_bytes(usage['rss'])} resident"]
    if "cuda_allocated" in usage:
        parts.append(f"CUDA {format_bytes(usage['cuda_allocated'])} allocated, {format_bytes(usage['cuda_reserved'])} reserved")
    parts.append(f"block-boundary state store {format_usage(api.hidden_store_usage())}")
    return "Memory: " + "; ".join(parts) + "."


def sidebar() -> LoadedModel:
    """Draw the shared sidebar (model picker, memory, figure format, permalink) and return the loaded model.

    Restores the plan and view settings from the page's query parameters on a session's first run
    (:func:`apply_permalink`). Stops the page with one ``st.error`` when the model cannot be loaded,
    and with a hint when no model has been named yet.
    """
    deployment = current_deployment()
    apply_permalink(deployment)
    with st.sidebar:
        st.header("Model")
        if deployment.demo:
            st.caption("Shared demo: configured models and datasets only, and bounded work per request.")
        spec, device, dtype, trust = _model_choice(deployment)
    if not spec:
        st.info("Type a model directory, a .gguf file or a hub id in the sidebar to load it.")
        st.stop()
    loaded = run_or_stop(load_model_once, spec, device, dtype, trust)
    st.sidebar.caption(
        f"Loaded **{loaded.name}**: {loaded.info.family}, {loaded.n_blocks} blocks, "
        f"{loaded.info.params_total / 1e6:,.0f}M parameters, on {loaded.device} in {str(loaded.dtype).removeprefix('torch.')}."
    )
    st.sidebar.caption(memory_caption(), help="One model is kept in memory; choosing another frees this one first.")
    st.sidebar.radio(
        "Figure downloads", FIGURE_FORMATS, **_remembered(FIGURE_FORMAT_KEY, "png"), horizontal=True,
        format_func=str.upper, help="The camera button of every chart saves it in this format.",
    )
    params = permalink_params()
    st.query_params.from_dict(params)
    st.sidebar.caption("Permalink (restores the plan and the view settings):")
    st.sidebar.code(f"{st.context.url or ''}?{urlencode(params)}", language=None, wrap_lines=True)
    cancel_notice()
    return loaded


def page(name: str, title: str, introduction: str) -> LoadedModel:
    """Start a page: its browser title ``"<name> · pruneviz"``, the sidebar (model choice), the heading and
    an introduction paragraph. Returns the loaded model."""
    st.set_page_config(page_title=f"{name} · pruneviz", page_icon="✂️", layout="wide")
    model = sidebar()
    st.title(title)
    st.markdown(introduction)
    return model


def stored_result(key: str, model: LoadedModel):
    """The result this session stored under ``key`` for ``model`` (``None`` if none, or for another model)."""
    stored = st.session_state.get(key)
    return stored if stored is not None and stored["model"] == model.fingerprint else None


def plotly_chart(figure, name: str) -> None:
    """Draw a plotly figure whose modebar camera saves ``<name>.png`` or ``.svg`` (the sidebar's choice)."""
    fmt = st.session_state.get(FIGURE_FORMAT_KEY, "png")
    st.plotly_chart(figure, config={"toImageButtonOptions": {"format": fmt, "filename": _slug(name)}, "displaylogo": False})


# query parameter -> setting; the plan is validated against the model by the page that draws it
PERMALINK = {
    "plan": Param(PLAN_KEY, str),
    "figure": Param(FIGURE_FORMAT_KEY, str, FIGURE_FORMATS),
    "metric": Param("influence_metric", str, METRICS),
    "log": Param("influence_log", bool),
    "wiki": Param("use_wiki", bool),
    "windows": Param("wiki_windows", int, limit="samples", highest=512),
    "tokens": Param("wiki_seq_len", int, limit="seq_len"),
    "mmlu": Param("use_mmlu", bool),
    "format": Param("mmlu_format", str, FORMATS),
    "per_subject": Param("mmlu_per_subject", int, limit="per_subject", highest=2000),
    "chart": Param("mmlu_chart_metric", str, ("acc", "acc_norm")),
}


def permalink_params() -> dict[str, str]:
    """The query parameters that restore this session's plan and view settings (settings never set are left out)."""
    params = {}
    choice = st.session_state.get("model_choice")
    if choice and choice != OTHER_MODEL:
        params["model"] = choice
    for name, param in PERMALINK.items():
        value = st.session_state.get(param.key)
        if value is not None and value != "":
            params[name] = render(value)
    return params


def apply_permalink(deployment: Deployment) -> None:
    """On a session's first run, copy the query parameters of :data:`PERMALINK` into the session's settings.

    Unknown parameters are ignored; a malformed value is skipped with one warning each; numbers are
    capped by the deployment's limits. The model is restored only when it is one the picker offers
    (never a typed path: a link must not make the server load a file).
    """
    if st.session_state.get(PERMALINK_APPLIED_KEY):
        return
    st.session_state[PERMALINK_APPLIED_KEY] = True
    for name, text in st.query_params.to_dict().items():
        if name == "model":
            offered = deployment.models if deployment.demo else tuple(EMBEDDED_MODELS)
            if text in offered:
                st.session_state["model_choice"] = text
            continue
        if name not in PERMALINK:
            continue
        try:
            value = parse(name, PERMALINK[name], text, deployment)
        except ValueError as problem:
            st.warning(str(problem))
            continue
        st.session_state[PERMALINK[name].key] = value


def calibration_data_options() -> list[str]:
    """Calibration datasets offered: :data:`CALIBRATION_DATA`; in demo mode only the configured ones (and their MMLU categories)."""
    deployment = current_deployment()
    if not deployment.demo:
        return list(CALIBRATION_DATA)
    extra = [d for d in deployment.datasets if d not in CALIBRATION_DATA]
    return [d for d in CALIBRATION_DATA if deployment.offers_dataset(d)] + extra


def dataset_label(data: str) -> str:
    """Human name of a calibration dataset option, e.g. ``"MMLU STEM prompts"`` (a text file: its name)."""
    if data == "wiki":
        return "Wikipedia (calibration half)"
    if not data.startswith("mmlu"):
        return f"{Path(data).name} (calibration half)"
    subset = data.partition(":")[2]
    return f"MMLU {subset} prompts (0-shot, letter format)" if subset else "MMLU prompts, all subjects (0-shot, letter format)"


def calibration_inputs(
    loaded: LoadedModel,
    key: str,
    samples: int = 8,
    seq_len: int = 128,
    data_help: str = "Static metrics are computed on the calibration half of Wikipedia, never on the evaluation "
    "half that perplexity is measured on.",
    samples_help: str = "Number of calibration sequences N.",
    data_label: str = "Calibration data",
) -> tuple[str, int, int]:
    """Draw the calibration-data pickers used by metrics and recovery fits.

    Args:
        loaded: the model (its context length bounds the sequence length).
        key: prefix that keeps these widgets apart from others on the same page.
        samples, seq_len: defaults, small so that a CPU answers in seconds.
        data_help, samples_help: tooltips of the dataset and sample-count pickers.
        data_label: label of the dataset picker.

    Returns:
        ``(data, samples, seq_len)`` for :func:`pruneviz.api.influence`.
    """
    data = st.selectbox(data_label, calibration_data_options(), key=f"{key}_data", format_func=dataset_label, help=data_help)
    left, right = st.columns(2)
    most, longest = cap("samples", 1024), cap("seq_len", loaded.max_length)
    count = left.number_input("Sequences", 1, most, min(samples, most), key=f"{key}_samples", help=samples_help)
    length = right.number_input(
        "Tokens per sequence", 2, longest, min(seq_len, longest), step=32, key=f"{key}_seq_len",
        help="Each sequence is truncated to this many tokens T.",
    )
    return data, int(count), int(length)


def _metric_help_line(name: str) -> str:
    """One markdown bullet: a metric's name, label, formula and source."""
    metric = METRIC_REGISTRY[name]
    kind = " (adaptive, slow)" if name in ADAPTIVE_METRICS else ""
    return f"- **{name}**{kind}, {metric.label}: {metric.formula}. {metric.source}."


def metrics_help(adaptive: bool = False) -> str:
    """Markdown listing every static metric (and, with ``adaptive``, the Shapley metrics) with formula and source."""
    names = METRICS if adaptive else tuple(STATIC_METRICS)
    return "\n".join(_metric_help_line(name) for name in names)


def metric_caption(name: str) -> str:
    """One sentence for under a chart: what a metric's value is and where it comes from."""
    metric = METRIC_REGISTRY[name]
    if name in STATIC_METRICS:
        return f"**{metric.label}** = mean over tokens of {metric.formula}. Source: {metric.source}."
    return f"**{name}**: {metric.formula}. Source: {metric.source}."


def metric_inputs(key: str, default: tuple[str, ...] = ("cosine",), label: str = "Metrics") -> list[str]:
    """Multiselect of every ranking metric (static and adaptive), with formulas and sources in its tooltip."""
    return st.multiselect(
        label, list(METRICS), default=list(default), format_func=metric_label, key=key,
        help=metrics_help(adaptive=True),
    )


def estimator_inputs(key: str) -> dict:
    """Draw the Shapley-estimator settings of the adaptive metrics.

    Returns:
        ``{"estimator", "budget", "fraction"}`` for :func:`pruneviz.api.influence` (static metrics ignore them).
    """
    left, middle, right = st.columns(3)
    estimator = left.selectbox(
        "Shapley estimator", ESTIMATORS, format_func=ESTIMATOR_LABELS.get, key=f"{key}_estimator",
        help="loo: Shapley_i ≈ v(all) − v(all∖i), n + 1 subnetworks, no standard error. subsample: random "
        "subnetworks keeping a fraction of the units; Shapley_i = mean v with i − mean v without i. "
        "permutation: Monte-Carlo permutation Shapley with antithetic pairs. subsample and permutation "
        "report a standard error.",
    )
    most = cap("budget", 4096)
    budget = middle.number_input(
        "Budget", 1, most, min(8, most), key=f"{key}_budget",
        help="subsample: number of random subnetworks; permutation: antithetic permutation pairs (each pair "
        "evaluates up to 2n subnetworks). Unused by loo.",
    )
    fraction = right.slider(
        "Fraction kept", 0.1, 0.9, 0.5, 0.05, key=f"{key}_fraction", help="subsample: share of the units present in each subnetwork.",
    )
    return {"estimator": estimator, "budget": int(budget), "fraction": float(fraction)}


def adaptive_metrics(metrics: list[str]) -> list[str]:
    """The adaptive (Shapley) metrics among ``metrics``."""
    return [m for m in metrics if m in ADAPTIVE_METRICS]


def mmlu_task_label(task: str) -> str:
    """Picker label of an MMLU task: ``"all subjects"``, ``"STEM (category)"`` or ``"anatomy (STEM)"``."""
    subset = task.partition(":")[2]
    if not subset:
        return "all subjects"
    return f"{subset} (category)" if subset in CATEGORIES else f"{subset} ({SUBJECT_CATEGORY[subset]})"


def task_inputs(
    loaded: LoadedModel,
    key: str,
    wiki: bool = True,
    mmlu: tuple[str, ...] = (),
    per_subject: int = 1,
    offer_heldout: bool = False,
) -> tuple[list[tuple[str, dict]], bool]:
    """Draw the evaluation-task pickers: Wikipedia perplexity and any number of MMLU subsets.

    Args:
        loaded: the model (its size preselects the MMLU format).
        key: prefix of the widget keys.
        wiki, mmlu, per_subject: defaults (Wikipedia on, MMLU subsets from :data:`MMLU_TASKS`).
        offer_heldout: also draw the "held out" checkbox (on by default): MMLU is then evaluated on the
            ``test`` half of each subject, and metrics should be computed on the ``fit`` half.

    Returns:
        ``(tasks, heldout)``: ``(task, options)`` pairs for :func:`pruneviz.api.evaluate` (and
        :class:`pruneviz.curves.Task`), and whether the held-out protocol was chosen.
    """
    left, right = st.columns(2)
    with left:
        wiki_offered = current_deployment().offers_dataset("wiki")
        use_wiki = st.checkbox("Wikipedia perplexity", value=wiki and wiki_offered, key=f"{key}_wiki", disabled=not wiki_offered)
        windows_column, length_column = st.columns(2)
        most, longest = cap("samples", 512), cap("seq_len", loaded.max_length)
        windows = windows_column.number_input("Windows", 1, most, min(4, most), key=f"{key}_windows")
        window_len = length_column.number_input(
            "Tokens per window", 2, longest, min(64, longest), step=32, key=f"{key}_window_len"
        )
        st.caption("Windows of the evaluation half of Wikipedia, never the calibration half that metrics and fits use.")
    with right:
        offered = MMLU_TASKS if current_deployment().offers_dataset("mmlu") else ()
        subsets = st.multiselect(
            "MMLU", offered, default=[t for t in mmlu if t in offered], format_func=mmlu_task_label, key=f"{key}_mmlu",
            help="Each chosen subset (all subjects, a category or one subject) is a separate task. About a "
            "second per question on a CPU: a category has 12-18 subjects.",
        )
        format_column, count_column = st.columns(2)
        preset = default_format(loaded.info.params_total)
        fmt = format_column.radio(
            "Format", FORMATS, index=FORMATS.index(preset), horizontal=True, key=f"{key}_format",
            help="letter: the lm-eval-harness prompt scored on ' A'..' D' (acc, MMLU loss). cloze: the "
            "likelihood of each answer text (acc, acc_norm); preselected under 1B parameters, where letter "
            "format sits at chance.",
        )
        most = cap("per_subject", 2000)
        count = count_column.number_input("Questions per subject", 1, most, min(per_subject, most), key=f"{key}_per_subject")
        heldout = offer_heldout and st.checkbox(
            "Held out (adaptive MMLU metrics never see the evaluated questions)", value=True, key=f"{key}_heldout",
            help="Adaptive metrics on MMLU data use the even-numbered questions of each subject and MMLU is "
            "evaluated on the odd-numbered ones. Off: the metrics are computed on the evaluated questions "
            "themselves (optimistic: it flatters them on their own task).",
        )
    tasks = [("wiki", {"windows": int(windows), "seq_len": int(window_len)})] if use_wiki else []
    tasks += [(task, {"fmt": fmt, "per_subject": int(count), "half": "test" if heldout else "all"}) for task in subsets]
    return tasks, heldout


def check_heldout(heldout: bool, tasks: list[tuple[str, dict]]) -> None:
    """Stop with one error sentence when held-out MMLU cannot split a subject's questions into two halves."""
    if heldout and any(options.get("per_subject") == 1 for _, options in tasks):
        stop_with_error("Held-out MMLU needs at least 2 questions per subject: one half ranks, the other is evaluated.")


def heldout_note(heldout: bool, adaptive_on_mmlu: bool, mmlu_evaluated: bool) -> str:
    """One sentence saying which MMLU questions ranked the units and which were evaluated.

    Args:
        heldout: whether metrics used the ``fit`` half and MMLU was evaluated on the ``test`` half.
        adaptive_on_mmlu: whether an adaptive metric was computed on MMLU data.
        mmlu_evaluated: whether any MMLU task was evaluated.
    """
    if not mmlu_evaluated:
        return "Perplexity uses the evaluation half of Wikipedia, so no text both ranks units and judges them."
    if heldout and adaptive_on_mmlu:
        return (
            "**Held out**: adaptive MMLU metrics used the even-numbered questions of each subject; MMLU is "
            "evaluated on the odd-numbered ones."
        )
    if heldout:
        return "MMLU is evaluated on the held-out half (the odd-numbered questions of each subject)."
    if adaptive_on_mmlu:
        return "Adaptive MMLU metrics were **computed on the evaluated questions (optimistic)**."
    return "MMLU is evaluated on all chosen questions; static metrics read the prompts but never the answers."


def _canonical_plan_text(widget: str, n_blocks: int) -> None:
    """Callback of a plan text box: adopt a valid plan as the shared one, or remember the error."""
    try:
        plan = PruningPlan.parse(st.session_state[widget], n_blocks)
    except PlanError as error:
        st.session_state[f"{widget}_error"] = str(error)
        return
    st.session_state.pop(f"{widget}_error", None)
    st.session_state[PLAN_KEY] = str(plan)
    st.session_state[widget] = str(plan)


def plan_input(loaded: LoadedModel, key: str) -> PruningPlan:
    """A text box editing the pruning plan shared with every page; returns the valid current plan.

    A plan that does not fit this model (it was made for another one) is cleared with a warning; a
    malformed edit shows one ``st.error`` and stops the page.
    """
    n_blocks = loaded.n_blocks
    try:
        plan = PruningPlan.parse(st.session_state.get(PLAN_KEY, ""), n_blocks)
    except PlanError as error:
        st.warning(f"The previous plan does not fit this model and was cleared: {error}")
        plan = PruningPlan()
    st.session_state[PLAN_KEY] = str(plan)
    widget = f"{key}_plan"
    # Streamlit forgets widget state while another page runs; redraw the box (and drop its old error)
    if widget not in st.session_state:
        st.session_state[widget] = str(plan)
        st.session_state.pop(f"{widget}_error", None)
    st.text_input(
        "Pruning plan", key=widget, on_change=_canonical_plan_text, args=(widget, n_blocks),
        placeholder="nothing pruned; e.g. 3.attn,7,12.mlp",
        help=f"Shared with the Prune and evaluate page. Comma-separated units: a block index (0-{n_blocks - 1}) "
        "for the whole block, or '<i>.attn' / '<i>.mlp'. Press Enter to apply.",
    )
    if f"{widget}_error" in st.session_state:
        stop_with_error(st.session_state[f"{widget}_error"])
    return plan


@dataclass
class FittedRecovery:
    """A recovery fitted in this session, with the name it is shown under and where it was saved.

    Attributes:
        name: display name (method/fit plus the inputs and calibration data that tell fits apart).
        recovery: the fitted stand-ins.
        directory: where :meth:`pruneviz.recovery.Recovery.save` wrote them (under the cache dir).
    """

    name: str
    recovery: Recovery
    directory: Path


def fitted_recoveries(loaded: LoadedModel, plan: PruningPlan) -> dict[str, FittedRecovery]:
    """Recoveries fitted in this session for ``plan`` on this model, oldest first."""
    return st.session_state.get(RECOVERIES_KEY, {}).get((loaded.fingerprint, str(plan)), {})


def remember_recovery(loaded: LoadedModel, plan: PruningPlan, fitted: FittedRecovery) -> None:
    """Keep ``fitted`` for ``plan`` (a refit under the same name replaces the old one and becomes the newest)."""
    store = st.session_state.setdefault(RECOVERIES_KEY, {})
    entries = store.setdefault((loaded.fingerprint, str(plan)), {})
    entries.pop(fitted.name, None)
    entries[fitted.name] = fitted


def forget_recoveries(loaded: LoadedModel, plan: PruningPlan) -> None:
    """Drop the recoveries fitted for ``plan`` on this model (their saved directories stay)."""
    st.session_state.get(RECOVERIES_KEY, {}).pop((loaded.fingerprint, str(plan)), None)


def _slug(text: str) -> str:
    """``text`` reduced to a safe file-name part (letters, digits, '.', '-', '_'), at most 60 characters."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:60] or "none"


def output_directory(kind: str, model_name: str, *parts: str) -> Path:
    """A new, unique directory path ``<cache dir>/<kind>/<model>-<parts>-<time>-<random>`` (not yet created).

    The app never writes to a path typed by a user: in a shared deployment that would let anyone
    overwrite files on the server. Every part becomes one safe file-name component.

    Args:
        kind: the subdirectory, e.g. ``"exports"`` or ``"recoveries"``.
        model_name: the model's name (a directory or hub id contributes only its last component).
        parts: words that make the name readable, e.g. the plan and the recovery label.
    """
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = "-".join([_slug(Path(model_name).name), *(_slug(part) for part in parts), stamp, secrets.token_hex(3)])
    return cache_dir() / kind / name


def zip_directory(directory: Path) -> bytes:
    """The files under ``directory`` as an uncompressed zip (weights barely compress; storing is fast)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                archive.write(path, Path(directory.name) / path.relative_to(directory))
    return buffer.getvalue()


def directory_bytes(directory: Path) -> int:
    """Total size of the files under ``directory``."""
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())
