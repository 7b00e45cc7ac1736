"""Incremental evaluation: resume the decoder stack from the deepest block-boundary state already known.

A plan whose first pruned unit is in block ``k`` leaves the residual stream entering blocks ``0..k``
exactly as in the unpruned model; more generally two plans (with their recovery stand-ins) that agree on
blocks ``< k`` produce the same state entering block ``k``. Every evaluated batch therefore leaves its
block-boundary states ``resid_pre[k]`` (``[B, T, d]``, ``k = 1..L``; ``resid_pre[L]`` stands for the last
block's output ``resid_post[L-1]``, before the final norm; docs/ARCHITECTURE.md, "residual stream") in a :class:`~pruneviz.engine.hidden_store.HiddenStateStore`, keyed by

    (model fingerprint, batch tokens/mask/positions, k, the plan's units and stand-ins in blocks < k),

and the next plan restarts from the deepest boundary whose key matches: toggling a sublayer in block
``k`` after evaluating any plan that agrees before ``k`` recomputes only blocks ``k..L-1``, and
re-evaluating a plan already seen recomputes no block at all. The states are the very tensors a full
forward pass computed, so results are bit-identical to the plain path (tested in
``tests/unit/test_incremental.py``). Adaptive influence evaluates its subnetworks the same way, over a store of
its own (:func:`private_store`).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from dataclasses import dataclass
from typing import Iterator

import torch

from ..core.architecture import resolve
from ..core.digest import tensor_digest
from ..core.errors import SettingError
from ..core.formatting import is_whole_number, shown
from ..core.gating import active_plan, active_stand_in_digests, record_residuals, resume_from
from .hidden_store import HiddenStateStore

MIB = 2**20
# budgets of the process-wide store (MiB), overridable by environment variables
DEFAULT_BUDGETS_MIB = {"gpu": 1024, "cpu": 1024, "disk": 4096}

_store: HiddenStateStore | None = None
_store_lock = threading.Lock()
_override: contextvars.ContextVar[tuple[HiddenStateStore | None] | None] = contextvars.ContextVar(
    "pruneviz_store_override", default=None
)


@dataclass
class BlockWork:
    """Block forward passes spent by :func:`decoder_states` (one block on one batch = 1): the unit of cost
    of evaluations and adaptive metrics alike.

    ``computed`` were run; ``reused`` were skipped because a stored boundary state covered them.
    """

    computed: int = 0
    reused: int = 0

    @property
    def naive(self) -> int:
        """Block forwards the same passes cost without reuse (every pass runs all L blocks)."""
        return self.computed + self.reused


_work: contextvars.ContextVar[BlockWork | None] = contextvars.ContextVar("pruneviz_block_work", default=None)


def budgets_from_environment() -> dict[str, int]:
    """Store budgets in bytes: ``$PRUNEVIZ_STATE_{GPU,CPU,DISK}_MB`` (MiB) or :data:`DEFAULT_BUDGETS_MIB`.

    The GPU tier is used only when CUDA is available.

    Raises:
        SettingError: a variable is not a non-negative whole number.
    """
    budgets = {}
    for tier, default in DEFAULT_BUDGETS_MIB.items():
        text = os.environ.get(f"PRUNEVIZ_STATE_{tier.upper()}_MB", str(default))
        if not is_whole_number(text):
            raise SettingError(
                f"PRUNEVIZ_STATE_{tier.upper()}_MB must be a whole number of MiB (got {shown(text)!r}); fix or unset it."
            )
        budgets[tier] = int(text) * MIB
    if not torch.cuda.is_available():
        budgets["gpu"] = 0
    return budgets


def private_store() -> HiddenStateStore:
    """A store for one long computation's own batches (an adaptive-influence run), bounded by the same budgets as
    :func:`shared_store` but without a disk tier: its states are rarely wanted again, and in the shared store
    they would evict the interactive evaluations' states.
    """
    budgets = budgets_from_environment()
    return HiddenStateStore(budgets["gpu"], budgets["cpu"], 0)


def shared_store() -> HiddenStateStore:
    """The process-wide store every evaluation uses by default (created on first use; thread-safe).

    Its disk tier lives in a fresh private temporary directory (removed by ``clear()`` and at exit).
    """
    global _store
    with _store_lock:
        if _store is None:
            budgets = budgets_from_environment()
            _store = HiddenStateStore(budgets["gpu"], budgets["cpu"], budgets["disk"])
        return _store


def active_store() -> HiddenStateStore | None:
    """The store in force in this context: the one set by :func:`using_store`, else :func:`shared_store`."""
    override = _override.get()
    return override[0] if override is not None else shared_store()


@contextlib.contextmanager
def using_store(store: HiddenStateStore | None) -> Iterator[None]:
    """Use ``store`` (``None``: no incremental reuse, the plain path) for evaluations inside the block."""
    token = _override.set((store,))
    try:
        yield
    finally:
        _override.reset(token)


@contextlib.contextmanager
def counting_blocks(work: BlockWork | None = None) -> Iterator[BlockWork]:
    """Count the block forward passes computed and reused by evaluations inside the block (into ``work``, if given)."""
    work = work if work is not None else BlockWork()
    token = _work.set(work)
    try:
        yield work
    finally:
        _work.reset(token)


def _batch_digest(loaded, input_ids: torch.Tensor, attention_mask, position_ids) -> str:
    masks = attention_mask.items() if isinstance(attention_mask, dict) else [("mask", attention_mask)]
    tensors = [("ids", input_ids), *sorted(masks, key=lambda item: item[0])]
    if position_ids is not None:
        tensors.append(("positions", position_ids))
    return tensor_digest(tensors, prefix=loaded.fingerprint, length=24)


def _prefix_signatures(n_blocks: int) -> list[str] | None:
    """``signatures[k]``: the active plan's units and stand-ins in blocks ``< k`` (k = 0..L); ``None`` if not hashable."""
    plan = active_plan()
    digests = active_stand_in_digests()
    if any(digest is None for digest in digests.values()):
        return None
    by_layer: dict[int, list[str]] = {}
    for layer, sublayer in plan.pruned:
        by_layer.setdefault(layer, []).append(f"{layer}.{sublayer}")
    for (layer, sublayer), digest in digests.items():
        by_layer.setdefault(layer, []).append(f"{layer}.{sublayer}~{digest}")
    signatures, parts = [], []
    for k in range(n_blocks + 1):
        signatures.append(",".join(parts))
        parts.extend(sorted(by_layer.get(k, [])))
    return signatures


