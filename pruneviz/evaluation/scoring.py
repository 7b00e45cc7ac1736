"""Batched log-likelihood primitives shared by every evaluation.

Sequences are sorted by length, right-padded with an attention mask (so padding never changes a real
token's result), and the output head is applied only at the positions that are scored.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence, TypeVar

import torch

from ..errors import SettingError, TokenizationError

log = logging.getLogger(__name__)
T = TypeVar("T")
Progress = Callable[[int, int], None]


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of a context and its continuation, split as lm-evaluation-harness does.

    Trailing spaces of the context move to the continuation; the whole string is encoded once and
    the continuation is what extends the context's own encoding.

    Returns:
        ``(context_ids, continuation_ids)``.
    """
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer(context + continuation)["input_ids"]
    context_ids = tokenizer(context)["input_ids"]
    return context_ids, whole[len(context_ids) :]


def single_token_ids(tokenizer, context: str, options: Sequence[str]) -> list[int]:
    """The one token by which each option extends ``context``'s tokenisation (e.g. ``" A"``..``" D"``).

    Raises:
        TokenizationError: an option is not exactly one extra token, or changes the context's tokens.
    """
    context_ids = tokenizer(context)["input_ids"]
    ids = []
    for option in options:
        whole = tokenizer(context + option)["input_ids"]
        if whole[: len(context_ids)] != context_ids or len(whole) != len(context_ids) + 1:
            raise TokenizationError(
                f"This tokenizer does not encode {option!r} after the prompt as one extra token; "
                "use --format cloze for this model."
            )
        ids.append(whole[-1])
    return ids


def run_batched(
    items: Sequence[T],
    batch_size: int,
    compute: Callable[[Sequence[T]], list],
    progress: Progress | None = None,
) -> list:
    """Apply ``compute`` to consecutive batches of ``items``; halve the batch on out-of-memory.

    Args:
        items: work items, already ordered (e.g. by length).
        batch_size: starting batch size.
        compute: returns one result per item of its batch.
        progress: ``progress(done, total)`` after every batch; may raise ``Cancelled`` to stop.

    Raises:
        SettingError: out of memory even with a batch of one item.
    """
    results: list = []
    start = 0
    while start < len(items):
        chunk = items[start : start + batch_size]
        try:
            results.extend(compute(chunk))
        except torch.OutOfMemoryError:
            if batch_size == 1:
                raise SettingError(
                    "Out of memory even with a batch of one sequence; use a shorter sequence length, "
                    "a smaller model, or a device with more memory."
                ) from None
            batch_size = max(1, batch_size // 2)
            log.warning("Out of memory; retrying with batch size %d.", batch_size)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        start += len(chunk)
        if progress:
            progress(start, len(items))
    return results


def pad_right(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists.

    Returns:
        ``(input_ids [B, T], attention_mask [B, T])`` with 1 for real tokens.
    """
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


def last_position_logprobs(loaded, prompts: Sequence[list[int]], candidates: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of candidate next tokens after each prompt (one forward pass per prompt).

    Args:
        loaded: a ``LoadedModel``.
        prompts: ``B`` token-id lists.
        candidates: ``[B, C]`` token ids to score at each prompt's last position.

    Returns:
        ``[B, C]`` log-probabilities (nats) under the full-vocabulary softmax, fp32 on CPU.
    """
    ids, mask = pad_right(prompts, loaded.tokenizer.pad_token_id)
    with torch.no_grad():
        hidden = loaded.hidden_states(ids, mask)  # [B, T, d]
        last = mask.sum(1) - 1
        logits = loaded.logits(hidden[torch.arange(len(prompts)), last.to(hidden.device)])  # [B, vocab]
        logprobs = torch.log_softmax(logits, dim=-1)
    return logprobs.gather(1, candidates.to(logprobs.device)).cpu()


def continuation_logprobs(loaded, pairs: Sequence[tuple[list[int], list[int]]]) -> list[float]:
    """Summed log-likelihood of each continuation given its context (one forward pass per pair).

    Args:
        pairs: ``(context_ids, continuation_ids)``, both non-empty.

    Returns:
        Sum of the continuation tokens' log-probabilities (nats), one per pair.
    """
    ids, mask = pad_right([(ctx + cont)[:-1] for ctx, cont in pairs], loaded.tokenizer.pad_token_id)
    sums = []
    with torch.no_grad():
        hidden = loaded.hidden_states(ids, mask)  # [B, T, d]
        for row, (ctx, cont) in enumerate(pairs):
            # position p predicts token p + 1, so the continuation is predicted from len(ctx) - 1 on
            positions = torch.arange(len(ctx) - 1, len(ctx) - 1 + len(cont), device=hidden.device)
            logprobs = torch.log_softmax(loaded.logits(hidden[row, positions]), dim=-1)  # [len(cont), vocab]
            target = torch.tensor(cont, device=logprobs.device)[:, None]
            sums.append(logprobs.gather(1, target).sum().item())
    return sums


def token_nll(loaded, windows: torch.Tensor) -> torch.Tensor:
    """Per-window summed next-token negative log-likelihood.

    Args:
        windows: ``[B, T]`` token ids without padding.

    Returns:
        ``[B]`` sums of NLL (nats) over the ``T - 1`` predicted tokens of each window, fp64 on CPU.
    """
    mask = torch.ones_like(windows)
    with torch.no_grad():
        hidden = loaded.hidden_states(windows, mask)  # [B, T, d]
        logits = loaded.logits(hidden[:, :-1])  # [B, T-1, vocab]
        # softmax over the last (contiguous) dimension: on CPU, cross-entropy over dim 1 of a
        # [B, vocab, T-1] view accumulates less accurately (errors of ~1e-4 nats per token)
        nll = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), windows[:, 1:].flatten().to(logits.device), reduction="none"
        ).view(windows.shape[0], -1)  # [B, T-1]
    return nll.double().sum(1).cpu()
