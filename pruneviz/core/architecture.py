"""Architecture adapters: where a causal LM keeps its decoder blocks and their sublayers.

The mapping from an architecture to module names lives here and nowhere else. Every supported
architecture is a pre-norm decoder whose block computes (residual-stream names as in docs/ARCHITECTURE.md)::

    resid_mid  = resid_pre + attn_out    # attn_out = self_attn(attn_norm(resid_pre)) [ + post-norm ]
    resid_post = resid_mid + mlp_out     # mlp_out  = mlp(mlp_norm(resid_mid))        [ + post-norm ]

so a sublayer that returns zeros adds nothing to the residual stream (RMS post-norms of Gemma-2/3
map zero to zero). ``mlp_norm`` is the module whose *input* is ``resid_mid``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .errors import UnsupportedArchitectureError


@dataclass(frozen=True)
class ArchitectureAdapter:
    """Attribute paths of one architecture family.

    Attributes:
        family: a human name, e.g. ``"llama"``.
        layers: dotted path from the ``*ForCausalLM`` module to the ``ModuleList`` of blocks.
        base: dotted path to the decoder stack (returns the final-normed hidden states).
        attn: attribute of a block holding self-attention (returns ``(attn_output, attn_weights)``).
        mlp: attribute of a block holding the feed-forward sublayer (returns a tensor).
        attn_norm: attribute of the pre-norm applied to ``resid_pre`` before attention.
        mlp_norm: attribute of the pre-norm applied to ``resid_mid`` before the MLP.
        post_norms: attributes of the norms applied to the attention and the MLP outputs before they join
            the residual stream (Gemma-2/3: ``post_attention_layernorm``, ``post_feedforward_layernorm``);
            empty for pre-norm-only blocks. Counted with their sublayer's parameters.
        embed: dotted path to the token embedding.
        final_norm: dotted path to the norm applied after the last block.
        lm_head: dotted path to the output head.
    """

    family: str
    mlp_norm: str = "post_attention_layernorm"
    layers: str = "model.layers"
    base: str = "model"
    attn: str = "self_attn"
    mlp: str = "mlp"
    attn_norm: str = "input_layernorm"
    embed: str = "model.embed_tokens"
    final_norm: str = "model.norm"
    lm_head: str = "lm_head"
    post_norms: tuple[str, str] | tuple[()] = ()

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        """Return the decoder blocks of ``model``, in order."""
        return resolve(model, self.layers)

    def sublayer(self, block: nn.Module, sublayer: str) -> nn.Module:
        """Return a block's ``"attn"`` or ``"mlp"`` module."""
        return resolve(block, self.attn if sublayer == "attn" else self.mlp)


_LLAMA_LIKE = ArchitectureAdapter("llama")
_GEMMA_POST_NORMS = ("post_attention_layernorm", "post_feedforward_layernorm")
_GEMMA2_LIKE = ArchitectureAdapter("gemma2", mlp_norm="pre_feedforward_layernorm", post_norms=_GEMMA_POST_NORMS)

ADAPTERS: dict[str, ArchitectureAdapter] = {
    "llama": _LLAMA_LIKE,
    "mistral": ArchitectureAdapter("mistral"),
    "qwen2": ArchitectureAdapter("qwen2"),
    "qwen3": ArchitectureAdapter("qwen3"),
    "gemma": ArchitectureAdapter("gemma"),
    "gemma2": _GEMMA2_LIKE,
    "gemma3_text": ArchitectureAdapter("gemma3", mlp_norm="pre_feedforward_layernorm", post_norms=_GEMMA_POST_NORMS),
}
SUPPORTED = tuple(sorted(ADAPTERS))


def resolve(root: nn.Module, dotted: str) -> nn.Module:
    """Follow a dotted attribute path from ``root``.

    Raises:
        UnsupportedArchitectureError: a name on the path does not exist.
    """
    module = root
    for name in dotted.split("."):
        if not hasattr(module, name):
            raise UnsupportedArchitectureError(
                f"{type(root).__name__} has no submodule '{dotted}' (missing '{name}'); "
                f"pruneviz supports decoder-only {', '.join(SUPPORTED)} models."
            )
        module = getattr(module, name)
    return module


