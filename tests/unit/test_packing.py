"""Shared-prefix packing: packed rows must give the same hidden states as running each sequence alone."""

from __future__ import annotations

import pytest
import torch
from helpers import packed_hidden

from pruneviz.core.architecture import adapter_for, resolve
from pruneviz.core.errors import SettingError
from pruneviz.engine.packing import PackedBatch, common_prefix_length, pack_groups, packed_length, packing_groups

TOL_FP32 = 1e-5


def _base(model):
    return resolve(model, adapter_for(model).base)


def _alone(base, seq: list[int]) -> torch.Tensor:
    """``[len(seq), d]`` hidden states of ``seq`` run by itself (the plain, unpacked path)."""
    ids = torch.tensor([seq])
    with torch.no_grad():
        return base(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).last_hidden_state[0]


def _max_difference(base, sequences, batch: PackedBatch, hidden: torch.Tensor, indices) -> float:
    worst = 0.0
    for index in indices:
        row, columns = batch.locate(index)
        worst = max(worst, (hidden[row, columns] - _alone(base, sequences[index])).abs().max().item())
    return worst


def _every_query_sees_a_key(batch: PackedBatch) -> bool:
    """No softmax row is fully masked (that gives NaN under SDPA on GPU), padding rows included."""
    masks = batch.attention_mask.values() if isinstance(batch.attention_mask, dict) else [batch.attention_mask]
    return all(bool((mask == 0).any(-1).all()) for mask in masks)


def _random_tokens(generator, n: int, vocab: int = 128) -> list[int]:
    return torch.randint(3, vocab, (n,), generator=generator).tolist()


@pytest.fixture(scope="module")
def llama_case():
    """Three groups: four ragged continuations of one context (one equal to the context), a group of one, three more."""
    g = torch.Generator().manual_seed(1)
    a, b, c = _random_tokens(g, 9), _random_tokens(g, 14), _random_tokens(g, 5)
    sequences = [
        a + _random_tokens(g, 3),
        a + _random_tokens(g, 1),
        a,  # equal to the group's common prefix: empty suffix
        a + _random_tokens(g, 7),
        b,  # group of one
        c + [7, 8, 9, 10],
        c + [7, 8, 11],  # shares one more token with the previous sequence but not with the next
        c + [12, 13, 14, 15, 16, 17],
    ]
    return sequences, [[0, 1, 2, 3], [4], [5, 6, 7]]


def test_common_prefix_length():
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert common_prefix_length([[1, 2, 3]]) == 3
    assert common_prefix_length([[1, 2, 3], [1, 2]]) == 2
    assert common_prefix_length([[4, 2], [1, 2]]) == 0
    assert packed_length([[1, 2, 3, 4], [1, 2, 5], [1, 2]]) == 2 + 2 + 1 + 0
    with pytest.raises(SettingError, match="at least one sequence"):
        common_prefix_length([])


def test_layout_and_exact_mask():
    """Prefix [5, 6]; suffixes [7, 8] and [9]; a shorter second row is padded; every visible pair is listed."""
    from transformers import LlamaConfig

    sequences = [[5, 6, 7, 8], [5, 6, 9], [3, 4]]
    batch = pack_groups(sequences, [[0, 1], [2]], pad_id=0, config=LlamaConfig(), dtype=torch.float32)
    assert batch.input_ids.tolist() == [[5, 6, 7, 8, 9], [3, 4, 0, 0, 0]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 2], [0, 1, 0, 0, 0]]
    assert batch.attention_mask.shape == (2, 1, 5, 5) and batch.attention_mask.dtype == torch.float32
    allowed = (batch.attention_mask[:, 0] == 0).int().tolist()
    assert allowed[0] == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0],
        [1, 1, 0, 0, 1],  # suffix 2 sees the prefix and itself, not suffix 1
    ]
    assert allowed[1] == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 0, 1, 0, 0],  # padding attends to itself only
        [0, 0, 0, 1, 0],
        [0, 0, 0, 0, 1],
    ]
    assert set(batch.attention_mask.unique().tolist()) == {0.0, torch.finfo(torch.float32).min}
    row, columns = batch.locate(1)
    assert row == 0 and columns.tolist() == [0, 1, 4]
    assert batch.locate(2)[0] == 1 and batch.locate(2)[1].tolist() == [0, 1]
    half = pack_groups(sequences, [[0, 1]], pad_id=0, config=LlamaConfig(), dtype=torch.bfloat16)
    assert half.attention_mask.dtype == torch.bfloat16 and half.attention_mask.min() == torch.finfo(torch.bfloat16).min
    with pytest.raises(SettingError, match="not in this packed batch"):
        half.locate(2)


