"""Batched greedy decoding under the active plan, with a KV cache, stop sequences and a token limit.

Prompts of one batch are left-padded to a common length; every row's positions count its own tokens only
(``cumsum(mask) - 1``), so a padded row computes what it would alone. The prompt is run once (prefill),
then one token per step reads the keys and values cached so far.

On a CPU each prompt is prefilled alone and the batch is formed for decoding only, its cache rows left-padded
with zeros that the mask hides (:func:`_prefill_each`): one prompt of a few hundred tokens already keeps the
cores busy, so a padded batch gains nothing and pays for every pad token (HumanEval's first 16 prompts in
Qwen2.5-Coder's chat format: 3,844 tokens, 5,200 padded into one batch). On a GPU a single prompt leaves most of
the device idle, so the padded batch is prefilled at once. Models with sliding-window layers are always prefilled
as a padded batch (their cache keeps only the window, which the merged rows would have to realign).

A pruned attention sublayer writes no cache entry: its gate returns a zero update (or its stand-in's) without
running the attention. transformers reads the cache's length, and the masks' sizes, from one layer (the first
full-attention one), which would then read zero. :class:`PlanCache` answers those questions from a layer of the
same kind that the plan keeps, so the cache of a pruned layer stays empty and costs no memory.

Finished rows (end-of-sequence token, stop sequence or token limit) leave the batch at once, with their cache
rows, so a batch runs only as long as its longest completion at the width of its unfinished rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn
from transformers import DynamicCache

from ..core.architecture import resolve
from ..core.cache import cached, make_key
from ..core.errors import NumericalError, SettingError
from ..core.gating import active_plan
from ..core.progress import Progress
from .incremental import plan_signature
from .scoring import run_batched


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to continue.

    Attributes:
        ids: the prompt's token ids.
        max_new_tokens: the token limit of the continuation (at least 1).
        stop: stop sequences: generation ends once the continuation's text contains one, and the text is cut
            before it.
    """

    ids: tuple[int, ...]
    max_new_tokens: int
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Generated:
    """A greedy continuation.

    Attributes:
        tokens: the generated token ids (the end-of-sequence token excluded; a stop sequence's tokens included).
        text: the continuation's text, cut before the first stop sequence.
        finish: why it ended: ``"eos"``, ``"stop"`` or ``"length"`` (the token limit).
    """

    tokens: tuple[int, ...]
    text: str
    finish: str


class PlanCache(DynamicCache):
    """A :class:`transformers.DynamicCache` whose length and mask sizes come from layers the plan keeps.

    Args:
        config: the model's config (sliding-window layers get sliding cache layers).
        skipped: the blocks whose attention sublayer is pruned: they never write to the cache.
    """

    def __init__(self, config, skipped: frozenset[int]):
        super().__init__(config=config)
        self.skipped = skipped
        self.seen = 0  # tokens run so far (prompt included), for a kind of layer the plan prunes everywhere

    def _live(self, layer_idx: int) -> int | None:
        """``layer_idx``, or the first kept layer of its kind (sliding or not) when its attention is pruned; ``None``: none kept."""
        if layer_idx not in self.skipped:
            return layer_idx
        sliding = self.layers[layer_idx].is_sliding
        return next((i for i, layer in enumerate(self.layers) if i not in self.skipped and layer.is_sliding == sliding), None)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        live = self._live(layer_idx)
        return self.seen if live is None else super().get_seq_length(live)

    def get_mask_sizes(self, query_length: int, layer_idx: int) -> tuple[int, int]:
        live = self._live(layer_idx)
        # no attention of this kind runs: a mask over every token is as good as any (it is never read)
        return (self.seen + query_length, 0) if live is None else super().get_mask_sizes(query_length, live)

    def get_query_offset(self, layer_idx: int = 0) -> int:
        return self.get_seq_length(layer_idx)


