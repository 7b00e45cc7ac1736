"""Batched log-likelihood scoring shared by every evaluation.

Every evaluation is a list of :class:`Request` s: a token sequence and, at some of its positions, the
candidate next tokens whose log-probabilities are wanted (the four letters after an MMLU prompt, an
answer's tokens after a cloze context, every next token of a perplexity window). :func:`score_requests`

* packs requests that share a token prefix (the four answers of one cloze question, the k-shot prompts of
  one subject) into one row with the prefix computed once (:mod:`pruneviz.engine.packing`; equivalent to reusing
  the prefix's KV cache);
* orders rows stratified across strata (e.g. MMLU subjects) in chunks of growing size, so that the
  results after each chunk are an unbiased early estimate (progressive results);
* batches rows of similar length under a token budget, runs the decoder stack incrementally
  (:mod:`pruneviz.engine.incremental`: only the blocks after the deepest stored boundary state) and applies the
  output head only at the scored positions;
* keeps every finished batch's scores in the result cache, so a cancelled or interrupted evaluation
  resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence, TypeVar

import torch

from ..core.cache import cached, make_key
from ..core.errors import NumericalError, SettingError, TokenizationError
from ..core.gating import active_plan, apply_plan
from ..core.plan import PruningPlan
from ..core.progress import Progress
from .incremental import decoder_states, plan_signature
from .packing import pack_groups, packed_length, packing_groups

log = logging.getLogger(__name__)
T = TypeVar("T")
# on_chunk(scores): after each chunk, every request's scores so far (None where not yet scored)
ChunkCallback = Callable[[list], None]
# packed rows hold at least this many tokens (more when single sequences are longer, see score_requests);
# small rows keep the first progressive estimate quick and spread over subjects
PACK_TOKENS = 512
# positions whose full-vocabulary logits are materialised at once ([n, vocab] fp32)
HEAD_POSITIONS = 512
# positions whose log-softmax and KL over the vocabulary are computed at once (a [32, 151936] fp32 slice is 19 MiB)
SLICE_POSITIONS = 32
# padded tokens per forward pass: on CPU, batching gains little and padding costs in proportion,
# so batches stay small; a GPU needs large batches to be busy
BATCH_TOKENS = {"cpu": 512, "cuda": 16384}


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


@dataclass(frozen=True)
class Request:
    """One scored token sequence.

    Attributes:
        tokens: the sequence ``[T]`` (token ids) run through the model.
        positions: positions ``p`` whose next-token distribution is read (``0 <= p < T``).
        candidates: per position, the token ids whose log-probabilities are returned (equal count per position).
        group: requests with equal ``group`` that share a token prefix are packed together (prefix computed once).
        stratum: the stratum for stratified ordering (e.g. an MMLU subject).
    """

    tokens: tuple[int, ...]
    positions: tuple[int, ...]
    candidates: tuple[tuple[int, ...], ...]
    group: Hashable = None
    stratum: Hashable = None


def stratified_schedule(
    lengths: Sequence[int], strata: Sequence[Hashable], batch_size: int, max_batch_tokens: int, seed: int = 0
) -> list[list[list[int]]]:
    """Order rows into chunks of batches: stratified across strata, growing chunks, length-sorted batches.

    Rows are dealt round-robin over the strata (whose order is shuffled with ``seed`` so that early
    chunks are not biased towards, say, the alphabetically first subjects). Chunk ``c`` takes the next
    rows up to ``max_batch_tokens * 2**c`` tokens (at least one row), so the first estimate comes after
    about one forward pass and later chunks approach a fully length-sorted schedule. Inside a chunk rows
    are sorted by length (longest first) and cut into batches of at most ``batch_size`` rows and
    ``max_batch_tokens`` padded tokens (at least one row).

    Args:
        lengths: tokens per row.
        strata: stratum per row.

    Returns:
        chunks -> batches -> row indices; every row exactly once.
    """
    by_stratum: dict[Hashable, list[int]] = {}
    for row, stratum in enumerate(strata):
        by_stratum.setdefault(stratum, []).append(row)
    order_of_strata = sorted(by_stratum, key=str)
    random.Random(seed).shuffle(order_of_strata)
    queues = [by_stratum[s] for s in order_of_strata]
    dealt = [queue[i] for i in range(max(map(len, queues), default=0)) for queue in queues if i < len(queue)]
    chunks, start, budget = [], 0, max_batch_tokens
    while start < len(dealt):
        end, tokens = start + 1, lengths[dealt[start]]
        while end < len(dealt) and tokens + lengths[dealt[end]] <= budget:
            tokens += lengths[dealt[end]]
            end += 1
        chunk = sorted(dealt[start:end], key=lambda row: (-lengths[row], row))
        batches, batch = [], []
        for row in chunk:
            # rows are sorted longest first, so the first row of a batch sets its padded width
            width = lengths[batch[0]] if batch else lengths[row]
            if batch and (len(batch) == batch_size or (len(batch) + 1) * width > max_batch_tokens):
                batches.append(batch)
                batch = []
            batch.append(row)
        batches.append(batch)
        chunks.append(batches)
        start, budget = end, budget * 2
    return chunks


def _score_batch(
    loaded, tokens: list[tuple[int, ...]], requests: Sequence[Request], rows: list[list[int]], reference_kl: bool = False
) -> list[torch.Tensor]:
    """Scores of the requests in ``rows`` (packed one row each), in row order: ``[len(positions), C]`` fp64 each, or
    ``[len(positions), C + 1]`` with ``reference_kl``: the last column is KL(unpruned ‖ active plan) of the
    next-token distribution at each position, in nats, over the whole vocabulary.

    The unpruned model's states come from the block-boundary store where its evaluation of the same batch left
    them (the prune page's baseline), so the reference usually costs one more output head, not a forward pass.
    """
    packed = pack_groups(tokens, rows, loaded.tokenizer.pad_token_id, loaded.model.config, loaded.dtype, device=loaded.device)
    with torch.no_grad():
        hidden = decoder_states(loaded, packed.input_ids, packed.attention_mask, packed.position_ids)  # [B, T, d]
        reference = None
        if reference_kl and active_plan():
            with apply_plan(PruningPlan()):
                reference = decoder_states(loaded, packed.input_ids, packed.attention_mask, packed.position_ids)
        members = [i for row in rows for i in row]
        picked_rows, picked_columns = [], []
        for i in members:
            row, columns = packed.locate(i)
            chosen = columns[list(requests[i].positions)]
            picked_rows.append(torch.full_like(chosen, row))
            picked_columns.append(chosen)
        where = (torch.cat(picked_rows), torch.cat(picked_columns))
        vectors = hidden[where]  # [N, d]
        candidates = torch.tensor([c for i in members for c in requests[i].candidates], device=hidden.device)  # [N, C]
        pieces = []
        for s in range(0, len(vectors), HEAD_POSITIONS):
            logits = loaded.logits(vectors[s : s + HEAD_POSITIONS])  # [n, vocab] fp32: one product with the head
            reference_logits = None
            if reference is not None:
                at_rows, at_columns = (index[s : s + HEAD_POSITIONS] for index in where)
                reference_logits = loaded.logits(reference[at_rows, at_columns])
            # the work over the vocabulary in slices of SLICE_POSITIONS rows, which stay in the processor's cache (over all
            # n rows at once, each pass streams a [n, vocab] tensor through memory: 0.3 GB at 512 x 151,936)
            for t in range(0, len(logits), SLICE_POSITIONS):
                log_probs = torch.log_softmax(logits[t : t + SLICE_POSITIONS], dim=-1)
                piece = log_probs.gather(1, candidates[s + t : s + t + len(log_probs)])
                if reference_kl:
                    kl = _kl(None if reference_logits is None else reference_logits[t : t + SLICE_POSITIONS], log_probs)
                    piece = torch.cat([piece, kl], dim=1)
                pieces.append(piece)
        scores = torch.cat(pieces).double().cpu()  # [N, C] or [N, C + 1]
    if not torch.isfinite(scores).all():
        raise NumericalError(
            "The model produced non-finite log-probabilities on this batch; load it in float32 (--dtype float32) "
            "or check the model's weights."
        )
    return list(scores.split([len(requests[i].positions) for i in members]))


def _kl(reference_logits: torch.Tensor | None, log_probs: torch.Tensor) -> torch.Tensor:
    """``[n, 1]`` KL(p_ref ‖ p) = Σ p_ref (log p_ref − log p) in nats (fp32), from the unpruned model's logits
    ``[n, vocab]`` and the active plan's log-probabilities ``[n, vocab]``; zeros without a reference (nothing pruned:
    the two distributions are the same). The sum is a batched dot product, so the products are not stored."""
    if reference_logits is None:
        return torch.zeros(len(log_probs), 1, device=log_probs.device)
    reference_log_probs = torch.log_softmax(reference_logits, dim=-1)
    probabilities = reference_log_probs.exp()
    difference = reference_log_probs.sub_(log_probs)
    return torch.bmm(probabilities.unsqueeze(1), difference.unsqueeze(2)).view(-1, 1).clamp_min(0.0)


def _batch_key(loaded, signature: str, requests: Sequence[Request], rows: list[list[int]], reference_kl: bool) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update(b"row")
        for i in row:
            request = requests[i]
            digest.update(repr((request.tokens, request.positions, request.candidates)).encode())
    return make_key("batch-scores", loaded.fingerprint, str(loaded.dtype), signature, digest.hexdigest(), reference_kl)


def _run_batch(
    loaded, tokens, requests, rows: list[list[int]], signature: str | None, checkpoint: bool, reference_kl: bool = False
) -> tuple[list[torch.Tensor], int]:
    """One batch, cached under its content and the plan when ``checkpoint``; split in two on out-of-memory.

    Returns:
        the scores of the batch's requests, and how many of them were read from a checkpoint (an earlier
        run that stopped before the end, or an earlier evaluation that scored the same batch).
    """
    try:
        compute = lambda: _score_batch(loaded, tokens, requests, rows, reference_kl)  # noqa: E731
        if signature is None:
            return compute(), 0
        scores, hit = cached(_batch_key(loaded, signature, requests, rows, reference_kl), compute, checkpoint)
        return scores, len(scores) if hit else 0
    except torch.OutOfMemoryError:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if len(rows) == 1:
            raise SettingError(
                "Out of memory even with a batch of one sequence; use a shorter sequence length, fewer shots, "
                "a smaller model, or a device with more memory."
            ) from None
        log.warning("Out of memory; retrying with batches of %d rows.", len(rows) // 2)
        half = len(rows) // 2
        first, first_read = _run_batch(loaded, tokens, requests, rows[:half], signature, checkpoint, reference_kl)
        second, second_read = _run_batch(loaded, tokens, requests, rows[half:], signature, checkpoint, reference_kl)
        return first + second, first_read + second_read


def score_requests(
    loaded,
    requests: Sequence[Request],
    batch_size: int = 16,
    progress: Progress | None = None,
    on_chunk: ChunkCallback | None = None,
    checkpoint: bool = True,
    max_batch_tokens: int | None = None,
    resumed: list[int] | None = None,
    reference_kl: bool = False,
) -> list[torch.Tensor]:
    """Log-probabilities of every request's candidates under the active plan (see the module docstring).

    Args:
        loaded: a ``LoadedModel``; the plan and stand-ins are those of the enclosing ``apply_plan``.
        requests: what to score.
        batch_size: packed rows per forward pass (at most).
        progress: ``progress(done, total)`` in requests after every batch; may raise ``Cancelled`` (finished
            batches stay cached, so the next call resumes).
        on_chunk: called after every chunk of the stratified schedule with the results so far (the list
            that is returned at the end, ``None`` where a request is not scored yet).
        checkpoint: keep each finished batch's scores in the result cache (``False``: neither read nor write).
        max_batch_tokens: padded tokens per forward pass (at most; a single longer row still runs);
            default :data:`BATCH_TOKENS` of the model's device type.
        resumed: if given, a one-item list that receives the number of requests whose scores were read from
            checkpoints rather than computed (what an interrupted run had already finished).
        reference_kl: add a last column per position: KL(unpruned ‖ active plan) of the next-token distribution,
            in nats (Dutta et al. 2024); the unpruned states are reused from the block-boundary store where present.

    Returns:
        per request, ``[len(positions), C]`` log-probabilities (nats, fp64, CPU), ``[len(positions), C + 1]`` with
        ``reference_kl`` (the KL column last). They do not depend on ``batch_size``, ``max_batch_tokens`` or what was
        evaluated before (beyond float rounding of padded batches, < 1e-4 nats in fp32).

    Raises:
        SettingError: ``batch_size < 1``, or out of memory with a single row.
        NumericalError: the model produced a non-finite log-probability.
    """
    if batch_size < 1:
        raise SettingError(f"Batch size must be at least 1 (got {batch_size}).")
    if not requests:
        return []
    tokens = [request.tokens for request in requests]
    keys = [request.group if request.group is not None else ("request", i) for i, request in enumerate(requests)]
    rows = packing_groups(tokens, keys, max(PACK_TOKENS, 2 * max(map(len, tokens))))
    lengths = [packed_length([tokens[i] for i in row]) for row in rows]
    if max_batch_tokens is None:
        max_batch_tokens = BATCH_TOKENS.get(loaded.device.type, BATCH_TOKENS["cuda"])
    schedule = stratified_schedule(lengths, [requests[row[0]].stratum for row in rows], batch_size, max_batch_tokens)
    signature = plan_signature(loaded.n_blocks)
    results: list[torch.Tensor | None] = [None] * len(requests)
    done = reused = 0
    for chunk in schedule:
        for batch in chunk:
            batch_rows = [rows[r] for r in batch]
            members = [i for row in batch_rows for i in row]
            batch_scores, read = _run_batch(loaded, tokens, requests, batch_rows, signature, checkpoint, reference_kl)
            for i, scores in zip(members, batch_scores):
                results[i] = scores
            reused += read
            done += len(members)
            if progress:
                progress(done, len(requests))
        if on_chunk:
            on_chunk(list(results))
    if resumed is not None:
        resumed[:] = [reused]
    return results
