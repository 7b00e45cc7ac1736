"""What a pruning plan removes: parameters, KV-cache bytes and forward FLOPs per token.

The one home of plan cost: the prune page's cards and plan line, and the export report all read it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import SettingError
from .plan import PruningPlan

# tokens attended to when estimating the attention FLOPs a pruned sublayer saves
FLOPS_CONTEXT = 1024


@dataclass(frozen=True)
class PlanCost:
    """What a plan removes from one model, per token.

    Attributes:
        attn / mlp: pruned attention / MLP sublayers (a pruned block counts one of each).
        params_removed: parameters of the pruned sublayers, each with its norms (count).
        params_removed_percent: as % of all parameters.
        kv_bytes_per_token: KV-cache bytes per token no longer stored (K and V of each pruned attention
            sublayer, ``value_bytes`` each).
        flops_per_token: estimated forward FLOPs per token saved: 2 per weight of each pruned sublayer (one
            multiply-add) plus, per pruned attention sublayer, 4 × heads × head dim × context for QKᵀ and AV
            (Kaplan et al. 2020, §2.1).
        flops_percent: as % of the full model's estimate at the same context.
        context: the context (tokens) of the attention FLOPs estimate.
    """

    attn: int
    mlp: int
    params_removed: int
    params_removed_percent: float
    kv_bytes_per_token: int
    flops_per_token: int
    flops_percent: float
    context: int

    def summary(self) -> str:
        """One sentence: ``"2 attn and 1 mlp sublayers pruned: 3.54M parameters (2.6% of the model)."``"""
        return (
            f"{self.attn} attn and {self.mlp} mlp sublayers pruned: {self.params_removed / 1e6:,.2f}M parameters "
            f"({self.params_removed_percent / 100:.1%} of the model)."
        )


def plan_cost(info, plan: PruningPlan, value_bytes: int, context: int = FLOPS_CONTEXT) -> PlanCost:
    """What ``plan`` removes from the model described by ``info`` (a :class:`~pruneviz.core.architecture.ModelInfo`).

    Args:
        value_bytes: bytes per KV-cache value (the loaded dtype's ``itemsize``: 4 for float32, 2 for bf16/fp16).
        context: tokens attended to, for the attention-score FLOPs.

    Raises:
        SettingError: ``value_bytes`` or ``context`` below 1.
    """
    if value_bytes < 1 or context < 1:
        raise SettingError(f"Plan cost needs value_bytes >= 1 and context >= 1 tokens (got {value_bytes} and {context}).")
    attn = sum(1 for _, name in plan.pruned if name == "attn")
    mlp = len(plan.pruned) - attn
    params = attn * info.params_attn + mlp * info.params_mlp
    attn_score_flops = 4 * info.n_heads * info.head_dim * context
    flops = 2 * params + attn * attn_score_flops
    full_flops = 2 * info.params_total + info.n_blocks * attn_score_flops
    return PlanCost(
        attn, mlp, params, 100.0 * params / info.params_total, attn * info.kv_bytes_per_token_per_attn(value_bytes),
        flops, 100.0 * flops / full_flops, context,
    )