def adapter_for(model: nn.Module) -> ArchitectureAdapter:
    """Return the adapter for a loaded ``*ForCausalLM`` model, checking that its modules exist.

    Raises:
        UnsupportedArchitectureError: the config's ``model_type`` is not supported, or the
            expected modules are missing (names what is supported).
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    adapter = ADAPTERS.get(model_type)
    if adapter is None:
        raise UnsupportedArchitectureError(
            f"Architecture '{model_type}' ({type(model).__name__}) is not supported; "
            f"pruneviz supports decoder-only {', '.join(SUPPORTED)} models."
        )
    blocks = adapter.blocks(model)
    for path in (adapter.base, adapter.embed, adapter.final_norm, adapter.lm_head):
        resolve(model, path)
    for block in blocks:
        for name in (adapter.attn, adapter.mlp, adapter.attn_norm, adapter.mlp_norm):
            resolve(block, name)
    return adapter


@dataclass(frozen=True)
class ModelInfo:
    """Architecture summary of a loaded model (what ``pruneviz info`` prints).

    Attributes:
        family: adapter family, e.g. ``"llama"``.
        n_blocks: number of decoder blocks L.
        hidden_size: residual-stream width d.
        n_heads / n_kv_heads / head_dim: attention geometry.
        intermediate_size: MLP width.
        vocab_size: output vocabulary size.
        max_position_embeddings: longest context the model was trained for (tokens).
        params_total: all parameters (tied weights counted once).
        params_attn / params_mlp: parameters of one block's attention / MLP sublayer, each with its pre-norm
            (and its post-norm where the architecture has one, as Gemma-2/3 do).
        tied_embeddings: whether ``lm_head`` shares the embedding matrix.
    """

    family: str
    n_blocks: int
    hidden_size: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    params_total: int
    params_attn: int
    params_mlp: int
    tied_embeddings: bool

    @property
    def params_block(self) -> int:
        """Parameters of one whole block (attention + MLP with their norms)."""
        return self.params_attn + self.params_mlp

    def kv_bytes_per_token_per_attn(self, value_bytes: int) -> int:
        """KV-cache bytes one attention sublayer stores per token: K and V, ``n_kv_heads × head_dim`` values each.

        Args:
            value_bytes: bytes per cached value (the model's dtype: 4 for fp32, 2 for bf16/fp16).
        """
        return 2 * self.n_kv_heads * self.head_dim * value_bytes


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _sublayer_params(block: nn.Module, sublayer: str, pre_norm: str, post_norms: tuple[str, ...]) -> int:
    return sum(_count(resolve(block, name)) for name in (sublayer, pre_norm, *post_norms))


def model_info(model: nn.Module) -> ModelInfo:
    """Summarise ``model``'s architecture.

    Raises:
        UnsupportedArchitectureError: as :func:`adapter_for`.
    """
    adapter = adapter_for(model)
    cfg = model.config
    block = adapter.blocks(model)[0]
    n_heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    embed = resolve(model, adapter.embed)
    head = resolve(model, adapter.lm_head)
    return ModelInfo(
        family=adapter.family,
        n_blocks=len(adapter.blocks(model)),
        hidden_size=cfg.hidden_size,
        n_heads=n_heads,
        n_kv_heads=getattr(cfg, "num_key_value_heads", None) or n_heads,
        head_dim=head_dim,
        intermediate_size=cfg.intermediate_size,
        vocab_size=cfg.vocab_size,
        max_position_embeddings=getattr(cfg, "max_position_embeddings", 2048),
        params_total=_count(model),  # parameters() yields tied weights once
        params_attn=_sublayer_params(block, adapter.attn, adapter.attn_norm, adapter.post_norms[:1]),
        params_mlp=_sublayer_params(block, adapter.mlp, adapter.mlp_norm, adapter.post_norms[1:]),
        tied_embeddings=head.weight is embed.weight,
    )