def test_sliding_mask_matches_transformers_convention():
    """A group of one under a sliding window equals transformers' own sliding-window causal mask."""
    from transformers import Qwen2Config
    from transformers.masking_utils import sliding_window_causal_mask_function

    config = Qwen2Config(num_hidden_layers=2, use_sliding_window=True, sliding_window=3, max_window_layers=1)
    batch = pack_groups([list(range(3, 11))], [[0]], pad_id=0, config=config, dtype=torch.float32)
    assert set(batch.attention_mask) == {"full_attention", "sliding_attention"}
    q, k = torch.arange(8)[:, None], torch.arange(8)[None, :]
    expected = sliding_window_causal_mask_function(3)(0, 0, q, k)
    assert torch.equal(batch.attention_mask["sliding_attention"][0, 0] == 0, expected)
    assert torch.equal(batch.attention_mask["full_attention"][0, 0] == 0, k <= q)
    # packed (prefix [3, 4, 5]; suffixes [6] and [7, 8]): the window counts positions, not packed columns
    packed = pack_groups([[3, 4, 5, 6], [3, 4, 5, 7, 8]], [[0, 1]], pad_id=0, config=config, dtype=torch.float32)
    sliding = (packed.attention_mask["sliding_attention"][0, 0] == 0).int().tolist()
    assert sliding[4] == [0, 1, 1, 0, 1, 0]  # token 7 at position 3: positions 1..3 of its own sequence
    assert sliding[5] == [0, 0, 1, 0, 1, 1]  # token 8 at position 4: positions 2..4


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_tiny_llama_packed_equals_alone(llama_case, attn):
    from conftest import tiny_llama

    model = tiny_llama()
    model.set_attn_implementation(attn)
    base = _base(model)
    sequences, groups = llama_case
    batch = pack_groups(sequences, groups, pad_id=0, config=model.config, dtype=torch.float32)
    assert isinstance(batch.attention_mask, torch.Tensor)
    assert batch.input_ids.shape == (3, 9 + 3 + 1 + 0 + 7)
    assert _every_query_sees_a_key(batch)
    hidden = packed_hidden(base, batch)
    assert torch.isfinite(hidden).all()  # padding rows included
    assert _max_difference(base, sequences, batch, hidden, range(len(sequences))) < TOL_FP32
    # the checks can fail: suffixes that see each other, or positions that run on through the row, differ
    leaky = torch.triu(torch.full(batch.input_ids.shape[1:] * 2, torch.finfo(torch.float32).min), 1)[None, None]
    assert _max_difference(base, sequences, batch, packed_hidden(base, batch, attention_mask=leaky), [1, 3]) > 1e-3
    running = torch.arange(batch.input_ids.shape[1]).expand_as(batch.input_ids)
    assert _max_difference(base, sequences, batch, packed_hidden(base, batch, position_ids=running), [1, 3]) > 1e-3


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_nested_prefixes_are_shared_at_every_level(attn):
    """k-shot cloze shape: exemplars shared by two questions, each question's context shared by its answers."""
    from conftest import tiny_llama

    model = tiny_llama()
    model.set_attn_implementation(attn)
    base = _base(model)
    shots, first, second = [5, 6, 7, 8, 9], [20, 21, 22], [30, 31]
    answers = ([40, 41], [42], [43, 44, 45])
    sequences = [shots + question + answer for question in (first, second) for answer in answers]
    assert packed_length(sequences) == len(shots) + len(first) + len(second) + 2 * sum(map(len, answers))
    batch = pack_groups(sequences, [list(range(6))], pad_id=0, config=model.config, dtype=torch.float32)
    assert batch.input_ids.shape == (1, packed_length(sequences))
    assert _max_difference(base, sequences, batch, packed_hidden(base, batch), range(6)) < TOL_FP32
    # each question's context appears once, before its answers
    row, columns = batch.locate(4)
    assert columns.tolist()[: len(shots)] == list(range(len(shots)))
    assert batch.position_ids[0, columns].tolist() == list(range(len(sequences[4])))


def test_tiny_llama_through_loaded_model(tiny, llama_case):
    """The session's gated tiny model (what evaluations use) agrees too."""
    base = resolve(tiny.model, tiny.adapter.base)
    sequences, groups = llama_case
    batch = pack_groups(sequences, groups, pad_id=0, config=tiny.model.config, dtype=tiny.dtype, device=tiny.device)
    hidden = packed_hidden(base, batch)
    for index, seq in enumerate(sequences):
        row, columns = batch.locate(index)
        alone = tiny.hidden_states(torch.tensor([seq]), torch.ones(1, len(seq), dtype=torch.long))[0]
        assert (hidden[row, columns] - alone).abs().max().item() < TOL_FP32


def _tiny_gemma3(attn: str):
    from transformers import AutoModelForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=8, sliding_window=4, max_position_embeddings=256,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        initializer_range=0.2,
    )
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn).eval()


def _tiny_qwen2(attn: str):
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, use_sliding_window=True, sliding_window=4, max_window_layers=1,
        max_position_embeddings=256, initializer_range=0.2,
    )
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn).eval()


