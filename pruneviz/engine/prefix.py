"""Re-running the decoder stack from any block, reusing what a plan cannot change.

A plan whose first pruned unit is in block ``k`` leaves ``resid_pre[0..k]`` exactly as in the full
model, so only blocks ``k..L-1`` need to be recomputed. :class:`PrefixRunner` runs the full model once
on a batch, keeps every block's input (``resid_pre``), and then evaluates any plan from its first
changed block on (:func:`pruneviz.core.gating.resume_from`). Evaluation keeps such states across plans in a
bounded store instead (:mod:`pruneviz.engine.incremental`); the adaptive metrics hold one batch's states for
the length of an estimate, which this class does without eviction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..core.gating import apply_plan, record_residuals, resume_from
from ..core.plan import PruningPlan


@dataclass
class ForwardCount:
    """Counts block forward passes (one block on one batch = 1), the unit of cost of adaptive metrics."""

    blocks: int = 0
    passes: int = 0


@dataclass
class PrefixRunner:
    """The full model's residual stream on one batch, reusable to evaluate plans cheaply.

    Attributes:
        loaded: a ``LoadedModel``.
        input_ids / attention_mask: ``[B, T]`` batch (1 = real token in the mask).
        resid_pre: ``L`` tensors ``[B, T, d]``: block inputs of the unpruned model.
        final_hidden: ``[B, T, d]`` final-normed hidden states of the unpruned model.
        count: block forwards spent so far (the initial full pass counts ``L``).
    """

    loaded: object
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    resid_pre: list[torch.Tensor] = field(default_factory=list)
    final_hidden: torch.Tensor | None = None
    count: ForwardCount = field(default_factory=ForwardCount)

    def __post_init__(self) -> None:
        stored: dict[int, torch.Tensor] = {}

        def keep(layer: int, name: str, tensor: torch.Tensor) -> None:
            if name == "resid_pre":
                stored[layer] = tensor

        with torch.no_grad(), apply_plan(PruningPlan()), record_residuals(keep):
            self.final_hidden = self.loaded.hidden_states(self.input_ids, self.attention_mask)
        self.resid_pre = [stored[i] for i in range(self.loaded.n_blocks)]
        self.count.blocks += self.loaded.n_blocks
        self.count.passes += 1

    def run(self, plan: PruningPlan, start: int | None = None) -> torch.Tensor:
        """Final-normed hidden states ``[B, T, d]`` of the model under ``plan``.

        Args:
            plan: units to prune.
            start: first block to recompute; default ``plan.first_layer()`` (everything before it is
                unchanged by the plan). ``0`` recomputes every block (the naive method).
        """
        start = plan.first_layer() if start is None else start
        if start is None:
            return self.final_hidden
        with torch.no_grad(), apply_plan(plan), resume_from(start, self.resid_pre[start]):
            hidden = self.loaded.hidden_states(self.input_ids, self.attention_mask)
        self.count.blocks += self.loaded.n_blocks - start
        self.count.passes += 1
        return hidden
