"""Applying a pruning plan to one computation without editing the shared model.

One loaded model serves every browser session from several threads, so a plan cannot be applied
by registering hooks for the length of a call (a hook acts on every thread's forward pass while
it is registered). Instead each block, sublayer and MLP pre-norm is given, once at load time, a
gated ``forward`` that reads the calling context's state from a :class:`contextvars.ContextVar`:

* ``with apply_plan(plan):`` - sublayers in ``plan`` return a zero update (they add nothing to the
  residual stream), only for forward passes run inside the block, only in this thread/context;
* ``with record_residuals(callback):`` - ``callback(layer, name, tensor)`` receives ``resid_pre``,
  ``resid_mid`` and ``resid_post`` (``[batch, seq, d]``) of every block, e.g. for static metrics;
* ``with resume_from(k, state):`` - blocks before ``k`` pass their input through untouched and block
  ``k`` receives ``state`` instead of its computed input, so a forward pass costs only blocks ``k..L-1``
  (see :mod:`pruneviz.engine.incremental`).

Outside these blocks the gates pass straight through; parameters and state-dict keys are untouched.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping

import torch
from torch import nn

from .architecture import ArchitectureAdapter, resolve
from .digest import tensor_digest
from .plan import PruningPlan

ResidualCallback = Callable[[int, str, torch.Tensor], None]
# a recovery stand-in: residual-stream input x [..., d] -> update [..., d] added in place of a pruned sublayer's
StandIn = Callable[[torch.Tensor], torch.Tensor]
# which residual-stream position a sublayer's stand-in reads
STAND_IN_INPUT = {"attn": "resid_pre", "mlp": "resid_mid"}


@dataclass(frozen=True)
class _Context:
    plan: PruningPlan = PruningPlan()
    stand_ins: Mapping[tuple[int, str], StandIn] = field(default_factory=dict)
    record: ResidualCallback | None = None
    resume: tuple[int, torch.Tensor] | None = None
    stand_in_digests: Mapping[tuple[int, str], str | None] = field(default_factory=dict)


_ACTIVE: contextvars.ContextVar[_Context] = contextvars.ContextVar("pruneviz_active", default=_Context())
# residual-stream inputs of the block being run, kept only while a stand-in in that block may need them
_RESIDUALS: contextvars.ContextVar[dict | None] = contextvars.ContextVar("pruneviz_residuals", default=None)
_INSTALLED = "_pruneviz_gated"


def _first_tensor(output):
    return output[0] if isinstance(output, (tuple, list)) else output


def _hidden_states_arg(args, kwargs) -> torch.Tensor:
    return kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]


def _gate_sublayer(module: nn.Module, layer: int, sublayer: str) -> None:
    inner = module.forward

    @functools.wraps(inner)
    def forward(*args, **kwargs):
        context = _ACTIVE.get()
        if (layer, sublayer) in context.plan:
            normed = _hidden_states_arg(args, kwargs)
            stand_in = context.stand_ins.get((layer, sublayer))
            if stand_in is None:
                update = torch.zeros_like(normed)
            else:
                # on a sharded model the stand-in's weights and its residual-stream input may sit on other
                # devices than this block: compute where the weights are, add the update where the block runs
                residual = _RESIDUALS.get()[STAND_IN_INPUT[sublayer]]
                weights = next(stand_in.parameters(), None) if isinstance(stand_in, nn.Module) else None
                residual = residual if weights is None else residual.to(weights.device)
                update = stand_in(residual).to(normed.device, normed.dtype)
            # attention returns (attn_output, attn_weights); the MLP returns a tensor
            return (update, None) if sublayer == "attn" else update
        return inner(*args, **kwargs)

    module.forward = forward


def _gate_block(module: nn.Module, layer: int) -> None:
    inner = module.forward

    @functools.wraps(inner)
    def forward(*args, **kwargs):
        context = _ACTIVE.get()
        if context.resume is not None:
            start, state = context.resume
            if layer < start:
                # transformers 5 decoder layers return the bare hidden-states tensor
                return _hidden_states_arg(args, kwargs)
            if layer == start:
                # on a sharded model the block may live on another device than the stored state
                state = state.to(_hidden_states_arg(args, kwargs).device)
                if "hidden_states" in kwargs:
                    kwargs = {**kwargs, "hidden_states": state}
                else:
                    args = (state, *args[1:])
        record = context.record
        resid_pre = _hidden_states_arg(args, kwargs)
        if record is not None:
            record(layer, "resid_pre", resid_pre)
        if (layer, "attn") in context.stand_ins or (layer, "mlp") in context.stand_ins:
            token = _RESIDUALS.set({"resid_pre": resid_pre})
            try:
                output = inner(*args, **kwargs)
            finally:
                _RESIDUALS.reset(token)
        else:
            output = inner(*args, **kwargs)
        if record is not None:
            # decoder layers return a bare tensor or a tuple depending on the transformers version
            record(layer, "resid_post", _first_tensor(output))
        return output

    module.forward = forward


def _gate_mlp_norm(module: nn.Module, layer: int) -> None:
    inner = module.forward

    @functools.wraps(inner)
    def forward(hidden_states, *args, **kwargs):
        record = _ACTIVE.get().record
        if record is not None:
            record(layer, "resid_mid", hidden_states)
        residuals = _RESIDUALS.get()
        if residuals is not None:
            residuals["resid_mid"] = hidden_states
        return inner(hidden_states, *args, **kwargs)

    module.forward = forward


def install_gates(model: nn.Module, adapter: ArchitectureAdapter) -> None:
    """Give every block, sublayer and MLP pre-norm of ``model`` its context-reading gate (idempotent).

    The gates replace the instances' ``forward`` attributes (the way accelerate's device hooks do),
    so parameters, buffers and state-dict keys are unchanged.
    """
    if getattr(model, _INSTALLED, False):
        return
    for layer, block in enumerate(adapter.blocks(model)):
        _gate_block(block, layer)
        _gate_sublayer(adapter.sublayer(block, "attn"), layer, "attn")
        _gate_sublayer(adapter.sublayer(block, "mlp"), layer, "mlp")
        _gate_mlp_norm(resolve(block, adapter.mlp_norm), layer)
    setattr(model, _INSTALLED, True)


def gates_installed(model: nn.Module) -> bool:
    """Whether :func:`install_gates` has run on ``model``."""
    return getattr(model, _INSTALLED, False)


@contextlib.contextmanager
def _scoped(**changes) -> Iterator[None]:
    current = _ACTIVE.get()
    token = _ACTIVE.set(_Context(**{**current.__dict__, **changes}))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def apply_plan(
    plan: PruningPlan, stand_ins: Mapping[tuple[int, str], StandIn] | None = None
) -> contextlib.AbstractContextManager[None]:
    """Prune ``plan``'s sublayers for forward passes run inside the ``with`` block, in this context only.

    Args:
        plan: the pruned sublayers; each adds a zero update to the residual stream ...
        stand_ins: ... unless it has a recovery stand-in here, keyed ``(layer, "attn"|"mlp")``, which
            maps the sublayer's residual-stream input (``resid_pre`` for attn, ``resid_mid`` for mlp,
            ``[batch, seq, d]``) to the update added instead. A stand-in for a whole block sits on its
            attn slot (input ``resid_pre``) with the mlp slot left empty.

    Nested blocks replace the outer plan and stand-ins (they do not merge); the outer ones are restored
    on exit. The model must have had :func:`install_gates` run on it (``load_model`` does).
    """
    stand_ins = dict(stand_ins or {})
    digests = {unit: stand_in_digest(stand_in) for unit, stand_in in stand_ins.items()}
    return _scoped(plan=plan, stand_ins=stand_ins, stand_in_digests=digests)


def stand_in_digest(stand_in: StandIn) -> str | None:
    """A digest of a stand-in's parameters (``None`` for a plain callable, whose behaviour cannot be hashed).

    Two stand-ins with equal digests compute the same update, so states computed under one may be reused
    under the other (see :mod:`pruneviz.engine.incremental`).
    """
    if not isinstance(stand_in, nn.Module):
        return None
    return tensor_digest(sorted(stand_in.state_dict().items()), prefix=type(stand_in).__name__)


def record_residuals(callback: ResidualCallback) -> contextlib.AbstractContextManager[None]:
    """Send every block's ``resid_pre``, ``resid_mid`` and ``resid_post`` to ``callback`` inside the block.

    ``callback(layer, name, tensor)`` gets ``[batch, seq, d]`` tensors in the model's dtype; it must not
    modify them.
    """
    return _scoped(record=callback)


def resume_from(layer: int, state: torch.Tensor) -> contextlib.AbstractContextManager[None]:
    """Start the decoder stack at block ``layer`` from ``state`` for forward passes inside the block.

    Args:
        layer: first block to run, ``0 <= layer < L``; blocks before it return their input unchanged.
        state: ``[batch, seq, d]`` residual stream entering block ``layer``, computed earlier on the very
            same batch (same tokens, mask and positions) under a plan that agrees with the current one on
            blocks ``< layer``; the result is then bit-identical to a full forward pass.
    """
    return _scoped(resume=(layer, state))


def active_stand_in_digests() -> Mapping[tuple[int, str], str | None]:
    """Digests (see :func:`stand_in_digest`) of the stand-ins in force in the calling context."""
    return _ACTIVE.get().stand_in_digests


def active_plan() -> PruningPlan:
    """The plan in force in the calling context (empty outside :func:`apply_plan`)."""
    return _ACTIVE.get().plan