def _tiny_mistral(attn: str):
    from transformers import AutoModelForCausalLM, MistralConfig

    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, sliding_window=4, max_position_embeddings=256, initializer_range=0.2,
    )
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn).eval()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("build", [_tiny_gemma3, _tiny_qwen2, _tiny_mistral], ids=["gemma3", "qwen2", "mistral"])
def test_sliding_window_models_packed_equal_alone(build, attn):
    """Sequences several times the window of 4: suffix tokens must stop seeing prefix tokens 4 positions back."""
    from transformers import LlamaConfig

    model = build(attn)
    base = _base(model)
    g = torch.Generator().manual_seed(2)
    prefix = _random_tokens(g, 6)
    sequences = [prefix + _random_tokens(g, n) for n in (8, 1, 5)] + [prefix[:3], _random_tokens(g, 11)]
    groups = [[0, 1, 2], [3], [4]]
    batch = pack_groups(sequences, groups, pad_id=0, config=model.config, dtype=torch.float32)
    sliding_layers = "sliding_attention" in (getattr(model.config, "layer_types", None) or [])
    assert isinstance(batch.attention_mask, dict) == sliding_layers
    assert _every_query_sees_a_key(batch)
    hidden = packed_hidden(base, batch)
    assert torch.isfinite(hidden).all()
    assert _max_difference(base, sequences, batch, hidden, range(len(sequences))) < TOL_FP32
    # without the window (full attention everywhere) the long sequences come out different
    full = pack_groups(sequences, groups, pad_id=0, config=LlamaConfig(), dtype=torch.float32).attention_mask
    unwindowed = {t: full for t in batch.attention_mask} if sliding_layers else full
    assert _max_difference(base, sequences, batch, packed_hidden(base, batch, attention_mask=unwindowed), [0, 4]) > 1e-3


def test_packing_groups_splits_under_max_tokens():
    g = torch.Generator().manual_seed(3)
    context, other = _random_tokens(g, 10), _random_tokens(g, 10)
    sequences = [context + _random_tokens(g, 3) for _ in range(5)]
    sequences += [other + [4], _random_tokens(g, 30), other + [5, 6]]
    keys = ["q1"] * 5 + ["q2", "q3", "q2"]
    groups = packing_groups(sequences, keys, max_tokens=17)
    # q1: packed length 10 + 3n <= 17 allows two per group; q2 packs into 10 + 1 + 2; q3 is longer than the limit
    assert sorted(len(g) for g in groups) == [1, 1, 2, 2, 2]
    assert sorted(i for g in groups for i in g) == list(range(len(sequences)))
    for group in groups:
        assert len({keys[i] for i in group}) == 1
        assert packed_length([sequences[i] for i in group]) <= 17 or group == [6]
    assert [6] in groups and [5, 7] in groups
    assert packing_groups(sequences, keys, max_tokens=17) == groups
    assert packing_groups(sequences, keys, max_tokens=1000) == [sorted(range(5), key=lambda i: sequences[i]), [5, 7], [6]]
    assert packing_groups([], [], max_tokens=8) == []


def test_packing_groups_output_packs_and_matches(llama_case):
    """packing_groups feeds pack_groups directly; rows respect max_tokens and results match the plain path."""
    from conftest import tiny_llama

    model = tiny_llama()
    base = _base(model)
    sequences, _ = llama_case
    keys = ["a", "a", "a", "a", "b", "c", "c", "c"]
    groups = packing_groups(sequences, keys, max_tokens=16)
    batch = pack_groups(sequences, groups, pad_id=0, config=model.config, dtype=torch.float32)
    assert batch.input_ids.shape[1] <= 16
    assert _max_difference(base, sequences, batch, packed_hidden(base, batch), range(len(sequences))) < TOL_FP32


def test_bad_input_is_rejected():
    from transformers import Gemma3TextConfig, LlamaConfig

    sequences = [[1, 2], [1, 3], []]
    config = LlamaConfig()
    with pytest.raises(SettingError, match="two groups"):
        pack_groups(sequences, [[0, 1], [1]], 0, config, torch.float32)
    with pytest.raises(SettingError, match="out of range"):
        pack_groups(sequences, [[0, 5]], 0, config, torch.float32)
    with pytest.raises(SettingError, match="empty group"):
        pack_groups(sequences, [[0], []], 0, config, torch.float32)
    with pytest.raises(SettingError, match="no groups"):
        pack_groups(sequences, [], 0, config, torch.float32)
    with pytest.raises(SettingError, match="Sequence 2 is empty"):
        pack_groups(sequences, [[2]], 0, config, torch.float32)
    with pytest.raises(SettingError, match="floating point"):
        pack_groups(sequences, [[0]], 0, config, torch.long)
    bidirectional = Gemma3TextConfig(num_hidden_layers=2, use_bidirectional_attention=True)
    with pytest.raises(SettingError, match="bidirectionally"):
        pack_groups(sequences, [[0]], 0, bidirectional, torch.float32)
    chunked = LlamaConfig()
    chunked.layer_types = ["full_attention", "chunked_attention"]
    with pytest.raises(SettingError, match="chunked_attention"):
        pack_groups(sequences, [[0]], 0, chunked, torch.float32)
    with pytest.raises(SettingError, match="one key per sequence"):
        packing_groups(sequences, ["a"], max_tokens=8)
    with pytest.raises(SettingError, match="at least 1"):
        packing_groups(sequences, ["a", "a", "a"], max_tokens=0)
