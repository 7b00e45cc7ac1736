"""Independent reference computations for the tests (never imports ``pruneviz.core.gating``).

* :func:`forward_by_hand` runs a Llama-style ``*ForCausalLM`` block by block from its submodules,
  calling each module class's own ``forward`` (so the gates ``pruneviz`` installs on the instances
  are bypassed), and leaves out the residual updates of the skipped sublayers.
* :class:`ResidualHooks` captures ``resid_pre`` / ``resid_mid`` / ``resid_post`` with ordinary
  ``register_forward_hook``s.
* :func:`static_metrics_by_hand` computes the static metrics from captured residuals in fp64.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _call(module: nn.Module, *args, **kwargs):
    """Run ``module``'s class ``forward`` (not an instance-level replacement such as a gate)."""
    return type(module).forward(module, *args, **kwargs)


def additive_causal_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[B, T]`` padding mask (1 = real) -> ``[B, 1, T, T]`` additive causal mask."""
    batch, seq = attention_mask.shape
    allowed = torch.ones(seq, seq, dtype=torch.bool).tril()[None, None] & attention_mask.bool()[:, None, None, :]
    return torch.zeros(batch, 1, seq, seq, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)


def block_by_hand(layer: nn.Module, resid_pre: torch.Tensor, mask4d, position_embeddings, skip=()) -> dict:
    """One pre-norm Llama block: returns ``resid_pre``, ``resid_mid``, ``resid_post`` ([B, T, d])."""
    if "attn" in skip:
        attn_out = torch.zeros_like(resid_pre)
    else:
        normed = _call(layer.input_layernorm, resid_pre)
        attn_out = _call(layer.self_attn, hidden_states=normed, attention_mask=mask4d,
                         position_embeddings=position_embeddings)[0]
    resid_mid = resid_pre + attn_out
    if "mlp" in skip:
        mlp_out = torch.zeros_like(resid_mid)
    else:
        mlp_out = _call(layer.mlp, _call(layer.post_attention_layernorm, resid_mid))
    return {"resid_pre": resid_pre, "resid_mid": resid_mid, "resid_post": resid_mid + mlp_out}


@torch.no_grad()
def forward_by_hand(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    skip: set[tuple[int, str]] = frozenset(), start: int = 0, resid: torch.Tensor | None = None):
    """Logits ``[B, T, vocab]`` of a Llama-style model with the sublayers in ``skip`` contributing nothing.

    With ``start`` and ``resid`` given, the computation begins at block ``start`` from ``resid``
    (its ``resid_pre``) instead of from the embeddings.
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    base = model.model
    hidden = _call(base.embed_tokens, input_ids) if resid is None else resid
    position_ids = torch.arange(input_ids.shape[1])[None]
    position_embeddings = base.rotary_emb(hidden, position_ids)
    mask4d = additive_causal_mask(attention_mask, hidden.dtype)
    for index in range(start, len(base.layers)):
        layer = base.layers[index]
        names = {name for (i, name) in skip if i == index}
        hidden = block_by_hand(layer, hidden, mask4d, position_embeddings, names)["resid_post"]
    return _call(model.lm_head, _call(base.norm, hidden)).float()


class ResidualHooks:
    """Capture every block's residual-stream positions with plain PyTorch hooks (a context manager).

    ``captured[(layer, name)]`` is a list of ``[B, T, d]`` tensors, one per forward pass.
    """

    def __init__(self, blocks: nn.ModuleList, mlp_norm: str = "post_attention_layernorm"):
        self.blocks, self.mlp_norm = blocks, mlp_norm
        self.captured: dict[tuple[int, str], list[torch.Tensor]] = {}
        self.handles = []

    def _store(self, layer, name, tensor):
        self.captured.setdefault((layer, name), []).append(tensor.detach().clone())

    def __enter__(self):
        for layer, block in enumerate(self.blocks):
            def pre(module, args, kwargs, layer=layer):
                self._store(layer, "resid_pre", kwargs["hidden_states"] if "hidden_states" in kwargs else args[0])

            def post(module, args, kwargs, output, layer=layer):
                self._store(layer, "resid_post", output[0] if isinstance(output, tuple) else output)

            def mid(module, args, layer=layer):
                self._store(layer, "resid_mid", args[0])

            self.handles.append(block.register_forward_pre_hook(pre, with_kwargs=True))
            self.handles.append(block.register_forward_hook(post, with_kwargs=True))
            self.handles.append(getattr(block, self.mlp_norm).register_forward_pre_hook(mid))
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def last(self, layer: int, name: str) -> torch.Tensor:
        return self.captured[(layer, name)][-1]


ENDPOINTS = {"block": ("resid_pre", "resid_post"), "attn": ("resid_pre", "resid_mid"), "mlp": ("resid_mid", "resid_post")}


def _per_token(metric: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-token metric for ``x``, ``y`` of shape ``[n, d]`` in fp64, written out from the formulas."""
    f = y - x
    dot = (x * y).sum(-1)
    cos = dot / (x.pow(2).sum(-1).sqrt() * y.pow(2).sum(-1).sqrt())
    if metric == "cosine":
        return 1 - cos
    if metric == "angular":
        return torch.arccos(cos.clamp(-1, 1)) / math.pi
    if metric == "l1":
        return f.abs().sum(-1)
    if metric == "l2":
        return f.pow(2).sum(-1).sqrt()
    if metric == "rel_l1":
        return f.abs().sum(-1) / x.abs().sum(-1)
    if metric == "rel_l2":
        return f.pow(2).sum(-1).sqrt() / x.pow(2).sum(-1).sqrt()
    raise KeyError(metric)


def static_metrics_by_hand(captured: dict, masks: list[torch.Tensor], n_blocks: int, metrics, kinds) -> dict:
    """``{(layer, kind, metric): mean over real tokens}`` from :class:`ResidualHooks` captures.

    ``masks[k]`` is the ``[B, T]`` padding mask of the k-th captured forward pass.
    """
    out = {}
    for layer in range(n_blocks):
        for kind in kinds:
            x_name, y_name = ENDPOINTS[kind]
            xs = torch.cat([t[m.bool()] for t, m in zip(captured[(layer, x_name)], masks)]).double()
            ys = torch.cat([t[m.bool()] for t, m in zip(captured[(layer, y_name)], masks)]).double()
            for metric in metrics:
                out[(layer, kind, metric)] = _per_token(metric, xs, ys).mean().item()
    return out