def end_token_ids(loaded) -> set[int]:
    """The ids that end a sequence: the tokenizer's end-of-sequence token and the generation config's (an instruct
    model's end-of-turn token, e.g. Qwen's ``<|im_end|>``)."""
    ids = {loaded.tokenizer.eos_token_id}
    configured = getattr(getattr(loaded.model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
    return {i for i in ids if i is not None}


def _cut(text: str, stop: tuple[str, ...]) -> int | None:
    """Where the first stop sequence starts in ``text`` (``None``: none occurs)."""
    found = [index for index in (text.find(s) for s in stop) if index >= 0]
    return min(found) if found else None


def _prefill_each(
    loaded, base, requests: Sequence[GenerationRequest], skipped: frozenset[int]
) -> tuple[PlanCache, torch.Tensor]:
    """Run each prompt alone (no padding) and merge the caches into one batch cache, each row left-padded with
    zeros to the longest prompt (the batch's attention mask hides them).

    Args:
        loaded: a ``LoadedModel`` (its device and config).
        base: its decoder stack without the output head (``resolve(loaded.model, loaded.adapter.base)``).
        requests: the batch's prompts.
        skipped: the blocks whose attention sublayer the plan prunes: their cache layers stay empty in every row.

    Returns:
        the merged cache (``seen`` = the longest prompt's length) and the last prompt position's hidden state of
        each request, ``[B, d]``.
    """
    caches, last = [], []
    for request in requests:
        ids = torch.tensor([request.ids], device=loaded.device)  # [1, T_i]
        positions = torch.arange(ids.shape[1], device=ids.device)[None]  # [1, T_i]
        cache = PlanCache(loaded.model.config, skipped)
        out = base(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=positions, past_key_values=cache,
                   use_cache=True)
        caches.append(cache)
        last.append(out.last_hidden_state[:, -1])
    width = max(len(r.ids) for r in requests)
    merged = PlanCache(loaded.model.config, skipped)
    for index, layer in enumerate(merged.layers):
        rows = [cache.layers[index] for cache in caches]
        if not rows[0].is_initialized:  # a pruned attention sublayer: no entry in any row
            continue
        # keys and values [1, heads, T_i, head_dim] -> [B, heads, width, head_dim], zeros before each prompt
        keys = torch.cat([nn.functional.pad(row.keys, (0, 0, width - row.keys.shape[-2], 0)) for row in rows])
        values = torch.cat([nn.functional.pad(row.values, (0, 0, width - row.values.shape[-2], 0)) for row in rows])
        layer.lazy_initialization(keys, values)
        layer.keys, layer.values = keys, values
    merged.seen = width
    return merged, torch.cat(last)


def _decode_batch(loaded, requests: Sequence[GenerationRequest], ends: set[int], prefill_alone: bool) -> list[Generated]:
    """Greedy continuations of one batch of requests (left-padded), under the active plan; ``prefill_alone``: each
    prompt is prefilled alone (:func:`_prefill_each`) where the model has no sliding-window layer."""
    device = loaded.device
    width = max(len(r.ids) for r in requests)
    pad = loaded.tokenizer.pad_token_id
    pad = pad if pad is not None else next(iter(ends))
    input_ids = torch.tensor([[pad] * (width - len(r.ids)) + list(r.ids) for r in requests], device=device)  # [B, T]
    mask = torch.tensor([[0] * (width - len(r.ids)) + [1] * len(r.ids) for r in requests], device=device)  # [B, T]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # [B, T]: each row counts its own tokens
    skipped = frozenset(layer for layer, sublayer in active_plan().pruned if sublayer == "attn")
    cache = PlanCache(loaded.model.config, skipped)
    base = resolve(loaded.model, loaded.adapter.base)
    rows = list(range(len(requests)))  # request index of each row still in the batch
    generated: list[list[int]] = [[] for _ in requests]
    finished: list[Generated | None] = [None] * len(requests)

    def forward(step_ids: torch.Tensor) -> torch.Tensor:
        """The batch's next step (the prompts, or one token per row): the last position's hidden states, ``[B, d]``."""
        out = base(input_ids=step_ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True)
        cache.seen += step_ids.shape[1]
        return out.last_hidden_state[:, -1]

    with torch.no_grad():
        if prefill_alone and len(requests) > 1 and not any(layer.is_sliding for layer in cache.layers):
            cache, hidden = _prefill_each(loaded, base, requests, skipped)
        else:
            hidden = forward(input_ids)
        while rows:
            logits = loaded.logits(hidden)  # [B, vocab], fp32
            if not torch.isfinite(logits).all():
                raise NumericalError(
                    "The model produced non-finite logits while generating; load it in float32 (--dtype float32) "
                    "or check the model's weights."
                )
            tokens = logits.argmax(-1).tolist()
            keep = []
            for row, (index, token) in enumerate(zip(rows, tokens)):
                request = requests[index]
                if token in ends:
                    finished[index] = _finish(loaded, generated[index], request.stop, "eos")
                    continue
                generated[index].append(token)
                text = loaded.tokenizer.decode(generated[index], skip_special_tokens=True)
                if request.stop and _cut(text, request.stop) is not None:
                    finished[index] = _finish(loaded, generated[index], request.stop, "stop")
                elif len(generated[index]) >= request.max_new_tokens:
                    finished[index] = _finish(loaded, generated[index], request.stop, "length")
                else:
                    keep.append(row)
            if len(keep) < len(rows):
                if not keep:
                    break
                selected = torch.tensor(keep, device=device)
                cache.batch_select_indices(selected)
                mask, positions = mask[selected], positions[selected]
                tokens = [tokens[row] for row in keep]
                rows = [rows[row] for row in keep]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)  # [B', T + 1]
            positions = positions[:, -1:] + 1  # [B', 1]
            hidden = forward(torch.tensor(tokens, device=device)[:, None])  # one new token per row, [B', 1]
    return finished


def _finish(loaded, tokens: list[int], stop: tuple[str, ...], why: str) -> Generated:
    text = loaded.tokenizer.decode(tokens, skip_special_tokens=True)
    cut = _cut(text, stop) if stop else None
    return Generated(tuple(tokens), text if cut is None else text[:cut], why)


def _batch_key(loaded, signature: str, requests: Sequence[GenerationRequest]) -> str:
    digest = hashlib.sha256(repr([(r.ids, r.max_new_tokens, r.stop) for r in requests]).encode()).hexdigest()
    return make_key("batch-generations", loaded.fingerprint, str(loaded.dtype), signature, digest)


def generate_requests(
    loaded,
    requests: Sequence[GenerationRequest],
    batch_size: int = 8,
    progress: Progress | None = None,
    checkpoint: bool = True,
    resumed: list[int] | None = None,
    finished: Callable[[Sequence[int], list[Generated]], None] | None = None,
    prefill_alone: bool | None = None,
) -> list[Generated]:
    """Greedy continuations of ``requests`` under the plan and stand-ins of the enclosing ``apply_plan``.

    Requests are batched by prompt length (least padding); each batch is checkpointed in the result cache under
    its contents, the model and the plan, so an interrupted run resumes from its finished batches.

    Args:
        loaded: a ``LoadedModel``.
        requests: the prompts, token limits and stop sequences.
        batch_size: prompts per batch (at most; halved on out-of-memory).
        progress: ``progress(done, total)`` in requests after every batch; may raise ``Cancelled``.
        checkpoint: read and write per-batch checkpoints (``False``: neither, e.g. for benchmarks).
        resumed: if given, a one-item list that receives how many continuations were read from checkpoints.
        finished: called after every batch with the indices (into ``requests``) of its prompts and their
            continuations, e.g. to score them as soon as they are decoded.
        prefill_alone: prefill each prompt of a batch alone, without padding, and batch the decoding only
            (``None``: on a CPU, where it saves the pad tokens' compute; see the module's docstring). The
            continuations are the same either way, up to rounding below float32.

    Returns:
        one :class:`Generated` per request, in the order of ``requests``.

    Raises:
        SettingError: ``batch_size < 1``, a token limit below 1, an empty prompt, a prompt plus its token limit
            longer than the model's context, or out of memory with one prompt.
        NumericalError: the model produced non-finite logits.
    """
    if batch_size < 1:
        raise SettingError(f"Batch size must be at least 1 (got {batch_size}).")
    for request in requests:
        if request.max_new_tokens < 1:
            raise SettingError(f"A token limit must be at least 1 (got {request.max_new_tokens}).")
        if not request.ids:
            raise SettingError("A prompt is empty; give at least one token to continue.")
        if len(request.ids) + request.max_new_tokens > loaded.max_length:
            raise SettingError(
                f"A prompt of {len(request.ids):,} tokens plus {request.max_new_tokens:,} new ones exceeds the model's "
                f"{loaded.max_length:,}-token context; shorten the prompt or lower the token limit."
            )
    order = sorted(range(len(requests)), key=lambda i: (len(requests[i].ids), i))
    signature = plan_signature(loaded.n_blocks)
    ends = end_token_ids(loaded)
    reused = [0]
    if prefill_alone is None:
        prefill_alone = loaded.device.type == "cpu"

    def compute(chunk: Sequence[int]) -> list[Generated]:
        batch = [requests[i] for i in chunk]
        run = lambda: _decode_batch(loaded, batch, ends, prefill_alone)  # noqa: E731
        if signature is None:
            outputs = run()
        else:
            outputs, hit = cached(_batch_key(loaded, signature, batch), run, checkpoint)
            reused[0] += len(outputs) if hit else 0
        if finished is not None:
            finished(chunk, outputs)
        return outputs

    outputs = run_batched(order, batch_size, compute, progress)
    results: list[Generated | None] = [None] * len(requests)
    for index, output in zip(order, outputs):
        results[index] = output
    if resumed is not None:
        resumed[:] = reused
    return results
