"""Architecture adapters against mock module trees, and ModelInfo of the tiny Llama."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_llama
from torch import nn

from pruneviz.core.architecture import ADAPTERS, SUPPORTED, adapter_for, model_info
from pruneviz.core.errors import UnsupportedArchitectureError


class _Attn(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, hidden_states, **kwargs):
        return self.o_proj(hidden_states), None


def _block(d: int, norms: tuple[str, ...]) -> nn.Module:
    block = nn.Module()
    block.self_attn = _Attn(d)
    block.mlp = nn.Linear(d, d)
    for name in norms:
        setattr(block, name, nn.LayerNorm(d))
    return block


def _mock_causal_lm(model_type: str | None, norms: tuple[str, ...], n_blocks: int = 3, d: int = 8) -> nn.Module:
    """A module tree named like ``*ForCausalLM``: ``model.layers[i].{self_attn, mlp, <norms>}`` etc."""
    root = nn.Module()
    root.model = nn.Module()
    root.model.embed_tokens = nn.Embedding(16, d)
    root.model.layers = nn.ModuleList(_block(d, norms) for _ in range(n_blocks))
    root.model.norm = nn.LayerNorm(d)
    root.lm_head = nn.Linear(d, 16, bias=False)
    if model_type is not None:
        root.config = SimpleNamespace(model_type=model_type)
    return root


LLAMA_NORMS = ("input_layernorm", "post_attention_layernorm")
GEMMA2_NORMS = ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm")


@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen2", "qwen3", "gemma"])
def test_llama_like_tree_resolves(model_type):
    model = _mock_causal_lm(model_type, LLAMA_NORMS)
    adapter = adapter_for(model)
    assert adapter.family == model_type
    blocks = adapter.blocks(model)
    assert blocks is model.model.layers and len(blocks) == 3
    assert adapter.sublayer(blocks[1], "attn") is model.model.layers[1].self_attn
    assert adapter.sublayer(blocks[1], "mlp") is model.model.layers[1].mlp
    assert adapter.mlp_norm == "post_attention_layernorm"


@pytest.mark.parametrize("model_type", ["gemma2", "gemma3_text"])
def test_gemma2_like_tree_uses_pre_feedforward_norm(model_type):
    model = _mock_causal_lm(model_type, GEMMA2_NORMS)
    adapter = adapter_for(model)
    assert adapter.mlp_norm == "pre_feedforward_layernorm"
    assert adapter.attn_norm == "input_layernorm"


def test_gemma2_tree_without_pre_feedforward_norm_is_rejected():
    model = _mock_causal_lm("gemma2", LLAMA_NORMS)
    with pytest.raises(UnsupportedArchitectureError, match="pre_feedforward_layernorm"):
        adapter_for(model)


def test_missing_sublayer_names_the_path():
    model = _mock_causal_lm("llama", LLAMA_NORMS)
    del model.model.layers[2].mlp
    with pytest.raises(UnsupportedArchitectureError) as caught:
        adapter_for(model)
    assert "'mlp'" in str(caught.value)


def test_missing_layers_list_is_rejected():
    model = _mock_causal_lm("llama", LLAMA_NORMS)
    del model.model.layers
    with pytest.raises(UnsupportedArchitectureError, match="model.layers"):
        adapter_for(model)


@pytest.mark.parametrize("model_type", ["bert", "t5", None])
def test_unsupported_model_type_names_what_is_supported(model_type):
    model = _mock_causal_lm(model_type, LLAMA_NORMS)
    with pytest.raises(UnsupportedArchitectureError) as caught:
        adapter_for(model)
    message = str(caught.value)
    assert f"'{model_type}'" in message
    for name in SUPPORTED:
        assert name in message


def test_supported_lists_every_adapter():
    assert set(SUPPORTED) == set(ADAPTERS) and "llama" in SUPPORTED and "bert" not in SUPPORTED


def test_model_info_of_tiny_llama():
    model = tiny_llama()  # d=32, 4 heads (head_dim 8), 2 KV heads, MLP 64, vocab 128, 4 blocks
    info = model_info(model)
    d, kv, inter = 32, 2 * 8, 64
    block = model.model.layers[0]
    expected_attn = d * d + d * kv + d * kv + d * d + d  # q, k, v, o + input_layernorm
    expected_mlp = 3 * d * inter + d  # gate, up, down + post_attention_layernorm
    assert info.params_attn == expected_attn == 3104
    assert info.params_mlp == expected_mlp == 6176
    assert info.params_attn == sum(
        p.numel() for m in (block.self_attn.q_proj, block.self_attn.k_proj, block.self_attn.v_proj,
                            block.self_attn.o_proj, block.input_layernorm) for p in m.parameters()
    )
    assert info.params_mlp == sum(
        p.numel() for m in (block.mlp.gate_proj, block.mlp.up_proj, block.mlp.down_proj,
                            block.post_attention_layernorm) for p in m.parameters()
    )
    assert info.params_block == expected_attn + expected_mlp
    # tied embedding counted once: embeddings + blocks + final norm
    assert info.params_total == 128 * d + 4 * (expected_attn + expected_mlp) + d == 41248
    assert (info.family, info.n_blocks, info.hidden_size, info.n_heads, info.n_kv_heads, info.head_dim) == (
        "llama", 4, 32, 4, 2, 8)
    assert (info.intermediate_size, info.vocab_size, info.max_position_embeddings) == (64, 128, 256)
    assert info.tied_embeddings is True
    assert info.kv_bytes_per_token_per_attn(2) == 2 * 2 * 8 * 2


def test_model_info_untied_head():
    model = tiny_llama()
    model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())
    info = model_info(model)
    assert info.tied_embeddings is False
    assert info.params_total == 41248 + 128 * 32


def test_real_gemma2_tiny_model_is_adapted():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=64)
    torch.manual_seed(0)
    info = model_info(Gemma2ForCausalLM(config))
    assert info.family == "gemma2" and info.n_blocks == 2 and info.head_dim == 8
    # attention: q (16x16), k, v (16x8), o (16x16) + its pre-norm input_layernorm and post-norm
    # post_attention_layernorm (16 each); MLP: gate, up, down + pre_feedforward_layernorm and
    # post_feedforward_layernorm (16 each)
    assert info.params_attn == 16 * 16 + 2 * 16 * 8 + 16 * 16 + 2 * 16
    assert info.params_mlp == 3 * 16 * 32 + 2 * 16
    # every block parameter belongs to one sublayer
    block = Gemma2ForCausalLM(config).model.layers[0]
    assert info.params_block == sum(p.numel() for p in block.parameters())
