"""Shared-prefix packing: run the tokens that several sequences share once, in one row.

MMLU cloze scores four continuations of one question context, and k-shot prompts of one subject
share the few-shot exemplars. Instead of recomputing the shared tokens once per sequence, a *group* of
sequences is packed into ONE row that holds their token trie in depth-first order: every distinct
prefix appears once (the exemplars once per row, each question once for its four answers), e.g.::

    [exemplars][question 1][answer A][answer B]...[question 2][answer A]...[padding]

with a custom attention mask and explicit position ids, so that every real token sees exactly what it
would see if its sequence ran alone:

* a token attends to its ancestors in the trie (the earlier tokens of every sequence through it) and
  to itself; in depth-first order those are the columns ``k <= q`` whose subtree reaches ``q``;
* its position is its depth in the trie (its position in each of those sequences);
* a padding column (right padding) attends to itself only, so no softmax row is fully masked (a fully
  masked row gives NaN under SDPA on GPU); padding never feeds a real token.

Since a causal decoder's hidden state at position ``p`` depends only on tokens ``0..p`` and on the
position ids (rotary embeddings), this is mathematically the same computation as running every sequence
alone; it is the single-pass equivalent of computing each shared prefix once and reusing its KV cache for
every continuation. Numerically the results agree to float rounding (about 1e-6 in fp32).

Mask convention (what ``transformers`` 5.x models accept unchanged): a 4D additive float mask
``[B, 1, T, T]`` in the model's dtype, ``0`` where query ``q`` may attend key ``k`` and
``torch.finfo(dtype).min`` where it may not; ``masking_utils._preprocess_mask_arguments`` returns an
already-4D mask as it is, for both the ``sdpa`` and ``eager`` attention implementations. Models whose
``config.layer_types`` include ``"sliding_attention"`` (Gemma-2/3, Qwen2/3 with a sliding window) take a
dict ``{layer_type: mask}``; their sliding masks also hide keys with ``pos_q - pos_k >= sliding_window``,
the convention of ``masking_utils.sliding_window_overlay`` (``kv_idx > q_idx - sliding_window``), measured
in positions of the original sequence, not in packed columns. Mistral (a ``sliding_window`` but no
``layer_types``) uses its sliding mask in every layer and so takes one sliding tensor.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import torch

from ..core.errors import SettingError

FULL_ATTENTION = "full_attention"
SLIDING_ATTENTION = "sliding_attention"


@dataclass
class PackedBatch:
    """Groups of sequences packed one group per row, ready for the decoder stack.

    Run it as ``base(input_ids=..., attention_mask=..., position_ids=..., use_cache=False)`` where ``base``
    is the decoder stack (``resolve(model, adapter.base)``); the hidden state of token ``p`` of original
    sequence ``i`` is then ``hidden[row, columns[p]]`` with ``row, columns = batch.locate(i)``.

    Attributes:
        input_ids: ``[B, T]`` long token ids, right-padded with the pad id.
        position_ids: ``[B, T]`` long; a token's position is its depth in the row's token trie (its
            position in every sequence that contains it); padding has 0.
        attention_mask: ``[B, 1, T, T]`` additive float mask (0 = attend, ``finfo(dtype).min`` = masked),
            or ``{layer_type: mask}`` for models with sliding-window layers (see the module docstring).
        placements: sequence index -> ``(row, columns)``; use :meth:`locate`.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor | dict[str, torch.Tensor]
    placements: dict[int, tuple[int, list[int]]] = field(default_factory=dict, repr=False)

    def locate(self, index: int) -> tuple[int, torch.Tensor]:
        """Where the tokens of original sequence ``index`` sit in the packed batch.

        Returns:
            ``(row, columns)``: ``columns`` is ``[len(sequences[index])]`` long (on the batch's device);
            token ``p`` of the sequence is at ``input_ids[row, columns[p]]``. Tokens a sequence shares with
            others of its group point into the shared part.

        Raises:
            SettingError: ``index`` was not in any packed group.
        """
        if index not in self.placements:
            raise SettingError(f"Sequence {index} is not in this packed batch; pack it in one of the groups first.")
        row, columns = self.placements[index]
        return row, torch.tensor(columns, dtype=torch.long, device=self.input_ids.device)


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length (tokens) of the longest token prefix shared by all ``sequences``.

    A single sequence's common prefix is the whole sequence.

    Raises:
        SettingError: ``sequences`` is empty.
    """
    if len(sequences) == 0:
        raise SettingError("common_prefix_length needs at least one sequence; pass a non-empty list.")
    first = list(sequences[0])
    length = len(first)
    for seq in sequences[1:]:
        length = min(length, len(seq))
        for p in range(length):
            if seq[p] != first[p]:
                length = p
                break
    return length


def packed_length(sequences: Sequence[Sequence[int]]) -> int:
    """Tokens in the packed row of ``sequences``: the nodes of their token trie (every distinct prefix once).

    In lexicographic order each sequence adds its length minus its common prefix with the one before.

    Raises:
        SettingError: ``sequences`` is empty.
    """
    if len(sequences) == 0:
        raise SettingError("packed_length needs at least one sequence; pass a non-empty list.")
    ordered = sorted(list(s) for s in sequences)
    return len(ordered[0]) + sum(len(b) - common_prefix_length([a, b]) for a, b in zip(ordered, ordered[1:]))


def _trie_layout(members: list[list[int]]) -> tuple[list[int], list[int], list[int], list[list[int]]]:
    """Lay out the token trie of ``members`` in depth-first (pre-)order, one column per node.

    Returns:
        ``(tokens, positions, ends, paths)``: per column its token, its depth (= position), and the last
        column of its subtree; per member, the columns of its tokens. In pre-order a node's subtree is the
        contiguous range ``[column, end]``, so the ancestors of column ``q`` (itself included) are exactly
        the columns ``k`` with ``k <= q <= ends[k]``.
    """
    children: list[dict[int, int]] = [{}]  # node 0 is the root (no token)
    token_of, depth_of = [-1], [-1]
    node_paths = []
    for seq in members:
        node, path = 0, []
        for token in seq:
            child = children[node].get(token)
            if child is None:
                child = len(children)
                children.append({})
                token_of.append(token)
                depth_of.append(depth_of[node] + 1)
                children[node][token] = child
            node = child
            path.append(node)
        node_paths.append(path)
    column_of = [0] * len(children)
    order: list[int] = []
    end_of = [0] * len(children)
    stack = [(0, iter(children[0].values()))]
    while stack:
        node, pending = stack[-1]
        child = next(pending, None)
        if child is None:
            stack.pop()
            end_of[node] = len(order) - 1
            continue
        column_of[child] = len(order)
        order.append(child)
        stack.append((child, iter(children[child].values())))
    tokens = [token_of[n] for n in order]
    positions = [depth_of[n] for n in order]
    ends = [end_of[n] for n in order]
    return tokens, positions, ends, [[column_of[n] for n in path] for path in node_paths]


def _mask_layout(config) -> tuple[list[str], int | None]:
    """The layer types needing a mask and the sliding window (tokens) of the model with ``config``.

    Returns:
        ``(layer_types, window)``: ``layer_types`` is empty when the model takes one plain tensor;
        ``window`` is the sliding window applied to that tensor or to the ``"sliding_attention"`` mask.

    Raises:
        SettingError: bidirectional attention, or a layer type other than full / sliding attention.
    """
    if getattr(config, "use_bidirectional_attention", False):
        raise SettingError(
            "Shared-prefix packing needs causal attention, but this model attends bidirectionally; "
            "evaluate it without packing."
        )
    layer_types = list(dict.fromkeys(getattr(config, "layer_types", None) or []))
    unknown = [t for t in layer_types if t not in (FULL_ATTENTION, SLIDING_ATTENTION)]
    if unknown:
        raise SettingError(
            f"Shared-prefix packing supports full and sliding-window attention, not {', '.join(unknown)}; "
            "evaluate this model without packing."
        )
    window = getattr(config, "sliding_window", None)
    if SLIDING_ATTENTION in layer_types:
        if not isinstance(window, int) or window < 1:
            raise SettingError(
                f"The model has sliding-window layers but config.sliding_window is {window!r}; "
                "set it to the window length in tokens."
            )
        return layer_types, window
    if layer_types:
        # every layer attends fully: one plain causal tensor serves them all
        return [], None
    # Mistral-style: no layer types, and a sliding window (when set) applies to every layer
    return [], window if isinstance(window, int) and window >= 1 else None


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[B, T, T]`` bool -> ``[B, 1, T, T]`` additive float mask (0 where allowed, ``finfo.min`` elsewhere)."""
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def pack_groups(
    sequences: Sequence[Sequence[int]],
    groups: Sequence[Sequence[int]],
    pad_id: int,
    config,
    dtype: torch.dtype,
    device=None,
) -> PackedBatch:
    """Pack each group of sequences into one row holding their token trie: every shared prefix once.

    Args:
        sequences: token-id lists (each non-empty).
        groups: lists of indices into ``sequences``, one row each; an index may appear in one group only.
            A group of one sequence is that sequence as it is.
        pad_id: token id for right padding (its value never reaches a real token).
        config: the model's config (reads ``layer_types``, ``sliding_window``, ``use_bidirectional_attention``).
        dtype: the model's floating-point dtype, used for the additive mask.
        device: where the tensors go (default CPU).

    Returns:
        :class:`PackedBatch` with ``B = len(groups)`` rows of width ``T`` = the longest packed row
        (:func:`packed_length` of its group).

    Raises:
        SettingError: no groups, an empty group, an index out of range or in two groups, an empty
            sequence, a non-floating dtype, or a model whose attention cannot be packed.
    """
    if not dtype.is_floating_point:
        raise SettingError(f"The attention-mask dtype must be floating point, not {dtype}; pass the model's dtype.")
    if len(groups) == 0:
        raise SettingError("pack_groups got no groups; pass at least one list of sequence indices.")
    layer_types, window = _mask_layout(config)
    seen: set[int] = set()
    for group in groups:
        if len(group) == 0:
            raise SettingError("pack_groups got an empty group; every group needs at least one sequence index.")
        for index in group:
            if not 0 <= index < len(sequences):
                raise SettingError(f"Group index {index} is out of range for {len(sequences)} sequences.")
            if index in seen:
                raise SettingError(f"Sequence {index} appears in two groups; put every sequence in one group only.")
            if len(sequences[index]) == 0:
                raise SettingError(f"Sequence {index} is empty; every packed sequence needs at least one token.")
            seen.add(index)

    layouts = [_trie_layout([list(sequences[i]) for i in group]) for group in groups]
    width = max(len(tokens) for tokens, _, _, _ in layouts)
    input_ids = torch.full((len(groups), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(groups), width), dtype=torch.long)
    # a padding column's subtree is itself, so it attends to itself only
    ends = torch.arange(width).repeat(len(groups), 1)
    placements = {}
    for row, (group, (tokens, positions, subtree_ends, paths)) in enumerate(zip(groups, layouts)):
        input_ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        position_ids[row, : len(tokens)] = torch.tensor(positions, dtype=torch.long)
        ends[row, : len(tokens)] = torch.tensor(subtree_ends, dtype=torch.long)
        placements.update({index: (row, path) for index, path in zip(group, paths)})
    input_ids, position_ids, ends = (t.to(device) for t in (input_ids, position_ids, ends))

    columns = torch.arange(width, device=input_ids.device)
    # key k is visible from query q when k is an ancestor of q (or q itself) in the row's token trie
    allowed = (columns[None, None, :] <= columns[None, :, None]) & (columns[None, :, None] <= ends[:, None, :])  # [B, T, T]
    if window is not None:
        distance = position_ids[:, :, None] - position_ids[:, None, :]  # [B, T, T] pos_q - pos_k
        sliding = (allowed & (distance < window)) | torch.eye(width, dtype=torch.bool, device=input_ids.device)[None]
    if layer_types:
        masks = {FULL_ATTENTION: allowed, SLIDING_ATTENTION: sliding if window is not None else allowed}
        mask: torch.Tensor | dict[str, torch.Tensor] = {t: _additive(masks[t], dtype) for t in layer_types}
    else:
        mask = _additive(sliding if window is not None else allowed, dtype)
    return PackedBatch(input_ids, position_ids, mask, placements)


