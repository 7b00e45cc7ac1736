"""The one tensor digest: every dtype (bf16 has no numpy twin), strides, names and dtypes in the hash."""

from __future__ import annotations

import hashlib

import pytest
import torch

from pruneviz.core.digest import tensor_bytes, tensor_digest


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.bool])
def test_every_dtype_hashes_its_raw_bytes(dtype):
    tensor = (torch.arange(12).reshape(3, 4) % 3).to(dtype)
    raw = tensor_bytes(tensor)
    assert len(raw) == tensor.numel() * tensor.element_size()
    # the bytes are the tensor's own: reading them back gives the same values
    assert torch.equal(torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype).reshape(3, 4), tensor)


def test_equal_values_in_another_dtype_or_role_hash_differently():
    values = torch.tensor([1.0, 2.0, 0.5])
    digests = {
        tensor_digest([("x", values)]),
        tensor_digest([("x", values.to(torch.bfloat16))]),
        tensor_digest([("x", values.to(torch.float16))]),
        tensor_digest([("y", values)]),
        tensor_digest([("x", values.reshape(3, 1))]),
        tensor_digest([("x", values)], prefix="model-b"),
    }
    assert len(digests) == 6


def test_strides_do_not_matter_and_the_digest_is_sha256_of_name_dtype_shape_and_bytes():
    matrix = torch.randn(5, 7, dtype=torch.bfloat16)
    transposed = matrix.t()
    assert not transposed.is_contiguous()
    assert tensor_digest([("m", transposed)]) == tensor_digest([("m", transposed.contiguous())])
    expected = hashlib.sha256(b"prefix" + b"m|torch.bfloat16|(7, 5)|" + tensor_bytes(transposed.contiguous())).hexdigest()
    assert tensor_digest([("m", transposed)], prefix="prefix", length=64) == expected
    assert len(tensor_digest([("m", matrix)])) == 16
