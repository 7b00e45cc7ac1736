"""The one model in memory: loaded once per process through Streamlit's resource cache, freed on a switch."""

from __future__ import annotations

import sys
import threading

import streamlit as st

from .. import api
from ..core.formatting import format_bytes
from ..core.loading import LoadedModel, load_model
from ..deployment import memory_usage, release_memory
from ..engine.hidden_store import format_usage


def _from_current_modules(loaded: LoadedModel) -> bool:
    """Whether ``loaded`` was built by the pruneviz modules imported now.

    When a source file changes, Streamlit re-imports every pruneviz module but keeps cached resources.
    A model loaded before that carries plan gates that read the *old* ``gating`` module's context
    variable, so plans applied through the new modules would silently do nothing; such a model is
    loaded again instead.
    """
    # Streamlit keeps the validate function of the cache's first creation, i.e. this function as the
    # *old* module defined it: only a lookup at call time sees the re-imported class
    return isinstance(loaded, sys.modules["pruneviz.core.loading"].LoadedModel)


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
        PrunevizError: as :func:`pruneviz.core.loading.load_model`.
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
        PrunevizError: as :func:`pruneviz.core.loading.load_model`.
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


def memory_caption() -> str:
    """One line: the process's resident memory, CUDA allocated / reserved where present, and the hidden-state store."""
    usage = memory_usage()
    parts = [f"process {format_bytes(usage['rss'])} resident"]
    if "cuda_allocated" in usage:
        parts.append(f"CUDA {format_bytes(usage['cuda_allocated'])} allocated, {format_bytes(usage['cuda_reserved'])} reserved")
    parts.append(f"block-boundary state store {format_usage(api.hidden_store_usage())}")
    return "Memory: " + "; ".join(parts) + "."
