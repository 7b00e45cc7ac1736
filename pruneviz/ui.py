"""Streamlit helpers shared by ``app.py`` and ``pages/`` (the only pruneviz module that imports Streamlit).

* :func:`sidebar` draws the model picker (its state lives in ``st.session_state`` so every page sees
  the same choice) and returns the loaded model from :func:`load_model_cached`;
* :class:`ProgressBar` adapts ``st.progress`` to the library's ``progress(done, total)`` callbacks;
* :func:`run_or_stop` turns a :class:`~pruneviz.errors.PrunevizError` into one ``st.error`` and stops the page;
* :func:`calibration_inputs` and :func:`metric_label` / :func:`metrics_help` keep the pickers of both
  pages the same and fill them from the registries.
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

import streamlit as st
import torch

from .assets import EMBEDDED_MODELS
from .data.mmlu import CATEGORIES
from .errors import PrunevizError
from .loading import DEFAULT_MODEL, LoadedModel, load_model
from .plots import metric_label
from .static_metrics import STATIC_METRICS

T = TypeVar("T")
OTHER_MODEL = "other"
DTYPES = ("auto", "float32", "bfloat16", "float16")
CALIBRATION_DATA = ("wiki", "mmlu", *(f"mmlu:{c}" for c in CATEGORIES))
# st.session_state key of the current pruning plan's canonical string, shared by every page
PLAN_KEY = "plan"

__all__ = [
    "CALIBRATION_DATA", "PLAN_KEY", "ProgressBar", "calibration_inputs", "dataset_label", "load_model_cached",
    "metric_label", "metrics_help", "run_or_stop", "sidebar",
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
def load_model_cached(spec: str, device: str, dtype: str) -> LoadedModel:
    """Load a model once per process; keeps only the most recent (spec, device, dtype) in memory.

    Every argument is part of the cache key, so changing the device or dtype loads the model again.

    Raises:
        PrunevizError: as :func:`pruneviz.loading.load_model`.
    """
    return load_model(spec, device=device, dtype=dtype)


def run_or_stop(function: Callable[..., T], *args, **kwargs) -> T:
    """Call ``function``; on a :class:`PrunevizError` show its one-sentence message and stop the page."""
    try:
        return function(*args, **kwargs)
    except PrunevizError as error:
        st.error(str(error))
        st.stop()


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


class ProgressBar:
    """A ``progress(done, total)`` callback drawing ``st.progress`` with an estimate of the time left.

    Use it as a context manager so the bar disappears when the work ends::

        with ProgressBar("Perplexity, unpruned") as progress:
            api.evaluate(loaded, plan, progress=progress)
    """

    def __init__(self, label: str):
        self.label = label
        self.started = time.perf_counter()
        self.bar = st.progress(0.0, text=f"{label} ...")

    def __call__(self, done: int, total: int) -> None:
        fraction = done / total if total else 1.0
        elapsed = time.perf_counter() - self.started
        left = elapsed / done * (total - done) if done else None
        estimate = f", about {_duration(left)} left" if left is not None and done < total else ""
        self.bar.progress(min(fraction, 1.0), text=f"{self.label}: {done}/{total}{estimate}")

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc_info) -> None:
        self.bar.empty()


def _remembered(name: str, default) -> str:
    """Widget key for the sidebar setting ``name``, seeded from the page-independent value.

    Streamlit forgets a widget's state when a page that does not draw it runs, so the chosen value is
    also kept under ``name`` itself, which survives switching pages.
    """
    widget_key = f"_{name}"
    if widget_key not in st.session_state:
        st.session_state[widget_key] = st.session_state.get(name, default)
    return widget_key


def _devices() -> list[str]:
    """Devices offered in the picker: ``auto``, ``cpu`` and every visible CUDA device."""
    return ["auto", "cpu", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]


def _model_choice() -> tuple[str, str, str]:
    """Draw the model, device and dtype pickers; return ``(spec, device, dtype)`` ('' = nothing chosen yet)."""
    options = [*EMBEDDED_MODELS, OTHER_MODEL]
    choice = st.selectbox(
        "Model",
        options,
        key=_remembered("model_choice", DEFAULT_MODEL),
        format_func=lambda o: "another model ..." if o == OTHER_MODEL else f"{o} (embedded)",
        help="The embedded default needs no network. 'another model' takes a Hugging Face model "
        "directory, a .gguf file, or a hub id (where a hub is reachable).",
    )
    spec = choice
    if choice == OTHER_MODEL:
        spec = st.text_input(
            "Model directory, .gguf file or hub id",
            key=_remembered("model_other", ""),
            placeholder="/models/Llama-3.2-1B or Qwen/Qwen2.5-0.5B",
        ).strip()
    device = st.selectbox("Device", _devices(), key=_remembered("model_device", "auto"))
    dtype = st.selectbox(
        "dtype", DTYPES, key=_remembered("model_dtype", "auto"), help="auto: bf16/fp16 on CUDA, fp32 on CPU."
    )
    for name in ("model_choice", "model_other", "model_device", "model_dtype"):
        if f"_{name}" in st.session_state:
            st.session_state[name] = st.session_state[f"_{name}"]
    return spec, device, dtype


def sidebar() -> LoadedModel:
    """Draw the shared sidebar (model picker) and return the loaded model.

    Stops the page with one ``st.error`` when the model cannot be loaded, and with a hint when no
    model has been named yet.
    """
    with st.sidebar:
        st.header("Model")
        spec, device, dtype = _model_choice()
    if not spec:
        st.info("Type a model directory, a .gguf file or a hub id in the sidebar to load it.")
        st.stop()
    loaded = run_or_stop(load_model_cached, spec, device, dtype)
    st.sidebar.caption(
        f"Loaded **{loaded.name}**: {loaded.info.family}, {loaded.n_blocks} blocks, "
        f"{loaded.info.params_total / 1e6:,.0f}M parameters, on {loaded.device} in {str(loaded.dtype).removeprefix('torch.')}."
    )
    return loaded


def dataset_label(data: str) -> str:
    """Human name of a calibration dataset option, e.g. ``"MMLU STEM prompts"``."""
    if data == "wiki":
        return "Wikipedia (calibration half)"
    subset = data.partition(":")[2]
    return f"MMLU {subset} prompts (0-shot, letter format)" if subset else "MMLU prompts, all subjects (0-shot, letter format)"


def calibration_inputs(loaded: LoadedModel, key: str, samples: int = 8, seq_len: int = 128) -> tuple[str, int, int]:
    """Draw the calibration-data pickers used by static metrics.

    Args:
        loaded: the model (its context length bounds the sequence length).
        key: prefix that keeps these widgets apart from others on the same page.
        samples, seq_len: defaults, small so that a CPU answers in seconds.

    Returns:
        ``(data, samples, seq_len)`` for :func:`pruneviz.api.influence`.
    """
    data = st.selectbox(
        "Calibration data", CALIBRATION_DATA, key=f"{key}_data", format_func=dataset_label,
        help="Static metrics are computed on the calibration half of Wikipedia, never on the evaluation "
        "half that perplexity is measured on.",
    )
    left, right = st.columns(2)
    count = left.number_input("Sequences", 1, 1024, samples, key=f"{key}_samples", help="Number of calibration sequences N.")
    length = right.number_input(
        "Tokens per sequence", 2, loaded.max_length, seq_len, step=32, key=f"{key}_seq_len",
        help="Each sequence is truncated to this many tokens T.",
    )
    return data, int(count), int(length)


def metrics_help() -> str:
    """Markdown listing every static metric with its formula and source (for tooltips)."""
    return "\n".join(f"- **{m.name}**, {m.label}: {m.formula}. {m.source}." for m in STATIC_METRICS.values())
