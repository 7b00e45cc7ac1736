"""Re-running the decoder stack from any block, reusing what a plan cannot change.

A plan whose first pruned unit is in block ``k`` leaves ``resid_pre[0..k]`` exactly as in the full
model, so only blocks ``k..L-1`` need to be recomputed. :class:`PrefixRunner` runs the full model once
on a batch, keeps every block's input (``resid_pre``) and call arguments (attention mask, rotary
position embeddings, ...), and then evaluates any plan from its first changed block on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .architecture import resolve
from .gating import apply_plan, record_block_calls, record_residuals
from .plan import PruningPlan


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
    _calls: dict[int, tuple[tuple, dict]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        stored: dict[int, torch.Tensor] = {}

        def keep(layer: int, name: str, tensor: torch.Tensor) -> None:
            if name == "resid_pre":
                stored[layer] = tensor

        def keep_call(layer: int, args: tuple, kwargs: dict) -> None:
            self._calls[layer] = (args, kwargs)

        with torch.no_grad(), apply_plan(PruningPlan()), record_residuals(keep), record_block_calls(keep_call):
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
        blocks = self.loaded.adapter.blocks(self.loaded.model)
        hidden = self.resid_pre[start]
        with torch.no_grad(), apply_plan(plan):
            for layer in range(start, self.loaded.n_blocks):
                args, kwargs = self._calls[layer]
                output = blocks[layer](hidden, *args, **kwargs)
                # decoder layers return a bare tensor or a tuple depending on the transformers version
                hidden = output[0] if isinstance(output, (tuple, list)) else output
            hidden = resolve(self.loaded.model, self.loaded.adapter.final_norm)(hidden)
        self.count.blocks += self.loaded.n_blocks - start
        self.count.passes += 1
        return hidden
