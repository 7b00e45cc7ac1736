"""Greedy generation under a plan.

Generation recomputes the whole prefix at every step instead of using a KV cache: a pruned attention
sublayer writes no cache entries, which would desynchronise the cache's sequence length (read from
one layer) from the positions of the others. For the short side-by-side samples this is for, the
quadratic cost does not matter.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..core.errors import SettingError
from ..core.gating import apply_plan
from ..core.plan import PruningPlan

MAX_NEW_TOKENS = 256


@dataclass(frozen=True)
class Generation:
    """A greedy continuation.

    Attributes:
        prompt: the input text.
        text: the generated continuation only.
        new_tokens: tokens generated (stops early at the end-of-sequence token).
        tokens_per_second: measured generation speed (without a KV cache, see module docstring).
    """

    prompt: str
    text: str
    new_tokens: int
    tokens_per_second: float


def generate_greedy(
    loaded, prompt: str, plan: PruningPlan = PruningPlan(), max_new_tokens: int = 32, stand_ins: dict | None = None
) -> Generation:
    """Greedy decoding of ``max_new_tokens`` tokens after ``prompt`` with ``plan`` (and stand-ins) applied.

    Raises:
        SettingError: empty prompt, ``max_new_tokens`` outside 1..256, or prompt + continuation longer
            than the model's context.
        PlanError: the plan names a block the model lacks.
    """
    plan.validate(loaded.n_blocks)
    if not prompt.strip():
        raise SettingError("The prompt is empty; type some text to continue.")
    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise SettingError(f"Generate between 1 and {MAX_NEW_TOKENS} new tokens (got {max_new_tokens}).")
    ids = loaded.tokenizer(prompt, return_tensors="pt")["input_ids"]
    if ids.shape[1] + max_new_tokens > loaded.max_length:
        raise SettingError(f"Prompt plus continuation exceed the model's {loaded.max_length}-token context; shorten the prompt.")
    eos = loaded.tokenizer.eos_token_id
    generated: list[int] = []
    started = time.perf_counter()
    with torch.no_grad(), apply_plan(plan, stand_ins):
        for _ in range(max_new_tokens):
            hidden = loaded.hidden_states(ids, torch.ones_like(ids))
            token = int(loaded.logits(hidden[0, -1]).argmax())
            if token == eos:
                break
            generated.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    seconds = time.perf_counter() - started
    text = loaded.tokenizer.decode(generated, skip_special_tokens=True)
    return Generation(prompt, text, len(generated), len(generated) / seconds if seconds > 0 else float("nan"))


def generate_side_by_side(
    loaded, prompt: str, plan: PruningPlan, stand_ins: dict | None = None, max_new_tokens: int = 32
) -> dict[str, Generation]:
    """Greedy continuations of one prompt by the unpruned model, the pruned one and (with ``stand_ins``) the recovered one.

    Each runs under its own plan scope, so concurrent sessions never see each other's plan.

    Returns:
        ``{"unpruned": ..., "pruned": ..., "recovered": ...}`` (``"recovered"`` only with ``stand_ins``),
        each with its measured tokens/s.

    Raises:
        SettingError, PlanError: as :func:`generate_greedy`.
    """
    variants = {"unpruned": (PruningPlan(), None), "pruned": (plan, None)}
    if stand_ins:
        variants["recovered"] = (plan, stand_ins)
    return {
        name: generate_greedy(loaded, prompt, variant_plan, max_new_tokens, variant_stand_ins)
        for name, (variant_plan, variant_stand_ins) in variants.items()
    }
