"""Static influence metrics: how much a unit changes the residual stream, in one forward pass.

For a unit with input ``x`` and output ``y = x + f(x)`` (per token, fp64), with ``x``/``y`` taken at
(docs/ARCHITECTURE.md, "Vocabulary"): block ``resid_pre -> resid_post``; attn ``resid_pre -> resid_mid``;
mlp ``resid_mid -> resid_post``. Each metric is the mean over real (non-padding) tokens of a
per-token value, oriented so that ascending order is the pruning order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pandas as pd
import torch

from ..core.gating import apply_plan, record_residuals
from ..core.plan import PruningPlan


@dataclass(frozen=True)
class StaticMetric:
    """A per-token statistic of ``(x, y)`` averaged over tokens.

    Attributes:
        name: registry key and CSV ``metric`` value.
        label: short axis label.
        formula: the per-token formula (for tooltips).
        source: where the metric comes from.
        per_token: ``fn(x, y) -> [n]`` for ``x``, ``y`` of shape ``[n, d]`` (fp64).
    """

    name: str
    label: str
    formula: str
    source: str
    per_token: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _cos(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(x, y, dim=-1)


STATIC_METRICS: dict[str, StaticMetric] = {
    m.name: m
    for m in [
        StaticMetric(
            "cosine", "cosine distance", "1 − cos(x, y), ∈ [0, 2]",
            "Block Influence, ShortGPT (Men et al. 2024, §3)", lambda x, y: 1 - _cos(x, y),
        ),
        StaticMetric(
            "angular", "angular distance", "arccos(cos(x, y)) / π, ∈ [0, 1]",
            "Gromov et al. 2024, 'The Unreasonable Ineffectiveness of the Deeper Layers', §3",
            lambda x, y: torch.arccos(_cos(x, y).clamp(-1, 1)) / math.pi,
        ),
        StaticMetric("l1", "‖f(x)‖₁", "‖y − x‖₁", "update norm (Siddiqui et al. 2024, §3)", lambda x, y: (y - x).norm(p=1, dim=-1)),
        StaticMetric("l2", "‖f(x)‖₂", "‖y − x‖₂", "update norm (Siddiqui et al. 2024, §3)", lambda x, y: (y - x).norm(dim=-1)),
        StaticMetric(
            "rel_l1", "‖f(x)‖₁ / ‖x‖₁", "‖y − x‖₁ / ‖x‖₁", "relative update norm (Siddiqui et al. 2024, §3)",
            lambda x, y: (y - x).norm(p=1, dim=-1) / x.norm(p=1, dim=-1),
        ),
        StaticMetric(
            "rel_l2", "‖f(x)‖₂ / ‖x‖₂", "‖y − x‖₂ / ‖x‖₂", "relative update norm (Siddiqui et al. 2024, §3)",
            lambda x, y: (y - x).norm(dim=-1) / x.norm(dim=-1),
        ),
    ]
}

# which residual-stream positions are a unit's input x and output y
UNIT_ENDPOINTS = {"block": ("resid_pre", "resid_post"), "attn": ("resid_pre", "resid_mid"), "mlp": ("resid_mid", "resid_post")}
CSV_COLUMNS = ["unit", "layer", "sublayer", "metric", "value", "stderr", "dataset"]


class _StaticAccumulator:
    """Receives residual-stream tensors during a forward pass and sums per-token metric values (fp64)."""

    def __init__(self, metrics: list[StaticMetric], kinds: list[str], mask: torch.Tensor):
        self.metrics, self.kinds = metrics, kinds
        self.mask = mask.bool()
        self.sums: dict[tuple[int, str, str], float] = {}
        self.tokens = 0
        self._current: dict[str, torch.Tensor] = {}

    def __call__(self, layer: int, name: str, tensor: torch.Tensor) -> None:
        # keep only real tokens, in fp64: [n_real, d]; in fp32, 1 - cos and arccos(cos) lose about
        # 1e-5 of their value to cancellation for the small distances of deep blocks
        real = tensor[self.mask.to(tensor.device)]
        self._current[name] = (real.cpu() if real.device.type == "mps" else real).double()  # MPS has no fp64
        if name != "resid_post":
            return
        for kind in self.kinds:
            x_name, y_name = UNIT_ENDPOINTS[kind]
            x, y = self._current[x_name], self._current[y_name]
            for metric in self.metrics:
                key = (layer, kind, metric.name)
                self.sums[key] = self.sums.get(key, 0.0) + metric.per_token(x, y).double().sum().item()
        self._current = {}


def static_influence(
    loaded,
    batch: dict[str, torch.Tensor],
    metrics: list[str],
    kinds: list[str],
    dataset: str,
    plan: PruningPlan = PruningPlan(),
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Compute static metrics of every unit in one forward pass per batch.

    Args:
        loaded: a :class:`pruneviz.core.loading.LoadedModel`.
        batch: ``{"input_ids": [N, T], "attention_mask": [N, T]}`` calibration tokens (padding = 0 in the mask).
        metrics: names from :data:`STATIC_METRICS`.
        kinds: any of ``"block"``, ``"attn"``, ``"mlp"``.
        dataset: label written to the ``dataset`` column.
        plan: measure the model with this plan applied (default: the full model).
        batch_size: sequences per forward pass.
        progress: called as ``progress(done, total)`` after each batch.

    Returns:
        DataFrame with :data:`CSV_COLUMNS`: one row per unit and metric; ``stderr`` is NaN (undefined).

    Raises:
        KeyError: an unknown metric name (callers validate names against the registry first).
    """
    chosen = [STATIC_METRICS[name] for name in metrics]
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    sums: dict[tuple[int, str, str], float] = {}
    tokens = 0
    total = len(input_ids)
    for start in range(0, total, batch_size):
        mask = attention_mask[start : start + batch_size]
        accumulator = _StaticAccumulator(chosen, kinds, mask)
        with torch.no_grad(), apply_plan(plan), record_residuals(accumulator):
            loaded.hidden_states(input_ids[start : start + batch_size], mask)
        for key, value in accumulator.sums.items():
            sums[key] = sums.get(key, 0.0) + value
        tokens += int(mask.sum())
        if progress:
            progress(min(start + batch_size, total), total)
    rows = [
        {
            "unit": str(layer) if kind == "block" else f"{layer}.{kind}",
            "layer": layer,
            "sublayer": kind,
            "metric": name,
            "value": value / tokens,
            "stderr": float("nan"),
            "dataset": dataset,
        }
        for (layer, kind, name), value in sorted(sums.items())
    ]
    return pd.DataFrame(rows, columns=CSV_COLUMNS)