def packing_groups(sequences: Sequence[Sequence[int]], keys: Sequence[Hashable], max_tokens: int) -> list[list[int]]:
    """Partition sequence indices into packing groups of equal key, each packing into at most ``max_tokens``.

    Members of one key (e.g. an MMLU question id, or a subject for k-shot prompts) are taken in
    lexicographic token order, so that sequences with the longest shared prefixes land in one group,
    and added greedily while the group's packed length (:func:`packed_length`) stays within
    ``max_tokens``; a single sequence longer than ``max_tokens`` forms its own group. Keys come in order
    of first appearance. The result depends only on the sequences, keys and ``max_tokens`` (never on a
    batch size), so results computed on it are reproducible.

    Args:
        sequences: token-id lists.
        keys: one hashable key per sequence; only sequences of equal key share a group.
        max_tokens: the longest packed row (tokens) allowed.

    Returns:
        Lists of indices into ``sequences``, every index exactly once.

    Raises:
        SettingError: ``keys`` and ``sequences`` differ in length, or ``max_tokens < 1``.
    """
    if len(keys) != len(sequences):
        raise SettingError(
            f"packing_groups got {len(keys)} keys for {len(sequences)} sequences; pass one key per sequence."
        )
    if max_tokens < 1:
        raise SettingError(f"max_tokens must be at least 1, not {max_tokens}.")
    by_key: dict[Hashable, list[int]] = {}
    for index, key in enumerate(keys):
        by_key.setdefault(key, []).append(index)
    groups: list[list[int]] = []
    for members in by_key.values():
        members = sorted(members, key=lambda i: (list(sequences[i]), i))
        group: list[int] = []
        total = 0  # the open group's trie size (packed length)
        for index in members:
            seq = sequences[index]
            if group:
                # in lexicographic order a sequence shares most with the one before it
                added = len(seq) - common_prefix_length([sequences[group[-1]], seq])
                if total + added <= max_tokens:
                    group.append(index)
                    total += added
                    continue
                groups.append(group)
            group, total = [index], len(seq)
        groups.append(group)
    return groups
