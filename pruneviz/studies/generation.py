"""Greedy generation of one prompt under a plan, for side-by-side samples (the engine's KV-cached decoder,
:mod:`pruneviz.engine.decoding`, without checkpoints)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..core.errors import SettingError
from ..core.gating import apply_plan
from ..core.plan import PruningPlan
from ..engine.decoding import GenerationRequest, generate_requests

MAX_NEW_TOKENS = 256


@dataclass(frozen=True)
class Generation:
    """A greedy continuation.

    Attributes:
        prompt: the input text.
        text: the generated continuation only.
        new_tokens: tokens generated (stops early at an end-of-sequence token).
        tokens_per_second: measured generation speed (prompt processing included).
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
    started = time.perf_counter()
    with apply_plan(plan, stand_ins):
        generated = generate_requests(loaded, [GenerationRequest(tuple(ids[0].tolist()), max_new_tokens)], checkpoint=False)[0]
    seconds = time.perf_counter() - started
    text, count = generated.text, len(generated.tokens)
    return Generation(prompt, text, count, count / seconds if seconds > 0 else float("nan"))


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