def plan_signature(n_blocks: int) -> str | None:
    """A canonical string of the active plan and its stand-ins' digests (``None``: a stand-in cannot be hashed).

    Equal signatures compute equal results, so it keys per-batch checkpoints (see
    :func:`pruneviz.engine.scoring.score_requests`).
    """
    signatures = _prefix_signatures(n_blocks)
    return None if signatures is None else signatures[n_blocks]


def decoder_states(
    loaded,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | dict[str, torch.Tensor],
    position_ids: torch.Tensor | None = None,
    pin: bool = False,
) -> torch.Tensor:
    """Final-normed hidden states ``[B, T, d]`` under the active plan, reusing stored block-boundary states.

    Same arguments and result as ``LoadedModel.hidden_states`` (bit-identical); the cost is the blocks
    after the deepest boundary state already stored for this batch and plan prefix. Without a store
    (``using_store(None)``) or with a stand-in that cannot be hashed, it is the plain forward pass.
    ``pin`` keeps the states this call stores ahead of others in the store (see ``HiddenStateStore.put``).
    """
    store = active_store()
    n_blocks = loaded.n_blocks
    signatures = _prefix_signatures(n_blocks) if store is not None else None
    work = _work.get()
    if signatures is None:
        if work is not None:
            work.computed += n_blocks
        return loaded.hidden_states(input_ids, attention_mask, position_ids)
    batch = _batch_digest(loaded, input_ids, attention_mask, position_ids)
    keys = [f"{batch}:{k}:{signatures[k]}" for k in range(n_blocks + 1)]
    start, state = 0, None
    for k in range(n_blocks, 0, -1):
        state = store.get(keys[k], device=loaded.device)
        if state is not None:
            start = k
            break
    if work is not None:
        work.computed += n_blocks - start
        work.reused += start
    if start == n_blocks:
        with torch.no_grad():
            return resolve(loaded.model, loaded.adapter.final_norm)(state)
    boundaries: dict[int, torch.Tensor] = {}

    def keep(layer: int, name: str, tensor: torch.Tensor) -> None:
        if name == "resid_pre" and layer > start:
            boundaries[layer] = tensor
        elif name == "resid_post" and layer == n_blocks - 1:
            boundaries[n_blocks] = tensor

    resume = resume_from(start, state) if state is not None else contextlib.nullcontext()
    with resume, record_residuals(keep):
        hidden = loaded.hidden_states(input_ids, attention_mask, position_ids)
    for k, tensor in boundaries.items():
        store.put(keys[k], tensor, pin=pin)
    return hidden
