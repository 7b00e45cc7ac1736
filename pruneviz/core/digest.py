"""The one way pruneviz hashes tensors (cache keys, batch digests, weight and stand-in fingerprints).

A tensor is hashed as its dtype, its shape and its raw bytes in row-major order. The bytes are read
through a ``uint8`` view, never through numpy, because numpy has no bfloat16: the model's dtype on
every recent GPU (and on CPUs with native bf16 matrix instructions) must hash like any other.
Two tensors with equal values but different dtypes hash differently, which is what a cache key wants:
a bf16 result is not an fp32 one.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

import torch


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The raw bytes of ``tensor`` (any dtype, any device, any strides), row-major, on the CPU."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    return flat.view(torch.uint8).numpy().tobytes()


def update_digest(digest: "hashlib._Hash", tensor: torch.Tensor, name: str = "") -> None:
    """Feed ``name``, ``tensor``'s dtype and shape, then its bytes into ``digest`` (a hashlib object)."""
    digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
    digest.update(tensor_bytes(tensor))


def tensor_digest(tensors: Iterable[tuple[str, torch.Tensor]], prefix: str = "", length: int = 16) -> str:
    """The SHA-256 hex digest, cut to ``length`` characters, of ``prefix`` and the named tensors in order.

    Args:
        tensors: ``(name, tensor)`` pairs; the names are hashed too, so the same tensor under another
            role gives another digest.
        prefix: text hashed first (a model fingerprint, a type name, a plan).
        length: hex characters kept (16 = 64 bits, plenty for cache keys).
    """
    digest = hashlib.sha256(prefix.encode())
    for name, tensor in tensors:
        update_digest(digest, tensor, name)
    return digest.hexdigest()[:length]
